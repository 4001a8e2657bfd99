//! `TestApp`: the service's real state and router, on a temp local store, called in process
//! (`oneshot`) or served on a bound 127.0.0.1 listener when the transport matters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use lambda_packager::config::Config;
use lambda_packager::http::{self, AppState};
use lambda_packager::server;
use lambda_packager::store::Backend;
use lambda_packager::store::config::S3StoreConfig;
use lambda_packager::store::s3::S3Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A response, fully read.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the status and the error envelope's code; returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        let json = self.json();
        assert_eq!((self.status.as_u16(), json["error"]["code"].as_str()), (status, Some(code)), "{json}");
        json["error"]["message"].as_str().expect("a message").to_owned()
    }
}

/// The service on a temp local store.
pub struct TestApp {
    pub state: AppState,
    pub config: Config,
    _dirs: tempfile::TempDir,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// An app whose configuration `edit` adjusts (the store and temp dirs are set first).
    pub async fn with(edit: impl FnOnce(&mut Config)) -> Self {
        let dirs = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.store.local.path = dirs.path().join("artifacts");
        config.pack.temp_dir = Some(dirs.path().join("tmp"));
        // The compressed-entry cache is on by default; here it is next to the temp dir, which
        // the tests check is empty after every request.
        config.pack.cache_dir = Some(dirs.path().join("cache"));
        config.pack.workers = 4.try_into().expect("nonzero");
        edit(&mut config);
        let state = server::build_state(&config).await.expect("the app starts");
        Self { state, config, _dirs: dirs }
    }

    /// An app whose store is `bucket` on the S3 test server (with the harness's credentials).
    pub async fn on_s3(bucket: &super::s3::TestBucket, edit: impl FnOnce(&mut Config)) -> Self {
        Self::on_s3_store(bucket.config(), bucket.store(), edit)
    }

    /// An app on `store`, an S3 store the test built for `s3` (e.g. through a fault proxy, with
    /// its own retries and timeouts).
    pub fn on_s3_store(s3: S3StoreConfig, store: S3Store, edit: impl FnOnce(&mut Config)) -> Self {
        let dirs = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.store.backend = lambda_packager::store::config::StoreKind::S3;
        config.store.s3 = s3;
        config.pack.temp_dir = Some(dirs.path().join("tmp"));
        config.pack.cache_dir = Some(dirs.path().join("cache"));
        config.pack.workers = 4.try_into().expect("nonzero");
        edit(&mut config);
        let state = server::state_for(&config, Backend::S3(store)).expect("the app starts");
        Self { state, config, _dirs: dirs }
    }

    pub fn router(&self) -> Router {
        http::router(self.state.clone())
    }

    pub async fn call(&self, request: Request<Body>) -> TestResponse {
        let response = self.router().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        TestResponse { status: parts.status, headers: parts.headers, body }
    }

    pub async fn get(&self, uri: &str) -> TestResponse {
        self.call(Request::get(uri).body(Body::empty()).expect("request")).await
    }

    /// POSTs a raw body.
    pub async fn post(&self, uri: &str, body: impl Into<Body>) -> TestResponse {
        self.call(Request::post(uri).body(body.into()).expect("request")).await
    }

    /// POSTs `bundle` as a multipart upload with text `fields`.
    pub async fn post_multipart(&self, uri: &str, fields: &[(&str, &str)], bundle: &[u8]) -> TestResponse {
        let (content_type, body) = multipart(fields, bundle);
        let request =
            Request::post(uri).header("content-type", content_type).body(Body::from(body)).expect("request");
        self.call(request).await
    }

    pub fn store_root(&self) -> PathBuf {
        self.config.store.local.path.clone()
    }

    /// Every stored package (key → bytes): the store's own dot files and folders (`.staging/`,
    /// the `.lambda-packager/` index, metadata sidecars) excluded.
    pub fn stored(&self) -> BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).expect("read store") {
                let path = entry.expect("entry").path();
                if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
                    continue;
                }
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let key = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
                    out.insert(key, std::fs::read(&path).expect("read object"));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.store_root(), &self.store_root(), &mut out);
        out
    }

    /// No temp file in the staging directory or the temp directory.
    #[track_caller]
    pub fn assert_no_temp_files(&self) {
        for dir in [self.store_root().join(".staging"), self.config.pack.temp_dir.clone().expect("set")] {
            let left: Vec<_> = std::fs::read_dir(&dir)
                .map(|d| d.map(|e| e.expect("entry").file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "temp files left in {}: {left:?}", dir.display());
        }
    }

    /// Serves the app on 127.0.0.1 (API and admin listeners bound before the server starts).
    pub async fn spawn(&self) -> Running {
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (addr, admin_addr) = (api.local_addr().expect("addr"), admin.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let (config, state, token) = (self.config.clone(), self.state.clone(), shutdown.clone());
        let handle = tokio::spawn(async move { server::serve(&config, state, api, admin, token).await });
        Running { addr, admin_addr, shutdown, handle }
    }
}

/// A served app.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Triggers the graceful shutdown and waits for the server to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await.expect("server task")
    }

    pub fn trigger_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub async fn join(self) -> anyhow::Result<()> {
        self.handle.await.expect("server task")
    }
}

/// A multipart/form-data body: text fields, then the file part `bundle`.
pub fn multipart(fields: &[(&str, &str)], bundle: &[u8]) -> (String, Vec<u8>) {
    let boundary = "XyZ-lambda-packager-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\ncontent-disposition: form-data; name=\"bundle\"; filename=\"fn.tar.gz\"\r\ncontent-type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(bundle);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`); returns status, headers
/// (lowercase names) and body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    read_response(&mut stream).await
}

/// Reads a whole `Connection: close` response.
pub async fn read_response(stream: &mut TcpStream) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status =
        lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}
