//! `push`: the CI client, against a real server on 127.0.0.1.

use std::process::{Command, Output};

use crate::golden::mixed;
use crate::support::app::TestApp;
use crate::support::counting_proxy::CountingProxy;

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

/// An archive file and an archive on stdin are sent as they are, the selection flags travel as
/// request options, and the server's key equals `pack ARCHIVE` with the same flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_of_an_archive_file_or_stdin_gives_the_key_pack_gives() {
    let app = TestApp::new().await;
    let server = app.spawn().await;
    let url = format!("http://{}", server.addr);
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("fn.tar.gz");
    std::fs::write(&archive, mixed().tar_gz()).expect("write archive");
    let flags = ["--path", "lib", "--exclude", "*.bin", "--include", "*.py", "--include", "*.sh"];

    let zip = dir.path().join("fn.zip");
    let mut pack = bin();
    pack.args(["pack", "--function", "fn"]).args(flags).arg("--out").arg(&zip).arg(&archive);
    let packed = json(&run(pack).await);
    assert_eq!(packed["files"], 4, "handler.py, again.py, common/util.py, common/tool.sh");

    let mut push = bin();
    push.args(["push", "--server", &url, "--function", "fn"]).args(flags).arg(&archive);
    let pushed = json(&run(push).await);
    assert_eq!(
        (&pushed["key"], &pushed["uploaded"], &pushed["files"]),
        (&packed["key"], &true.into(), &4.into())
    );
    assert_eq!(pushed["format"], "tar.gz", "the archive itself was sent, not a tar.gz the client made");
    let key = packed["key"].as_str().expect("key");
    assert_eq!(app.stored()[key], std::fs::read(&zip).expect("pack output"), "server bytes == pack bytes");

    let zip_input = dir.path().join("fn-input.zip");
    std::fs::write(&zip_input, mixed().zip()).expect("write zip input");
    let mut stdin = bin();
    stdin
        .args(["push", "-", "--server", &url, "--function", "fn"])
        .args(flags)
        .stdin(std::fs::File::open(&zip_input).expect("open"));
    let from_stdin = json(&run(stdin).await);
    assert_eq!((&from_stdin["key"], &from_stdin["uploaded"]), (&packed["key"], &false.into()));
    assert_eq!(from_stdin["format"], "zip");
    assert_eq!(app.stored().len(), 1);
    server.stop().await.expect("stops");
}

/// The client does not decode an archive it forwards: garbage reaches the server, which answers
/// (here, first, that the token is wrong; then that it is not an archive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_forwards_an_archive_without_decoding_it() {
    let app = TestApp::with(|c| c.auth.tokens = vec!["right".to_owned().into()]).await;
    let server = app.spawn().await;
    let url = format!("http://{}", server.addr);
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("fn.tar.gz");
    std::fs::write(&garbage, b"not an archive at all").expect("write");
    for (token, code) in [("wrong", "unauthorized"), ("right", "unsupported_format")] {
        let mut push = bin();
        push.args(["push", "--server", &url, "--function", "fn", "--token", token]).arg(&garbage);
        let out = run(push).await;
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with(&format!("error[{code}]: the server refused")), "{stderr}");
    }
    assert!(app.stored().is_empty());
    server.stop().await.expect("stops");
}

#[test]
fn a_server_url_without_a_scheme_is_refused_with_how_to_write_it() {
    let src = tempfile::tempdir().expect("temp dir");
    mixed().write_dir(src.path());
    let flag =
        bin().args(["push", "--server", "127.0.0.1:8080", "--function", "fn"]).arg(src.path()).output();
    let env = bin()
        .args(["push", "--function", "fn"])
        .arg(src.path())
        .env("LAMBDA_PACKAGER_SERVER", "127.0.0.1:8080")
        .output();
    for out in [flag.expect("run"), env.expect("run")] {
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("`127.0.0.1:8080` has no scheme: write http://127.0.0.1:8080"), "{stderr}");
        assert!(!stderr.contains("invalid format"), "{stderr}");
    }
}

/// With an operator prefix, the server's key is `{store.prefix}{request prefix}lambda-…`, and
/// `pack --prefix` takes that whole prefix to compute it offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_with_the_whole_prefix_gives_the_key_of_a_server_with_a_store_prefix() {
    let app = TestApp::with(|c| {
        c.store.prefix = "ops/".parse().expect("prefix");
        c.store.allow_request_prefix = true;
    })
    .await;
    let server = app.spawn().await;
    let src = tempfile::tempdir().expect("temp dir");
    mixed().write_dir(src.path());

    let mut push = bin();
    push.args([
        "push",
        "--server",
        &format!("http://{}", server.addr),
        "--function",
        "fn",
        "--prefix",
        "ci/",
    ]);
    push.arg(src.path());
    let pushed = json(&run(push).await);
    let mut pack = bin();
    pack.args(["pack", "--function", "fn", "--prefix", "ops/ci/"]).arg(src.path());
    let packed = json(&run(pack).await);
    let key = packed["key"].as_str().expect("key");
    assert!(key.starts_with("ops/ci/lambda-fn-"), "{key}");
    assert_eq!(pushed["key"], key);
    assert_eq!(app.stored().keys().collect::<Vec<_>>(), [key]);
    server.stop().await.expect("stops");
}

