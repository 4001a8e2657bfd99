//! HTTP servers on 127.0.0.1 for git tests, started and stopped by the test.
//!
//! [`GitHttpServer`] is git's smart HTTP protocol: a tiny CGI bridge that runs
//! `git http-backend` for each request. [`HangServer`] accepts connections and never answers,
//! to test fetch timeouts. Both bind `127.0.0.1:0` before their thread starts (no sleeps) and
//! stop when dropped.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A listener thread that `Drop` stops: set the flag, wake `accept` with a connection, join.
struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn spawn(handle: impl Fn(TcpStream) + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    handle(stream);
                }
            }
        });
        Self { addr, stop, thread: Some(thread) }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// git's smart HTTP protocol over `git http-backend`, one request per connection, one thread.
pub(crate) struct GitHttpServer {
    listener: Listener,
    requests: Arc<AtomicUsize>,
}

impl GitHttpServer {
    /// Serves every repository below `project_root` (`GIT_PROJECT_ROOT`, all exported).
    pub(crate) fn start(project_root: &Path) -> Self {
        let root = project_root.to_owned();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let listener = Listener::spawn(move |stream| {
            counter.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = serve_cgi(stream, &root) {
                eprintln!("git http test server: {e}");
            }
        });
        Self { listener, requests }
    }

    /// Requests served so far.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:PORT`, the allowlist prefix for this server.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.listener.addr)
    }

    /// The URL of repository `name` under the project root.
    pub(crate) fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url())
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn serve_cgi(stream: TcpStream, root: &Path) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let request = read_request(&mut reader)?;
    let header = |name: &str| request.headers.get(name).cloned().unwrap_or_default();
    let mut child = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", &request.path)
        .env("QUERY_STRING", &request.query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        // Protocol v2 is negotiated through this header.
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let body = request.body;
    let writer = thread::spawn(move || stdin.write_all(&body));
    let mut output = Vec::new();
    child.stdout.take().expect("piped stdout").read_to_end(&mut output)?;
    child.wait()?;
    let _ = writer.join();
    write_cgi_response(stream, &output)
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Request> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the request head"));
        }
        head.push(line.trim_end().to_owned());
        if head.last().is_some_and(String::is_empty) {
            break;
        }
        if head.iter().map(String::len).sum::<usize>() > MAX_HEAD {
            return Err(bad("request head too large"));
        }
    }
    let mut parts = head[0].split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: HashMap<String, String> = head[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        body
    } else if headers.get("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        read_chunked(reader)?
    } else {
        Vec::new()
    };
    Ok(Request { method, path: path.to_owned(), query: query.to_owned(), headers, body })
}

/// Decodes a chunked body (git sends one when a request exceeds `http.postBuffer`).
fn read_chunked(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// Turns CGI output (headers, blank line, body) into an HTTP/1.1 response; `Status:` becomes
/// the status line.
fn write_cgi_response(mut stream: TcpStream, output: &[u8]) -> io::Result<()> {
    let (head, body) = match find(output, b"\r\n\r\n") {
        Some(i) => (&output[..i], &output[i + 4..]),
        None => match find(output, b"\n\n") {
            Some(i) => (&output[..i], &output[i + 2..]),
            None => (&output[..0], output),
        },
    };
    let head = String::from_utf8_lossy(head);
    let mut status = "200 OK".to_owned();
    let mut response = Vec::new();
    let mut headers = String::new();
    for line in head.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => status = value.trim().to_owned(),
            Some((name, _)) if name.eq_ignore_ascii_case("content-length") => {}
            _ => {
                headers.push_str(line);
                headers.push_str("\r\n");
            }
        }
    }
    write!(
        response,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    response.extend_from_slice(body);
    stream.write_all(&response)?;
    stream.flush()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Accepts connections and never answers: a remote that hangs.
pub(crate) struct HangServer {
    listener: Listener,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
}

impl HangServer {
    pub(crate) fn start() -> Self {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::clone(&accepted);
        let listener = Listener::spawn(move |stream| held.lock().expect("not poisoned").push(stream));
        Self { listener, accepted }
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.listener.addr)
    }

    pub(crate) fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url())
    }

    /// How many connections were accepted (the wake-up connection of `Drop` is not one yet).
    pub(crate) fn connections(&self) -> usize {
        self.accepted.lock().expect("not poisoned").len()
    }

    /// Whether every accepted connection was closed by the client within `within`: the
    /// client process was killed (or gave up) rather than left waiting.
    pub(crate) fn clients_hung_up(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let streams: Vec<TcpStream> =
            self.accepted.lock().expect("not poisoned").iter().filter_map(|s| s.try_clone().ok()).collect();
        streams.into_iter().all(|mut stream| {
            let mut buf = [0u8; 4096];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                    return false;
                }
                match stream.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                    Err(_) => return false,
                }
            }
        })
    }
}

/// Answers every request with a redirect to the same path under `target` (another server).
pub(crate) struct RedirectServer {
    listener: Listener,
}

impl RedirectServer {
    pub(crate) fn start(target: String) -> Self {
        let listener = Listener::spawn(move |stream| {
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => return,
            });
            let Ok(request) = read_request(&mut reader) else { return };
            let query = if request.query.is_empty() { String::new() } else { format!("?{}", request.query) };
            let location = format!("{target}{}{query}", request.path);
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        });
        Self { listener }
    }

    pub(crate) fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.listener.addr)
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.listener.addr)
    }
}
