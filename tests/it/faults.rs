//! Faults the service must survive without breaking its promises: one object per key, nothing
//! partial under a final name, no temp file surviving a restart.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use lambda_packager::package::Sha256Hex;
use lambda_packager::store::key::ObjectKey;

use crate::support::app::http_request;
use crate::support::noise;

/// A `lambda-packager serve` process on a local store; killed when dropped. Shared with the
/// other suites that measure the real process (`hostile`).
pub(crate) struct Service {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Service {
    pub(crate) fn start(store: &Path) -> Self {
        Self::start_with(store, &[])
    }

    pub(crate) fn start_with(store: &Path, env: &[(&str, &dyn AsRef<OsStr>)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lambda-packager"));
        cmd.arg("serve");
        Self::spawn(cmd, store, env)
    }

    /// Runs `cmd`, which must end up exec'ing `lambda-packager serve` (e.g. through `unshare`),
    /// with the test's listeners, store and log settings, and waits until it listens.
    pub(crate) fn spawn(mut cmd: Command, store: &Path, env: &[(&str, &dyn AsRef<OsStr>)]) -> Self {
        let mut child = cmd
            .envs(env.iter().map(|(k, v)| (*k, v.as_ref())))
            .env("LAMBDA_PACKAGER_SERVER__LISTEN", "127.0.0.1:0")
            .env("LAMBDA_PACKAGER_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
            .env("LAMBDA_PACKAGER_STORE__LOCAL__PATH", store)
            .env("LAMBDA_PACKAGER_LOG__FORMAT", "json")
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("serve exited before listening").expect("log line");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "listening" {
                break v["api"].as_str().expect("api address").parse().expect("socket address");
            }
        };
        // Keep draining the log so the service never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, addr }
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Every stored object hashes to its name, and nothing but packages is stored.
#[track_caller]
fn assert_store_consistent(root: &Path) {
    for path in files_under(root) {
        let rel = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
        if rel.starts_with(".staging/") {
            continue;
        }
        let key: ObjectKey = rel.parse().unwrap_or_else(|_| panic!("{rel} is not a package key"));
        let bytes = std::fs::read(&path).expect("read object");
        assert_eq!(Sha256Hex::of_bytes(&bytes), key.sha256(), "{rel} does not hash to its name");
    }
}

/// A deterministic xorshift, seeded from the clock and printed, so a failure can be replayed.
fn rng() -> impl FnMut() -> u64 {
    let seed =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    eprintln!("faults seed: {seed}");
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn kill_9_during_uploads_never_leaves_a_partial_package_or_a_surviving_temp_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("artifacts");
    let mut next = rng();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut interrupted = 0;
    for round in 0..12u64 {
        let service = Service::start(&store);
        assert!(
            std::fs::read_dir(store.join(".staging")).expect("staging").next().is_none(),
            "round {round}: the startup sweep left a temp file"
        );
        assert_store_consistent(&store);
        // Different packages each round, big enough that a kill often lands mid-pack or mid-publish.
        let bundle = crate::support::archive::gzip(&crate::support::archive::tar(&[
            crate::support::archive::Member::file("big.bin", noise(3 << 20, round + 1)),
            crate::support::archive::Member::file("round.txt", round.to_string()),
        ]));
        let addr = service.addr;
        let uploads = runtime.spawn(async move {
            for _ in 0..4 {
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    http_request(addr, "POST", "/v1/functions/fn/package", &[], &bundle),
                )
                .await;
            }
        });
        std::thread::sleep(Duration::from_millis(next() % 250));
        service.kill_9();
        let _ = runtime.block_on(uploads);
        let left = std::fs::read_dir(store.join(".staging")).expect("staging").count();
        interrupted += usize::from(left > 0);
    }
    eprintln!("{interrupted} of 12 kills left a temp file for the sweep");
    // After the last crash: a restart sweeps, the store is consistent, and re-posting works.
    let service = Service::start(&store);
    assert!(std::fs::read_dir(store.join(".staging")).expect("staging").next().is_none());
    assert_store_consistent(&store);
    let bundle = crate::support::archive::tar(&[crate::support::archive::Member::file("a.py", "x")]);
    let (status, _, body) =
        runtime.block_on(http_request(service.addr, "POST", "/v1/functions/fn/package", &[], &bundle));
    assert!(status == 201 || status == 200, "{status}: {}", String::from_utf8_lossy(&body));
    assert_store_consistent(&store);
}

/// Peak resident memory of a process, from /proc, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn every_bad_input_over_http_stays_within_a_memory_budget_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, temp) = (dir.path().join("artifacts"), dir.path().join("tmp"));
    let service = Service::start_with(&store, &[("LAMBDA_PACKAGER_PACK__TEMP_DIR", &temp)]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let uri = "/v1/functions/fn/package";
    for (name, bytes, code) in crate::bad_input::bad_archives() {
        let (ct, multipart) = crate::support::app::multipart(&[], &bytes);
        for (how, headers, body) in
            [("raw", vec![], bytes.clone()), ("multipart", vec![("content-type", ct.as_str())], multipart)]
        {
            // A hang guard, not a speed goal: every refusal comes back, and soon.
            let answer = runtime.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    http_request(service.addr, "POST", uri, &headers, &body),
                )
                .await
            });
            let (status, _, body) = answer.unwrap_or_else(|_| panic!("{how} {name}: no answer within 30 s"));
            let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
            assert!((400..500).contains(&status), "{how} {name}: {status}");
            assert_eq!(v["error"]["code"], code, "{how} {name}");
        }
    }
    // The bombs decompress to 40 MB and the uploads are spooled to disk, never held in memory.
    let peak = peak_rss_kib(service.child.id());
    eprintln!("peak RSS of the service after every bad input: {peak} KiB");
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB over the 256 MiB budget");
    let stored: Vec<_> =
        files_under(&store).into_iter().filter(|p| !p.starts_with(store.join(".staging"))).collect();
    assert!(stored.is_empty(), "objects stored for bad input: {stored:?}");
    assert!(files_under(&store.join(".staging")).is_empty(), "staging files left");
    assert!(files_under(&temp).is_empty(), "temp files left");
}

#[test]
fn sigterm_with_an_upload_in_flight_drains_it_and_exits_0() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut service = Service::start(&dir.path().join("artifacts"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let bundle = crate::golden::mixed().tar_gz();
    let addr = service.addr;
    let mut stream = runtime.block_on(async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /v1/functions/fn/package HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            bundle.len()
        );
        s.write_all(head.as_bytes()).await.expect("head");
        s.write_all(&bundle[..1000]).await.expect("part of the body");
        s
    });
    // Once the request is being served, ask the process to stop.
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill").arg("-TERM").arg(service.child.id().to_string()).status().expect("kill");
    std::thread::sleep(Duration::from_millis(200));
    let (status, _, body) = runtime.block_on(async {
        stream.write_all(&bundle[1000..]).await.expect("rest of the body");
        crate::support::app::read_response(&mut stream).await
    });
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let exit = service.child.wait().expect("exit status");
    assert!(exit.success(), "{exit:?}");
    assert!(std::net::TcpStream::connect(addr).is_err(), "no longer listening");
}
