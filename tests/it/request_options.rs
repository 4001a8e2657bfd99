//! Package options and request shapes a new user trips on (issue #14 "API", issue #10 point 7):
//! one value per single-valued option, one place per option, capped options, the bundle part
//! named in the error, JSON without its content type, every option in a git JSON body, and the
//! bearer scheme in any case. Every refusal stores nothing and leaves no temp file.

use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::golden::{basic, mixed};
use crate::support::app::{TestApp, TestResponse, multipart};
use crate::support::git_repo::TestRepo;

const URI: &str = "/v1/functions/fn/package";

async fn post_with(app: &TestApp, uri: &str, content_type: &str, body: impl Into<Body>) -> TestResponse {
    let request = Request::post(uri).header("content-type", content_type).body(body.into()).expect("request");
    app.call(request).await
}

#[track_caller]
fn assert_nothing_left(app: &TestApp) {
    assert!(app.stored().is_empty(), "stored: {:?}", app.stored().keys());
    app.assert_no_temp_files();
}

#[tokio::test]
async fn a_single_valued_option_given_twice_is_refused_instead_of_the_last_winning() {
    let app = TestApp::new().await;
    let bundle = mixed().tar_gz();
    for query in
        ["path=lib&path=common", "dry_run=true&dry_run=false", "strip_components=0&strip_components=1"]
    {
        let message =
            app.post(&format!("{URI}?{query}"), bundle.clone()).await.assert_error(400, "invalid_parameter");
        assert!(message.contains("more than once"), "{query}: {message}");
    }
    let fields = [("default_excludes", "false"), ("default_excludes", "true")];
    let message = app.post_multipart(URI, &fields, &bundle).await.assert_error(400, "invalid_parameter");
    assert!(message.contains("default_excludes") && message.contains("more than once"), "{message}");
    assert_nothing_left(&app);
    // Repeatable options stay repeatable, in either place.
    let both = app.post(&format!("{URI}?include=*.py&include=*.json&dry_run=true"), bundle.clone()).await;
    assert_eq!(both.status, 200, "{}", String::from_utf8_lossy(&both.body));
    let fields = [("include", "*.py"), ("include", "*.json"), ("dry_run", "true")];
    assert_eq!(app.post_multipart(URI, &fields, &bundle).await.json()["sha256"], both.json()["sha256"]);
}

#[tokio::test]
async fn an_option_in_the_query_and_in_the_body_is_refused_not_resolved_silently() {
    let app = TestApp::with(|c| c.git.allowed_remotes = vec!["https://git.example.com/".into()]).await;
    let bundle = mixed().tar_gz();
    for (query, field) in [("path=lib", ("path", "lib")), ("include=*.py", ("include", "*.json"))] {
        let message = app
            .post_multipart(&format!("{URI}?{query}"), &[field], &bundle)
            .await
            .assert_error(400, "invalid_parameter");
        assert!(message.contains("the query string") && message.contains("a multipart field"), "{message}");
    }
    // A git request: checked before any fetch (the remote does not exist).
    let git = json!({"git": {"repo": "https://git.example.com/mono.git", "ref": "main"}, "dry_run": true});
    let message = post_with(&app, &format!("{URI}?dry_run=true"), "application/json", git.to_string())
        .await
        .assert_error(400, "invalid_parameter");
    assert!(message.contains("the query string") && message.contains("the JSON body"), "{message}");
    let git = json!({"git": {"repo": "https://git.example.com/mono.git", "ref": "main"}, "include": []});
    post_with(&app, &format!("{URI}?include=*.py"), "application/json", git.to_string())
        .await
        .assert_error(400, "invalid_parameter");
    assert_nothing_left(&app);
}

#[tokio::test]
async fn options_are_capped_in_number_and_in_length_in_every_place() {
    let app = TestApp::new().await;
    let bundle = basic().tar();
    // 256 patterns of each kind and each single-valued option once: 517 options.
    let singles = "path=&strip_components=0&default_excludes=false&prefix=&dry_run=true";
    let patterns: String = (0..256).map(|i| format!("include=*&exclude=x{i}/&")).collect();
    let at_cap = app.post(&format!("{URI}?{patterns}{singles}"), bundle.clone()).await;
    assert_eq!(at_cap.status, 200, "{}", String::from_utf8_lossy(&at_cap.body));
    let message = app
        .post(&format!("{URI}?{patterns}{singles}&include=one-more"), bundle.clone())
        .await
        .assert_error(400, "invalid_parameter");
    assert!(message.contains("517"), "{message}");
    let fields: Vec<(&str, &str)> = std::iter::repeat_n(("exclude", "x/"), 518).collect();
    app.post_multipart(URI, &fields, &bundle).await.assert_error(400, "invalid_parameter");

    let long = "a".repeat(1025);
    let message = app
        .post(&format!("{URI}?exclude={long}"), bundle.clone())
        .await
        .assert_error(400, "invalid_parameter");
    assert!(message.contains("exclude") && message.contains("1024"), "{message}");
    let message =
        app.post_multipart(URI, &[("exclude", &long)], &bundle).await.assert_error(400, "invalid_parameter");
    assert!(message.contains("exclude") && message.contains("1024"), "{message}");
    let at_length = app.post_multipart(URI, &[("exclude", &long[1..]), ("dry_run", "1")], &bundle).await;
    assert_eq!(at_length.status, 200, "{}", String::from_utf8_lossy(&at_length.body));
    assert_nothing_left(&app);
}

