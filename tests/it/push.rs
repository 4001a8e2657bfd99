//! `push`: the CI client, against a real server on 127.0.0.1.

use std::process::{Command, Output};

use crate::golden::mixed;
use crate::support::app::TestApp;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lambda-packager"))
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run")).await.expect("join")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stores_what_pack_computes() {
    let app = TestApp::new().await;
    let server = app.spawn().await;
    let url = format!("http://{}", server.addr);
    let src = tempfile::tempdir().expect("temp dir");
    mixed().write_dir(src.path());
    std::fs::create_dir_all(src.path().join(".git")).expect("git dir");
    std::fs::write(src.path().join(".git/HEAD"), "ref: main").expect("git file");

    let out_zip = src.path().join("..").join(format!("{}.zip", std::process::id()));
    let mut pack = bin();
    pack.args(["pack", "--function", "fn", "--exclude", "pkg/", "--out"]).arg(&out_zip).arg(src.path());
    let packed = json(&run(pack).await);

    let mut push = bin();
    push.args(["push", "--server", &url, "--function", "fn", "--exclude", "pkg/"]).arg(src.path());
    let first = json(&run(push).await);
    assert_eq!(first["key"], packed["key"]);
    assert_eq!(first["uploaded"], true);
    let stored = app.stored();
    let key = packed["key"].as_str().expect("key");
    assert_eq!(stored[key], std::fs::read(&out_zip).expect("pack output"), "server bytes == pack bytes");
    std::fs::remove_file(&out_zip).expect("cleanup");

    let mut again = bin();
    again.args(["push", "--server", &url, "--function", "fn", "--exclude", "pkg/"]).arg(src.path());
    assert_eq!(json(&run(again).await)["uploaded"], false);
    server.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reports_the_servers_error_code_and_exits_non_zero() {
    let app = TestApp::with(|c| c.auth.tokens = vec!["right".to_owned().into()]).await;
    let server = app.spawn().await;
    let url = format!("http://{}", server.addr);
    let src = tempfile::tempdir().expect("temp dir");
    mixed().write_dir(src.path());

    let mut wrong = bin();
    wrong.args(["push", "--server", &url, "--function", "fn", "--token", "wrong"]).arg(src.path());
    let out = run(wrong).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error[unauthorized]: "));

    let mut right = bin();
    right
        .args(["push", "--server", &url, "--function", "fn"])
        .env("LAMBDA_PACKAGER_TOKEN", "right")
        .arg(src.path());
    assert_eq!(json(&run(right).await)["uploaded"], true);
    server.stop().await.expect("stops");

    // Port 1 on loopback: nothing listens there, so the connection is refused. (The stopped
    // server's port could be reused by another test's server in the meantime.)
    let mut down = bin();
    down.args(["push", "--server", "http://127.0.0.1:1", "--function", "fn"]).arg(src.path());
    let out = run(down).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error[server_unreachable]: "));

    std::os::unix::fs::symlink("/etc/passwd", src.path().join("evil.py")).expect("symlink");
    let mut evil = bin();
    evil.args(["push", "--server", &url, "--function", "fn"]).arg(src.path());
    let out = run(evil).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error[symlink_escapes]: "),
        "refused before any upload"
    );
}
