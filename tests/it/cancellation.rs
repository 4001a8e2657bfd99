//! Issue #10, point 2: cancellation reaches every stage. A request that times out, a client
//! that goes away and a shutdown whose grace period ends all stop the request's blocking work
//! at its next check (here: a git fetch stalled against a remote that never answers), which
//! frees its worker and kills its `git`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use lambda_packager::package::{CancelFlag, Limits};
use lambda_packager::packages::{self, Input};
use lambda_packager::source::Selection;
use lambda_packager::source::git::{GitConfig, GitRequest, GitSource};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::faults::{Service, files_under};
use crate::support::app::{TestApp, TestResponse};
use crate::support::archive::{Member, ZipMember, gzip, tar, zip};
use crate::support::git_http::HangServer;

const URI: &str = "/v1/functions/fn/package";

/// Polls `done` every 10 ms until it holds or `within` passes; true if it held.
pub async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An app with one worker, whose git remote (a [`HangServer`]) never answers and whose fetch
/// timeout (120 s) is far beyond the test: only cancellation can end the fetch in time.
async fn app_with_a_hanging_remote(
    hang: &HangServer,
    mirrors: &std::path::Path,
    request_timeout: u64,
) -> TestApp {
    let (prefix, mirrors) = (format!("{}/", hang.base_url()), mirrors.to_owned());
    TestApp::with(move |c| {
        c.pack.workers = 1.try_into().expect("nonzero");
        c.pack.queue_timeout_secs = 1;
        c.server.request_timeout_secs = request_timeout;
        c.git.allowed_remotes = vec![prefix];
        c.git.allow_insecure_http = true;
        c.git.mirror_dir = mirrors;
        c.git.fetch_timeout = Duration::from_secs(120);
    })
    .await
}

fn git_body(hang: &HangServer) -> String {
    json!({"git": {"repo": hang.url("stalls.git"), "ref": "main"}}).to_string()
}