#[tokio::test]
async fn a_file_part_with_another_name_is_missing_bundle_and_names_the_part_to_use() {
    let app = TestApp::new().await;
    // What `curl -F path=lib -F file=@fn.tar.gz` sends.
    let (ct, body) = multipart(&[("path", "lib")], &mixed().tar_gz());
    let message = post_with(&app, URI, &ct, body_with_part_name(&body, "file"))
        .await
        .assert_error(400, "missing_bundle");
    assert!(
        message.contains("`bundle`") && message.contains("\"file\"") && message.contains("curl -F bundle=@"),
        "{message}"
    );
    // No file part at all: the same code, with the same hint.
    let text_only = "--x\r\ncontent-disposition: form-data; name=\"path\"\r\n\r\nlib\r\n--x--\r\n";
    let message = post_with(&app, URI, "multipart/form-data; boundary=x", text_only)
        .await
        .assert_error(400, "missing_bundle");
    assert!(message.contains("curl -F bundle=@"), "{message}");
    assert_nothing_left(&app);
}

/// `body` (from [`multipart`]) with its file part named `name` instead of `bundle`.
fn body_with_part_name(body: &[u8], name: &str) -> Vec<u8> {
    let needle = b"name=\"bundle\"";
    let at = body.windows(needle.len()).position(|w| w == needle).expect("the bundle part");
    [&body[..at], format!("name=\"{name}\"").as_bytes(), &body[at + needle.len()..]].concat()
}

#[tokio::test]
async fn a_json_body_without_its_content_type_is_told_which_content_type_to_send() {
    let app = TestApp::with(|c| c.git.allowed_remotes = vec!["https://git.example.com/".into()]).await;
    let git = json!({"git": {"repo": "https://git.example.com/mono.git", "ref": "main"}}).to_string();
    // curl -d sends application/x-www-form-urlencoded; --data-binary with no -H sends the same.
    for content_type in ["application/x-www-form-urlencoded", "application/octet-stream"] {
        let message = post_with(&app, URI, content_type, format!("\n  {git}"))
            .await
            .assert_error(415, "unsupported_format");
        assert!(
            message.contains("Content-Type: application/json") && message.contains(content_type),
            "{message}"
        );
    }
    let message = app.post(URI, git).await.assert_error(415, "unsupported_format");
    assert!(message.contains("application/json"), "{message}");
    // Other bytes that are no archive keep the plain message.
    let message = app.post(URI, "hello").await.assert_error(415, "unsupported_format");
    assert!(!message.contains("JSON"), "{message}");
    assert_nothing_left(&app);
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case() {
    let app = TestApp::with(|c| c.auth.tokens = vec!["s3cret".to_owned().into()]).await;
    let bundle = basic().tar();
    let mut statuses = Vec::new();
    for value in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR  s3cret"] {
        let request = Request::post(URI)
            .header("authorization", value)
            .body(Body::from(bundle.clone()))
            .expect("request");
        statuses.push(app.call(request).await.status.as_u16());
    }
    assert_eq!(statuses, [201, 200, 200, 200]);
    for value in ["Basic s3cret", "Bearer", "s3cret", "Bearers3cret"] {
        let request = Request::post(URI)
            .header("authorization", value)
            .body(Body::from(bundle.clone()))
            .expect("request");
        app.call(request).await.assert_error(401, "unauthorized");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_json_body_takes_dry_run_and_every_other_package_option() {
    let (root, repo) = TestRepo::temp();
    repo.write("fn/handler.py", b"def handler(e, c):\n    return 1\n");
    repo.write("fn/lib/util.py", b"X = 1\n");
    repo.write("fn/tests/test_handler.py", b"assert True\n");
    repo.commit("first");
    let mirrors = tempfile::tempdir().expect("temp dir");
    let allowed = root.path().to_str().expect("UTF-8").to_owned();
    let mirror_dir = mirrors.path().to_owned();
    let app = TestApp::with(move |c| {
        c.git.allowed_remotes = vec![allowed];
        c.git.mirror_dir = mirror_dir;
        c.store.allow_request_prefix = true;
    })
    .await;
    let request = |extra: serde_json::Value| {
        let mut body = json!({"git": {"repo": repo.url(), "ref": "main", "path": "fn"}});
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        body.to_string()
    };
    let options = json!({"exclude": ["tests/"], "include": ["*.py"], "default_excludes": true,
                         "strip_components": 0, "prefix": "ci/", "dry_run": true});
    let dry = post_with(&app, URI, "application/json", request(options.clone())).await;
    assert_eq!(dry.status, 200, "{}", String::from_utf8_lossy(&dry.body));
    let dry = dry.json();
    assert_eq!(
        (dry["files"].clone(), dry["uploaded"].clone(), dry["exists"].clone()),
        (json!(2), json!(false), json!(false))
    );
    assert!(dry["key"].as_str().expect("key").starts_with("ci/lambda-fn-"), "{dry}");
    assert!(dry.get("location").is_none(), "a dry run of a new key names no location: {dry}");
    assert!(app.stored().is_empty());

    let mut real = options;
    real["dry_run"] = json!(false);
    let stored = post_with(&app, URI, "application/json", request(real)).await;
    assert_eq!(stored.status, 201, "{}", String::from_utf8_lossy(&stored.body));
    assert_eq!(stored.json()["key"], dry["key"]);
    assert_eq!(app.stored().len(), 1);
    app.assert_no_temp_files();
}
