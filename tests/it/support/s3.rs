//! A real S3-compatible server for the tests: moto in server mode, started and stopped by this
//! harness, never a mocked SDK.
//!
//! `./scripts/test` installs moto into `.venv/` and exports `TEST_MOTO_SERVER` (the path of
//! `moto_server`). Without it, or if moto does not start, every S3 test fails with a message
//! saying so: they never skip.
//!
//! API, for the store contract suite and the HTTP tests:
//! - [`shared()`]: the server of the whole test binary, started on first use on a free
//!   127.0.0.1 port. Never stop it: tests run in parallel against it.
//! - [`MotoServer::start()`] / [`MotoServer::start_with_auth()`]: a private server, for tests
//!   that stop it ([`MotoServer::stop`], [`MotoServer::restart`]: same port, empty state) or
//!   that need moto to check credentials (every request then gets 403).
//! - [`TestBucket::shared()`] (on the shared server) / [`TestBucket::create(&server)`]: a fresh,
//!   randomly named bucket, emptied and deleted on drop. [`TestBucket::config`] is its
//!   `S3StoreConfig` (endpoint, path-style), [`TestBucket::store`] an `S3Store` for it,
//!   [`TestBucket::keys`] the keys it holds (the listing index aside: [`TestBucket::index_keys`]),
//!   [`TestBucket::objects`] their bytes,
//!   [`TestBucket::recreate`] creates it again after a restart.
//! - [`store_for`] builds an `S3Store` for any `S3StoreConfig` with the harness's credentials and
//!   [`test_settings`] (short timeouts, so an outage fails in seconds, not minutes).
//! - [`watched`] / [`stop_watched`]: run any other process (the service binary) the same way.
//!
//! In-process service tests: build the state with
//! `server::state_for(&config, Backend::S3(bucket.store()))`, not `build_state` with an S3
//! config, whose standard credential chain would look in this machine's environment, profile
//! and instance metadata.
//!
//! Every moto process is a child of a small `sh` watchdog reading the test binary's end of a
//! pipe: when the test binary exits, however it exits (even SIGKILL), the pipe closes, `read`
//! returns and the watchdog kills moto. Nothing outlives the tests.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lambda_packager::store::config::S3StoreConfig;
use lambda_packager::store::s3::{S3Settings, S3Store};

/// The variable `./scripts/test` sets to the `moto_server` executable.
pub const MOTO_ENV: &str = "TEST_MOTO_SERVER";

/// Credentials the harness signs with (moto accepts any, unless started with auth).
pub const ACCESS_KEY_ID: &str = "lambda-packager-test";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "lambda-packager-test-secret";
/// The region of every test bucket.
pub const REGION: &str = "us-east-1";

/// Longest wait for moto to answer after it was started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Retries and timeouts for tests: a stopped server is `Unavailable` after about a second.
pub fn test_settings() -> S3Settings {
    S3Settings {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(1),
        attempt_timeout: Duration::from_secs(20),
        put_attempt_timeout: Duration::from_secs(60),
    }
}

/// An `S3Store` for `config`, signed with the harness's credentials, with [`test_settings`].
pub fn store_for(config: &S3StoreConfig) -> S3Store {
    S3Store::with_static_credentials(config, ACCESS_KEY_ID, SECRET_ACCESS_KEY, test_settings())
}

/// One moto server process (behind its watchdog).
#[derive(Debug)]
pub struct MotoServer {
    addr: SocketAddr,
    auth: bool,
    watchdog: Option<Child>,
    log: PathBuf,
}

/// The server shared by the whole test binary.
pub fn shared() -> &'static MotoServer {
    static SERVER: OnceLock<MotoServer> = OnceLock::new();
    SERVER.get_or_init(MotoServer::start)
}

fn moto_binary() -> PathBuf {
    match std::env::var_os(MOTO_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "{MOTO_ENV} is not set: the S3 tests need moto, the local S3-compatible server. \
             Run the tests with ./scripts/test, which installs it into .venv/ and sets {MOTO_ENV}"
        ),
    }
}

/// A command that runs `program` (add arguments, environment and output to it) under a `sh`
/// watchdog: the program is killed when the returned child's stdin closes, that is when
/// [`stop_watched`] drops it or when the test binary exits in any way.
pub fn watched(program: &Path) -> Command {
    // fd 3 is the read end of our pipe: the program does not get it, the watcher blocks on it.
    let script = r#"
        exec 3<&0
        "$@" </dev/null 3<&- &
        child=$!
        { read -r _ <&3; kill "$child" 2>/dev/null; } &
        watcher=$!
        exec 3<&-
        wait "$child"
        status=$?
        kill "$watcher" 2>/dev/null
        exit "$status"
    "#;
    let mut command = Command::new("sh");
    command.args(["-c", script, "sh"]).arg(program).stdin(Stdio::piped());
    command
}

