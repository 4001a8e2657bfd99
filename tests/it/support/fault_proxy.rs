//! A fault-injecting HTTP proxy in front of the moto server: the S3 store talks to the proxy,
//! the proxy to moto, and a test scripts what goes wrong in between.
//!
//! One request per connection. The proxy reads the request head and its `Content-Length` body,
//! counts the request by [`Kind`], looks for a scripted [`Fault`] for it, and otherwise forwards
//! it to moto with `Connection: close` and pipes the answer back (also with `Connection: close`,
//! so the SDK never reuses a connection and every request is a new connect: refusing
//! connections then fails every request, not only new ones). The SDK sends `PutObject` with our
//! precomputed `x-amz-checksum-sha256` as a plain `Content-Length` body (a checksum set by the
//! caller turns its aws-chunked encoding off); a request with a `Transfer-Encoding` gets a 501
//! from the proxy, so a change of framing fails loudly instead of hanging.
//!
//! What it can simulate: a store that refuses connections ([`FaultProxy::refuse_connections`],
//! the listener is closed), any status with an S3 XML error body that never reaches moto
//! ([`Fault::Status`]), a response delayed after moto acted on the request ([`Fault::Delay`]),
//! and a request moto committed whose answer never comes ([`Fault::Hang`]). Faults match the
//! request kind and its number among requests of that kind (1-based), so "the first PUT" or
//! "PUTs 1 to 4" are scriptable. What it cannot: TLS, partial or corrupted bodies, resets in
//! the middle of a transfer, slow bodies (only whole-response delays), DNS failures, or a fault
//! chosen by key or header.
//!
//! Started on a bound 127.0.0.1 listener (no readiness wait); [`FaultProxy::stop`] (or drop)
//! ends the listener and every connection it holds.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The largest request or response head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

/// What a request does, by method and path (path-style addressing: `/bucket` or `/bucket/key`).
/// Requests on the service's listing index (keys and listing prefixes under
/// `.lambda-packager/`) have kinds of their own, so that a fault scripted for "the first PUT"
/// hits the package's PUT, and counts of package requests stay what they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `HEAD` of an object or of the bucket.
    Head,
    /// `GET` of an object.
    Get,
    /// `PUT` of an object.
    Put,
    /// `GET` of the bucket: a listing.
    List,
    /// `HEAD` of an index entry.
    IndexHead,
    /// `GET` of an index entry.
    IndexGet,
    /// `PUT` of an index entry.
    IndexPut,
    /// A listing of index entries.
    IndexList,
    /// Anything else.
    Other,
}

/// A scripted failure for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with an S3 XML error body carrying `code`; moto never sees the request.
    Status {
        /// HTTP status.
        status: u16,
        /// S3 error code (`SlowDown`, `InternalError`, ...).
        code: &'static str,
    },
    /// Forward the request (moto acts on it), then hold its answer this long before passing it on.
    Delay(Duration),
    /// Forward the request (moto acts on it: a PUT is committed), then never answer; the
    /// connection is held until the client gives up and closes it.
    Hang,
}

impl Fault {
    /// 503 `SlowDown`: S3's throttling answer.
    pub const SLOW_DOWN: Self = Self::Status { status: 503, code: "SlowDown" };
    /// 500 `InternalError`.
    pub const INTERNAL_ERROR: Self = Self::Status { status: 500, code: "InternalError" };
    /// 409 `ConditionalRequestConflict`: a concurrent conditional write to the key is in flight.
    pub const CONDITIONAL_CONFLICT: Self = Self::Status { status: 409, code: "ConditionalRequestConflict" };
    /// 403 `AccessDenied`.
    pub const ACCESS_DENIED: Self = Self::Status { status: 403, code: "AccessDenied" };
}

/// Which requests of a kind a fault applies to: numbers `first..=last` (1-based).
#[derive(Debug, Clone, Copy)]
struct Rule {
    kind: Kind,
    first: u32,
    last: u32,
    fault: Fault,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    seen: Mutex<HashMap<Kind, u32>>,
    rules: Mutex<Vec<Rule>>,
    /// Connection tasks, so that stopping the proxy ends them too.
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// Counts a request of `kind` and returns the fault scripted for it, if any (the first
    /// matching rule wins).
    fn arrive(&self, kind: Kind) -> Option<Fault> {
        let n = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let n = seen.entry(kind).or_insert(0);
            *n += 1;
            *n
        };
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules.iter().find(|r| r.kind == kind && (r.first..=r.last).contains(&n)).map(|r| r.fault)
    }
}

