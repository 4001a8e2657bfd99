//! `POST /v1/functions/{function}/package` with a JSON git request, over a real smart-HTTP git
//! server on 127.0.0.1: the same key as the equivalent tarball, and every refusal's code.

use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::support::app::{TestApp, TestResponse};
use crate::support::git_http::GitHttpServer;
use crate::support::git_repo::{TestRepo, git};

const URI: &str = "/v1/functions/orders/package";

async fn post_json(app: &TestApp, uri: &str, body: serde_json::Value) -> TestResponse {
    let request = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    app.call(request).await
}

/// A monorepo with a function under `lambdas/orders` and other code beside it, served over HTTP.
pub(crate) struct Remote {
    _root: tempfile::TempDir,
    pub(crate) repo: TestRepo,
    pub(crate) server: GitHttpServer,
}

impl Remote {
    pub(crate) fn new() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let repo = TestRepo::init(root.path(), "mono.git");
        repo.write("lambdas/orders/handler.py", b"def handler(e, c):\n    return 1\n");
        repo.write("lambdas/orders/lib/util.py", b"X = 1\n");
        repo.write("services/billing/main.py", b"print('billing')\n");
        git(repo.path(), &["update-index", "--add", "--chmod=+x", "lambdas/orders/handler.py"]);
        repo.commit("first");
        let server = GitHttpServer::start(root.path());
        Self { _root: root, repo, server }
    }

    pub(crate) fn url(&self) -> String {
        self.server.url("mono.git")
    }
}

async fn app_for(remote: &Remote, mirrors: &std::path::Path) -> TestApp {
    let (prefix, mirrors) = (remote.server.base_url(), mirrors.to_owned());
    TestApp::with(move |c| {
        c.git.allowed_remotes = vec![format!("{prefix}/")];
        c.git.allow_insecure_http = true;
        c.git.mirror_dir = mirrors;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_ref_gives_the_key_of_the_same_tree_as_a_tarball() {
    let remote = Remote::new();
    let mirrors = tempfile::tempdir().expect("temp dir");
    let app = app_for(&remote, mirrors.path()).await;
    let head = git(remote.repo.path(), &["rev-parse", "HEAD"]).trim().to_owned();

    let r =
        post_json(&app, URI, json!({"git": {"repo": remote.url(), "ref": "main", "path": "lambdas/orders"}}))
            .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["source"], json!({"repo": remote.url(), "ref": "main", "commit": head}));
    assert_eq!(v["format"], "git");
    assert_eq!(v["files"], 2);

    // `git archive` of the same commit and path, posted as a tarball: same key, already stored.
    let archive = std::process::Command::new("git")
        .args(["archive", "--format=tar", "HEAD:lambdas/orders"])
        .current_dir(remote.repo.path())
        .output()
        .expect("git archive");
    assert!(archive.status.success());
    let tar = app.post(URI, archive.stdout).await.json();
    assert_eq!((tar["key"].clone(), tar["uploaded"].clone()), (v["key"].clone(), json!(false)));

    // A commit that only touches files outside `path`: new commit, same key, nothing uploaded.
    remote.repo.write("services/billing/main.py", b"print('billing v2')\n");
    let second = remote.repo.commit("billing only");
    let again =
        post_json(&app, URI, json!({"git": {"repo": remote.url(), "ref": "main", "path": "lambdas/orders"}}))
            .await
            .json();
    assert_eq!(again["source"]["commit"], second.trim());
    assert_eq!((again["key"].clone(), again["uploaded"].clone()), (v["key"].clone(), json!(false)));

    // A change inside `path`: a new key.
    remote.repo.write("lambdas/orders/lib/util.py", b"X = 2\n");
    remote.repo.commit("orders change");
    let changed = post_json(
        &app,
        URI,
        json!({"git": {"repo": remote.url(), "ref": "main", "path": "lambdas/orders"}, "exclude": ["lib/"]}),
    )
    .await
    .json();
    assert_eq!(changed["files"], 1, "excludes apply to git trees too");
    let changed =
        post_json(&app, URI, json!({"git": {"repo": remote.url(), "ref": "main", "path": "lambdas/orders"}}))
            .await
            .json();
    assert_ne!(changed["key"], v["key"]);
    assert_eq!(changed["uploaded"], true);
    assert_eq!(app.stored().len(), 3);
    app.assert_no_temp_files();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_refusals_have_their_codes_and_store_nothing() {
    let remote = Remote::new();
    let mirrors = tempfile::tempdir().expect("temp dir");
    let app = app_for(&remote, mirrors.path()).await;
    let url = remote.url();
    let cases = [
        (
            json!({"git": {"repo": "https://elsewhere.example.com/x.git", "ref": "main"}}),
            403,
            "git_remote_not_allowed",
        ),
        (
            json!({"git": {"repo": "http://127.0.0.1:1/mono.git", "ref": "main"}}),
            403,
            "git_remote_not_allowed",
        ),
        (
            json!({"git": {"repo": "ext::sh -c touch% /tmp/pwned", "ref": "main"}}),
            403,
            "git_remote_not_allowed",
        ),
        (json!({"git": {"repo": url, "ref": "no-such-branch"}}), 404, "git_ref_not_found"),
        (json!({"git": {"repo": url, "ref": "main", "path": "nope"}}), 422, "path_not_found"),
        (json!({"git": {"repo": url, "ref": "-x"}}), 400, "invalid_git_request"),
        (json!({"git": {"repo": url}}), 400, "invalid_json"),
        (json!({"git": {"repo": url, "ref": "main"}, "colour": "red"}), 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        post_json(&app, URI, body.clone()).await.assert_error(status, code);
    }
    assert!(app.stored().is_empty());
    app.assert_no_temp_files();

    let disabled = TestApp::new().await;
    post_json(&disabled, URI, json!({"git": {"repo": url, "ref": "main"}}))
        .await
        .assert_error(422, "git_source_disabled");
}