/// `push DIR` with `args`, through `proxy`; its JSON answer.
async fn push_through(proxy: &CountingProxy, dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut push = bin();
    push.args(["push", "--server", &format!("http://{}", proxy.addr), "--function", "fn"])
        .args(args)
        .arg(dir);
    json(&run(push).await)
}

/// The second push of an unchanged tree packs it here, asks, and sends no archive: the server
/// receives one small lookup, answers what a re-post answers, and the store still holds one
/// object. `--force-upload` sends the body anyway; a changed tree is uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_of_an_unchanged_tree_sends_no_archive_body() {
    let app = TestApp::new().await;
    let server = app.spawn().await;
    let proxy = CountingProxy::start(server.addr).await;
    let src = tempfile::tempdir().expect("temp dir");
    mixed().write_dir(src.path());

    let first = push_through(&proxy, src.path(), &[]).await;
    let sent = proxy.take();
    assert_eq!((first["uploaded"].as_bool(), sent.lookups, sent.posts), (Some(true), 1, 1), "{sent:?}");
    assert!(sent.bytes > 100_000, "the first push uploads the tree: {sent:?}");

    let again = push_through(&proxy, src.path(), &[]).await;
    let sent = proxy.take();
    assert_eq!((sent.lookups, sent.posts), (1, 0), "{sent:?}");
    assert!(sent.bytes < 4096, "no archive body, only the lookup: {sent:?}");
    let mut expected = first.clone();
    expected["uploaded"] = false.into();
    assert_eq!(again, expected, "the first answer, not uploaded by this call");
    assert_eq!(app.stored().len(), 1);

    let dry = push_through(&proxy, src.path(), &["--dry-run"]).await;
    let sent = proxy.take();
    assert_eq!(
        (sent.posts, dry["exists"].as_bool(), &dry["key"]),
        (0, Some(true), &first["key"]),
        "{sent:?}"
    );

    let forced = push_through(&proxy, src.path(), &["--force-upload"]).await;
    let sent = proxy.take();
    assert_eq!((sent.lookups, sent.posts), (0, 1), "{sent:?}");
    assert!(sent.bytes > 100_000, "--force-upload sends the body: {sent:?}");
    assert_eq!(forced, expected, "the server's answer to the upload is the lookup's");

    std::fs::write(src.path().join("handler.py"), "def handler(e, c):\n    return 2\n").expect("edit");
    let changed = push_through(&proxy, src.path(), &[]).await;
    let sent = proxy.take();
    assert_eq!((changed["uploaded"].as_bool(), sent.lookups, sent.posts), (Some(true), 1, 1), "{sent:?}");
    assert_ne!(changed["key"], first["key"]);
    assert_eq!(app.stored().len(), 2);
    server.stop().await.expect("stops");
}

/// A server from before the lookup route answers it `404 not_found`: push uploads, as it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_server_without_the_lookup_route_uploads() {
    let app = TestApp::new().await;
    let server = app.spawn().await;
    let proxy = CountingProxy::start(server.addr).await;
    proxy.without_lookup();
    let src = tempfile::tempdir().expect("temp dir");
    mixed().write_dir(src.path());
    let first = push_through(&proxy, src.path(), &[]).await;
    let again = push_through(&proxy, src.path(), &[]).await;
    let sent = proxy.take();
    assert_eq!((sent.lookups, sent.posts), (2, 2), "both pushes asked, then uploaded: {sent:?}");
    assert_eq!((first["uploaded"].as_bool(), again["uploaded"].as_bool()), (Some(true), Some(false)));
    assert_eq!(again["key"], first["key"]);
    assert_eq!(app.stored().len(), 1);
    server.stop().await.expect("stops");
}

/// An archive is decoded here with the selection, so its second push is a lookup too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_of_an_unchanged_archive_sends_no_archive_body() {
    let app = TestApp::new().await;
    let server = app.spawn().await;
    let proxy = CountingProxy::start(server.addr).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("fn.zip");
    std::fs::write(&archive, mixed().zip()).expect("write archive");
    let flags = ["--path", "lib", "--exclude", "*.bin"];
    let first = push_through(&proxy, &archive, &flags).await;
    proxy.take();
    let again = push_through(&proxy, &archive, &flags).await;
    let sent = proxy.take();
    assert_eq!((sent.lookups, sent.posts), (1, 0), "{sent:?}");
    assert!(sent.bytes < 4096, "{sent:?}");
    let mut expected = first.clone();
    expected["uploaded"] = false.into();
    assert_eq!((again, &first["format"]), (expected, &"zip".into()));
    let other = push_through(&proxy, &archive, &["--path", "lib"]).await;
    assert_eq!(
        (proxy.take().posts, other["uploaded"].as_bool()),
        (1, Some(true)),
        "other options, other zip"
    );
    server.stop().await.expect("stops");
}