/// The proxy: a listener on 127.0.0.1 forwarding to moto, with scripted faults.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Ends everything: the listener and every connection.
    stop: CancellationToken,
    /// The accept loop and its own token, while the proxy accepts connections.
    listening: Option<(CancellationToken, JoinHandle<()>)>,
}

impl FaultProxy {
    /// A proxy to `upstream` (moto's address), accepting connections on a new 127.0.0.1 port.
    /// Call it inside a Tokio runtime.
    pub fn start(upstream: SocketAddr) -> Self {
        let shared = Arc::new(Shared {
            upstream,
            seen: Mutex::default(),
            rules: Mutex::default(),
            connections: Mutex::default(),
        });
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind the fault proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let mut proxy = Self { addr, shared, stop: CancellationToken::new(), listening: None };
        proxy.accept_on(listener);
        proxy
    }

    /// A proxy to the server behind `endpoint` (`http://127.0.0.1:PORT`, as in a test bucket's
    /// configuration).
    pub fn to_endpoint(endpoint: &str) -> Self {
        let upstream = endpoint.strip_prefix("http://").and_then(|a| a.parse().ok());
        Self::start(upstream.unwrap_or_else(|| panic!("not an http://IP:PORT endpoint: {endpoint}")))
    }

    /// `http://127.0.0.1:PORT`, for the store's configuration.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to requests of `kind` whose number among requests of that kind (counted
    /// since the start, 1-based) is in `numbers`: `1..=1` is the first, `..` every one.
    pub fn inject(&self, kind: Kind, numbers: impl RangeBounds<u32>, fault: Fault) {
        let first = match numbers.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n + 1,
            Bound::Unbounded => 1,
        };
        let last = match numbers.end_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.saturating_sub(1),
            Bound::Unbounded => u32::MAX,
        };
        self.shared.rules.lock().unwrap_or_else(|p| p.into_inner()).push(Rule { kind, first, last, fault });
    }

    /// Removes every scripted fault: from now on, every request is forwarded untouched.
    pub fn clear_faults(&self) {
        self.shared.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// How many requests of `kind` reached the proxy (faulted ones included).
    pub fn seen(&self, kind: Kind) -> u32 {
        self.shared.seen.lock().unwrap_or_else(|p| p.into_inner()).get(&kind).copied().unwrap_or(0)
    }

    /// Every count, for assertion messages.
    pub fn counts(&self) -> HashMap<Kind, u32> {
        self.shared.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Closes the listener: from when this returns, connecting fails with "connection refused".
    /// Connections already accepted carry on.
    pub async fn refuse_connections(&mut self) {
        if let Some((token, task)) = self.listening.take() {
            token.cancel();
            // The listener is dropped when the task ends.
            let _ = task.await;
        }
    }

    /// Listens again on the same port (after [`FaultProxy::refuse_connections`]).
    pub fn accept_connections(&mut self) {
        if self.listening.is_none() {
            let listener = listen(self.addr).expect("listen again on the proxy's port");
            self.accept_on(listener);
        }
    }

    fn accept_on(&mut self, listener: TcpListener) {
        let token = self.stop.child_token();
        let (shared, cancelled, stop) = (Arc::clone(&self.shared), token.clone(), self.stop.clone());
        let task = tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    () = cancelled.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                // Connections end with the proxy, not with the listener.
                let (conn_shared, stop) = (Arc::clone(&shared), stop.clone());
                let connection = tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = handle(&conn_shared, client) => {}
                    }
                });
                let mut connections = shared.connections.lock().unwrap_or_else(|p| p.into_inner());
                connections.retain(|c| !c.is_finished());
                connections.push(connection);
            }
        });
        self.listening = Some((token, task));
    }

    /// Stops listening and ends every connection, waiting until all are gone.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some((_, task)) = self.listening.take() {
            let _ = task.await;
        }
        let connections =
            std::mem::take(&mut *self.shared.connections.lock().unwrap_or_else(|p| p.into_inner()));
        for connection in connections {
            let _ = connection.await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some((_, task)) = self.listening.take() {
            task.abort();
        }
        for connection in self.shared.connections.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            connection.abort();
        }
    }
}