/// After cancellation: the worker is free (a next upload is served by the single worker, with a
/// 1 s queue timeout, not refused `503 busy`), git was killed, and nothing is left behind.
async fn assert_worker_free_and_git_gone(app: &TestApp, hang: &HangServer) {
    let packages = std::sync::Arc::clone(&app.state.packages);
    assert!(
        eventually(Duration::from_secs(30), || packages.busy_workers() == 0).await,
        "the worker is still busy"
    );
    let hung_up = tokio::task::block_in_place(|| hang.clients_hung_up(Duration::from_secs(10)));
    assert!(hung_up, "git is still connected to the remote");
    let next = app.post(URI, tar(&[Member::file("a.py", "x = 1\n")])).await;
    assert_eq!(next.status, 201, "{}", String::from_utf8_lossy(&next.body));
    assert_eq!(app.stored().len(), 1, "only the next upload was stored");
    app.assert_no_temp_files();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_fetch_that_stalls_is_answered_408_at_the_request_timeout_and_frees_its_worker() {
    let hang = HangServer::start();
    let mirrors = tempfile::tempdir().expect("temp dir");
    let app = app_with_a_hanging_remote(&hang, mirrors.path(), 1).await;
    let request = Request::post(URI)
        .header("content-type", "application/json")
        .body(Body::from(git_body(&hang)))
        .expect("request");
    let response: TestResponse = app.call(request).await;
    // 408 from the request timeout (1 s), not 504 git_fetch_timeout (120 s).
    response.assert_error(408, "request_timeout");
    assert!(hang.connections() >= 1, "git had reached the remote");
    assert_worker_free_and_git_gone(&app, &hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_during_a_git_fetch_frees_its_worker_and_kills_git() {
    let hang = HangServer::start();
    let mirrors = tempfile::tempdir().expect("temp dir");
    let app = app_with_a_hanging_remote(&hang, mirrors.path(), 300).await;
    let running = app.spawn().await;
    let body = git_body(&hang);
    let mut stream = tokio::net::TcpStream::connect(running.addr).await.expect("connect");
    let head = format!(
        "POST {URI} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(body.as_bytes()).await.expect("body");
    assert!(eventually(Duration::from_secs(30), || hang.connections() >= 1).await, "git reached the remote");
    // The client goes away while its fetch stalls.
    drop(stream);
    assert_worker_free_and_git_gone(&app, &hang).await;
    running.stop().await.expect("the server stops");
}

#[test]
fn sigterm_with_a_stalled_fetch_in_flight_exits_within_the_grace_period() {
    let hang = HangServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, temp, mirrors) =
        (dir.path().join("artifacts"), dir.path().join("tmp"), dir.path().join("git"));
    let allowed = format!("[\"{}/\"]", hang.base_url());
    let grace = Duration::from_secs(1);
    let mut service = Service::start_with::<&dyn AsRef<std::ffi::OsStr>>(
        &store,
        &[
            ("LAMBDA_PACKAGER_PACK__TEMP_DIR", &temp),
            ("LAMBDA_PACKAGER_SERVER__SHUTDOWN_GRACE_SECS", &"1"),
            ("LAMBDA_PACKAGER_GIT__ALLOWED_REMOTES", &allowed),
            ("LAMBDA_PACKAGER_GIT__ALLOW_INSECURE_HTTP", &"true"),
            ("LAMBDA_PACKAGER_GIT__MIRROR_DIR", &mirrors),
            ("LAMBDA_PACKAGER_GIT__FETCH_TIMEOUT_SECS", &"300"),
        ],
    );
    let body = git_body(&hang);
    let mut stream = std::net::TcpStream::connect(service.addr).expect("connect");
    write!(
        stream,
        "POST {URI} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let reached = (0..3000).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        hang.connections() >= 1
    });
    assert!(reached, "git reached the remote");
    let pid = service.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let signalled = Instant::now();
    // Polled, not slept: the process must be gone within the grace period plus a generous
    // margin (measured here: 1.01 s after SIGTERM with a 1 s grace; it used to wait for the
    // fetch's own 300 s timeout).
    let margin = Duration::from_secs(20);
    let status = loop {
        if let Some(status) = service.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < grace + margin,
            "still running {:?} after SIGTERM",
            signalled.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!("exited {:?} after SIGTERM (grace {grace:?}): {status:?}", signalled.elapsed());
    assert!(status.success(), "{status:?}");
    assert!(hang.clients_hung_up(Duration::from_secs(10)), "git outlived the service");
    assert!(files_under(&temp).is_empty(), "temp files left");
    drop(stream);
}

#[test]
fn a_cancelled_request_stops_every_input_kind_before_its_work() {
    let files = [("a.py", "x = 1\n"), ("lib/b.py", "y = 2\n")];
    let tar = tar(&files.map(|(p, d)| Member::file(p, d)));
    let zip = zip(&files.map(|(p, d)| ZipMember::file(p, d, 0o644)));
    let dir = tempfile::tempdir().expect("temp dir");
    for (p, d) in files {
        std::fs::create_dir_all(dir.path().join(p).parent().expect("parent")).expect("mkdir");
        std::fs::write(dir.path().join(p), d).expect("write");
    }
    let mirrors = tempfile::tempdir().expect("temp dir");
    let hang = HangServer::start();
    let git = GitSource::new(GitConfig {
        allowed_remotes: vec![format!("{}/", hang.base_url())],
        allow_insecure_http: true,
        mirror_dir: mirrors.path().to_owned(),
        ..GitConfig::default()
    })
    .expect("git config");
    let request = GitRequest { repo: hang.url("stalls.git"), reference: "main".into(), path: None };
    let inputs = [
        ("tar", Input::Archive(tar.clone().into())),
        ("tar.gz", Input::Archive(gzip(&tar).into())),
        ("zip", Input::Archive(zip.into())),
        ("directory", Input::Directory(dir.path().to_owned())),
        ("git", Input::Git(request)),
    ];
    let cancel = CancelFlag::default();
    cancel.cancel();
    for (name, input) in inputs {
        let result =
            packages::decode(input, &Selection::default(), &Limits::default(), Some(&git), None, &cancel);
        assert_eq!(result.map(|_| ()).map_err(|e| e.code()), Err("cancelled"), "{name}");
    }
    assert_eq!(hang.connections(), 0, "a cancelled git request never reaches the remote");
}