/// Stops a program started with [`watched`] and waits for its watchdog.
pub fn stop_watched(mut child: Child) {
    // Closing our end of the pipe is what makes the watchdog kill the program.
    drop(child.stdin.take());
    let _ = child.wait();
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port on 127.0.0.1").port()
}

impl MotoServer {
    /// Starts a private server on a free port; it is killed on drop.
    pub fn start() -> Self {
        Self::launch(free_port(), false)
    }

    /// Starts a private server that checks credentials against its (empty) IAM: every request
    /// is denied with 403.
    pub fn start_with_auth() -> Self {
        Self::launch(free_port(), true)
    }

    fn launch(port: u16, auth: bool) -> Self {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("moto-{port}.log"));
        let mut server = Self { addr: SocketAddr::from(([127, 0, 0, 1], port)), auth, watchdog: None, log };
        server.spawn();
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spawn(&mut self) {
        let binary = moto_binary();
        let log = File::create(&self.log).expect("create the moto log file");
        let mut command = watched(&binary);
        command
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log);
        if self.auth {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        } else {
            command.env_remove("INITIAL_NO_AUTH_ACTION_COUNT");
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto ({}): {e}; run ./scripts/test", binary.display()));
        self.watchdog = Some(child);
        self.wait_until_ready();
    }

    /// Polls the port until moto accepts connections; fails if it exits or takes too long.
    fn wait_until_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                drop(stream);
                return;
            }
            let child = self.watchdog.as_mut().expect("started");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "moto exited ({status}) before answering on {}; its log:\n{}\nrun ./scripts/test to (re)install it",
                    self.addr,
                    self.log_text()
                );
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                panic!(
                    "moto did not answer on {} within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    self.addr,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Kills moto and waits until the port refuses connections.
    pub fn stop(&mut self) {
        if let Some(child) = self.watchdog.take() {
            stop_watched(child);
        }
    }

    /// Starts moto again on the same port. Its state starts empty: buckets are gone.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn random_suffix() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// A fresh bucket with a random name, emptied and deleted on drop.
#[derive(Debug)]
pub struct TestBucket {
    name: String,
    endpoint: String,
}

impl TestBucket {
    /// Creates a bucket on `server`.
    pub async fn create(server: &MotoServer) -> Self {
        let bucket = Self { name: format!("lp-test-{:016x}", random_suffix()), endpoint: server.endpoint() };
        bucket.recreate().await;
        bucket
    }

    /// Creates a bucket on the [`shared`] server.
    pub async fn shared() -> Self {
        let server = tokio::task::spawn_blocking(shared).await.expect("starting moto panicked");
        Self::create(server).await
    }

    /// Creates the bucket (again, after [`MotoServer::restart`] emptied the server).
    pub async fn recreate(&self) {
        self.store()
            .client()
            .create_bucket()
            .bucket(&self.name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating bucket {}: {e:?}", self.name));
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store configuration for this bucket.
    pub fn config(&self) -> S3StoreConfig {
        S3StoreConfig {
            bucket: self.name.clone(),
            region: Some(REGION.into()),
            endpoint: Some(self.endpoint.clone()),
            force_path_style: true,
        }
    }

    /// A new `S3Store` for this bucket (each runtime needs its own: connections belong to one).
    pub fn store(&self) -> S3Store {
        store_for(&self.config())
    }

    /// Every key in the bucket but the service's listing index (`….lambda-packager/…`), sorted.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys = keys_of(&self.store(), &self.name).await.expect("listing the test bucket");
        keys.retain(|k| !is_index(k));
        keys
    }

    /// Every key of the service's listing index in the bucket, sorted.
    pub async fn index_keys(&self) -> Vec<String> {
        let mut keys = keys_of(&self.store(), &self.name).await.expect("listing the test bucket");
        keys.retain(|k| is_index(k));
        keys
    }

    /// Every object in the bucket but the listing index (key → bytes), read straight from the
    /// server.
    pub async fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        let store = self.store();
        let mut objects = BTreeMap::new();
        for key in self.keys().await {
            let object = store.client().get_object().bucket(&self.name).key(&key).send().await;
            let body = object.unwrap_or_else(|e| panic!("reading {key}: {e:?}")).body.collect().await;
            objects.insert(key, body.expect("the object's bytes").to_vec());
        }
        objects
    }
}

/// Whether a key is one of the service's listing index.
fn is_index(key: &str) -> bool {
    key.split('/').any(|c| c == ".lambda-packager")
}

async fn keys_of(store: &S3Store, bucket: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut pages = store.client().list_objects_v2().bucket(bucket).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("{e:?}"))?;
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
    }
    keys.sort();
    Ok(keys)
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down: clean up on a thread
        // with its own runtime. Failures are ignored (the server may be stopped on purpose).
        let (store, bucket) = (self.store(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let client = store.client();
                for key in keys_of(&store, &bucket).await.unwrap_or_default() {
                    let _ = client.delete_object().bucket(&bucket).key(key).send().await;
                }
                let _ = client.delete_bucket().bucket(&bucket).send().await;
            });
        })
        .join();
    }
}
