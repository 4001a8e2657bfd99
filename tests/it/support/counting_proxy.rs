//! A TCP proxy in front of a test server that counts what the server received: bytes and
//! requests from the client, so a test can tell "no archive was sent" from "it was".
//!
//! Bytes are piped unchanged in both directions. Requests are counted by the request lines seen
//! at the start of each connection's reads (enough for the client under test, which sends one
//! request head per write). With [`CountingProxy::without_lookup`], it plays a server from before
//! `POST …/package/lookup`: a connection whose first request is a lookup is answered
//! `404 not_found` and closed, as the old router's fallback answers, and never reaches the server.
//!
//! Started on a bound 127.0.0.1 listener (no readiness wait); dropping it ends the listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
struct Counts {
    bytes: AtomicU64,
    lookups: AtomicU64,
    posts: AtomicU64,
    old_server: AtomicBool,
}

/// The proxy; [`addr`](Self::addr) is where clients connect.
pub struct CountingProxy {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    accept: JoinHandle<()>,
}

/// What the server received since the last [`CountingProxy::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes from clients (request heads and bodies).
    pub bytes: u64,
    /// `POST …/package/lookup` requests.
    pub lookups: u64,
    /// `POST …/package` requests (uploads).
    pub posts: u64,
}

impl CountingProxy {
    /// A proxy to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counts = Arc::new(Counts::default());
        let shared = Arc::clone(&counts);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pipe(client, upstream, Arc::clone(&shared)));
            }
        });
        Self { addr, counts, accept }
    }

    /// From now on, answer lookups as a server without the route would.
    pub fn without_lookup(&self) {
        self.counts.old_server.store(true, Ordering::SeqCst);
    }

    /// The counts so far, reset to zero.
    pub fn take(&self) -> Received {
        Received {
            bytes: self.counts.bytes.swap(0, Ordering::SeqCst),
            lookups: self.counts.lookups.swap(0, Ordering::SeqCst),
            posts: self.counts.posts.swap(0, Ordering::SeqCst),
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Counts a request whose head starts `chunk`, if it does.
fn count_request(counts: &Counts, chunk: &[u8]) -> bool {
    let line = chunk.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let Some(path) = line.strip_prefix("POST ") else { return false };
    let path = path.split([' ', '?']).next().unwrap_or_default();
    if path.ends_with("/package/lookup") {
        counts.lookups.fetch_add(1, Ordering::SeqCst);
        return true;
    }
    if path.ends_with("/package") {
        counts.posts.fetch_add(1, Ordering::SeqCst);
    }
    false
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr, counts: Arc<Counts>) {
    let mut first = vec![0u8; 64 * 1024];
    let Ok(n) = client.read(&mut first).await else { return };
    first.truncate(n);
    let is_lookup = count_request(&counts, &first);
    if is_lookup && counts.old_server.load(Ordering::SeqCst) {
        let body = r#"{"error":{"code":"not_found","message":"no such route"}}"#;
        let answer = format!(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.write_all(answer.as_bytes()).await;
        let _ = client.shutdown().await;
        return;
    }
    counts.bytes.fetch_add(n as u64, Ordering::SeqCst);
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    if server.write_all(&first).await.is_err() {
        return;
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    counts.bytes.fetch_add(n as u64, Ordering::SeqCst);
                    count_request(&counts, &buf[..n]);
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}