/// A listener on `addr` with `SO_REUSEADDR`, so the same port can be bound again while
/// connections the proxy closed are in TIME_WAIT.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// A parsed request or response head: the first line and the header lines, as sent.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(raw: &[u8]) -> io::Result<Self> {
        let text = std::str::from_utf8(raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Ok(Self { first, headers })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The head as bytes, with `Connection: close` instead of any connection management.
    fn closing(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first);
        for (k, v) in &self.headers {
            if !k.eq_ignore_ascii_case("connection") && !k.eq_ignore_ascii_case("keep-alive") {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }

    fn kind(&self) -> Kind {
        let mut parts = self.first.split(' ');
        let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let path = target.split('?').next().unwrap_or_default();
        let has_key = path.trim_start_matches('/').split_once('/').is_some_and(|(_, key)| !key.is_empty());
        let index = target.contains(".lambda-packager");
        match (method, index) {
            ("HEAD", false) => Kind::Head,
            ("HEAD", true) => Kind::IndexHead,
            ("GET", false) if has_key => Kind::Get,
            ("GET", true) if has_key => Kind::IndexGet,
            ("GET", false) => Kind::List,
            ("GET", true) => Kind::IndexList,
            ("PUT", false) => Kind::Put,
            ("PUT", true) => Kind::IndexPut,
            _ => Kind::Other,
        }
    }
}

/// Reads up to the end of a head (`\r\n\r\n`): the head and whatever came after it. `None` if
/// the peer closed before sending anything.
async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<(Head, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = Head::parse(&buf[..end])?;
            return Ok(Some((head, buf.split_off(end + 4))));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A response the proxy makes up: `status` with an S3 XML error body (none for a HEAD, as S3).
fn error_response(status: u16, code: &str, head: bool) -> Vec<u8> {
    let reason = match status {
        403 => "Forbidden",
        409 => "Conflict",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the fault proxy</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    let body = if head { "" } else { body.as_str() };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: fault-proxy\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One connection: one request, faulted or forwarded.
async fn handle(shared: &Shared, mut client: TcpStream) -> io::Result<()> {
    let Some((request, mut body)) = read_head(&mut client).await? else {
        return Ok(());
    };
    let kind = request.kind();
    let fault = shared.arrive(kind);
    if request.header("transfer-encoding").is_some() {
        client.write_all(&error_response(501, "TransferEncodingNotSupportedByFaultProxy", false)).await?;
        return client.shutdown().await;
    }
    let length: u64 = match request.header("content-length") {
        Some(v) => v.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
        None => 0,
    };
    body.truncate(usize::try_from(length).unwrap_or(usize::MAX));
    let remaining = length - body.len() as u64;

    if let Some(Fault::Status { status, code }) = fault {
        // Read the whole body first: answering early would make the client see a reset.
        tokio::io::copy(&mut (&mut client).take(remaining), &mut tokio::io::sink()).await?;
        client.write_all(&error_response(status, code, kind == Kind::Head)).await?;
        return client.shutdown().await;
    }

    let mut upstream = TcpStream::connect(shared.upstream).await?;
    upstream.write_all(&request.closing()).await?;
    upstream.write_all(&body).await?;
    let copied = tokio::io::copy(&mut (&mut client).take(remaining), &mut upstream).await?;
    if copied < remaining {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    // Skip interim (1xx) responses; the final one is what moto did.
    let (response, rest) = loop {
        let (response, rest) = read_head(&mut upstream).await?.ok_or(io::ErrorKind::UnexpectedEof)?;
        if !response.first.split(' ').nth(1).is_some_and(|s| s.starts_with('1')) {
            break (response, rest);
        }
    };
    match fault {
        Some(Fault::Hang) => {
            // Moto has answered, so it has acted (a PUT is committed). The client never hears
            // of it: hold its connection until it gives up.
            tokio::io::copy(&mut upstream, &mut tokio::io::sink()).await?;
            let mut scratch = [0; 1024];
            while client.read(&mut scratch).await? > 0 {}
            return Ok(());
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Status { .. }) | None => {}
    }
    client.write_all(&response.closing()).await?;
    client.write_all(&rest).await?;
    tokio::io::copy(&mut upstream, &mut client).await?;
    client.shutdown().await
}
