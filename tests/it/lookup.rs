//! `POST /v1/functions/{function}/package/lookup`: "is the zip I built stored?", answered as a
//! re-post would be, with the post's checks, and without an upload.

use axum::body::Body;
use axum::http::Request;
use rstest::rstest;
use serde_json::{Value, json};

use crate::golden::mixed;
use crate::support::app::{TestApp, TestResponse};
use crate::support::pack_archive;

const POST: &str = "/v1/functions/fn/package";
const LOOKUP: &str = "/v1/functions/fn/package/lookup";

async fn lookup(app: &TestApp, uri: &str, body: &Value, token: Option<&str>) -> TestResponse {
    let mut request = Request::post(uri).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    app.call(request.body(Body::from(body.to_string())).expect("request")).await
}

/// The lookup body for the zip `pack ARCHIVE` builds from `bundle`.
fn built(bundle: &[u8], format: &str) -> Value {
    let packed = pack_archive(bundle).packed;
    json!({"sha256": packed.sha256.to_string(), "size": packed.size, "files": packed.files, "format": format})
}

#[tokio::test]
async fn a_lookup_of_a_stored_package_answers_what_a_re_post_answers() {
    let app = TestApp::new().await;
    let bundle = mixed().tar_gz();
    let body = built(&bundle, "tar.gz");

    let absent = lookup(&app, LOOKUP, &body, None).await;
    let message = absent.assert_error(404, "artifact_not_found");
    assert!(
        message.contains(&format!("lambda-fn-{}.zip", body["sha256"].as_str().expect("hex"))),
        "{message}"
    );
    assert!(app.stored().is_empty(), "a lookup stores nothing");

    let first = app.post(POST, bundle.clone()).await;
    assert_eq!(first.status, 201, "{}", String::from_utf8_lossy(&first.body));
    let found = lookup(&app, LOOKUP, &body, None).await;
    assert_eq!(found.status, 200, "{}", String::from_utf8_lossy(&found.body));
    let mut expected = first.json();
    expected["uploaded"] = false.into();
    assert_eq!(found.json(), expected, "the first post's answer, but not uploaded by this call");
    let repost = app.post(POST, bundle.clone()).await;
    assert_eq!((repost.status.as_u16(), repost.json()), (200, found.json()), "exactly a re-post's answer");

    let dry_post = app.post(&format!("{POST}?dry_run=true"), bundle).await.json();
    let mut dry = body.clone();
    dry["dry_run"] = true.into();
    let dry_lookup = lookup(&app, LOOKUP, &dry, None).await;
    assert_eq!(dry_lookup.json(), dry_post, "a dry-run lookup answers as a dry-run post");
    assert_eq!(dry_post["exists"], true);
    assert_eq!(app.stored().len(), 1);
}

#[tokio::test]
async fn a_key_holding_other_bytes_is_answered_absent_so_that_the_post_reports_it() {
    let app = TestApp::new().await;
    let bundle = mixed().tar_gz();
    assert_eq!(app.post(POST, bundle.clone()).await.status, 201);
    let stored = app.stored();
    let mut body = built(&bundle, "tar.gz");
    body["size"] = (body["size"].as_u64().expect("size") + 1).into();
    lookup(&app, LOOKUP, &body, None).await.assert_error(404, "artifact_not_found");
    assert_eq!(app.stored(), stored);
}

#[tokio::test]
async fn a_lookup_computes_the_key_with_the_servers_prefixes() {
    let app = TestApp::with(|c| {
        c.store.prefix = "ops/".parse().expect("prefix");
        c.store.allow_request_prefix = true;
    })
    .await;
    let bundle = mixed().zip();
    let posted = app.post(&format!("{POST}?prefix=ci/"), bundle.clone()).await.json();
    assert!(posted["key"].as_str().expect("key").starts_with("ops/ci/lambda-fn-"), "{posted}");
    let mut body = built(&bundle, "zip");
    lookup(&app, LOOKUP, &body, None).await.assert_error(404, "artifact_not_found");
    body["prefix"] = "ci/".into();
    let found = lookup(&app, LOOKUP, &body, None).await;
    assert_eq!(found.status, 200, "{}", String::from_utf8_lossy(&found.body));
    assert_eq!((&found.json()["key"], &found.json()["format"]), (&posted["key"], &"zip".into()));
}

fn valid() -> Value {
    json!({"sha256": "0".repeat(64), "size": 10, "files": 1, "format": "tar"})
}

fn with(field: &str, value: Value) -> Value {
    let mut body = valid();
    body[field] = value;
    body
}

#[rstest]
#[case::uppercase_digest(LOOKUP, with("sha256", "A".repeat(64).into()), 400, "invalid_parameter")]
#[case::short_digest(LOOKUP, with("sha256", "abc".into()), 400, "invalid_parameter")]
#[case::git_format(LOOKUP, with("format", "git".into()), 400, "invalid_parameter")]
#[case::unknown_field(LOOKUP, with("path", "lib".into()), 400, "invalid_json")]
#[case::negative_size(LOOKUP, with("size", (-1).into()), 400, "invalid_json")]
#[case::missing_digest(LOOKUP, json!({"size": 1, "files": 1, "format": "tar"}), 400, "invalid_json")]
#[case::bad_function("/v1/functions/no%20spaces/package/lookup", valid(), 400, "invalid_function_name")]
#[case::prefix_not_allowed(LOOKUP, with("prefix", "ci/".into()), 403, "prefix_not_allowed")]
#[case::body_over_4_kib(LOOKUP, with("prefix", "x".repeat(5000).into()), 413, "payload_too_large")]
#[tokio::test]
async fn a_bad_lookup_is_refused_with_the_posts_codes(
    #[case] uri: &str,
    #[case] body: Value,
    #[case] status: u16,
    #[case] code: &str,
) {
    let app = TestApp::new().await;
    lookup(&app, uri, &body, None).await.assert_error(status, code);
    assert!(app.stored().is_empty());
}

#[tokio::test]
async fn a_lookup_needs_the_write_scope_and_a_token_for_the_function() {
    let app = TestApp::with(|c| {
        let tokens = r#"tokens = [
            {name = "ci-orders", token = "ci-secret", scopes = ["write"], functions = ["orders*"]},
            {name = "reader", token = "reader-secret", scopes = ["read"]}
        ]"#;
        let figment = figment::Figment::new()
            .merge(<figment::providers::Toml as figment::providers::Format>::string(tokens));
        c.auth = figment.extract().expect("an [auth] table");
    })
    .await;
    let uri = "/v1/functions/orders/package/lookup";
    let body = valid();
    lookup(&app, uri, &body, None).await.assert_error(401, "unauthorized");
    lookup(&app, uri, &body, Some("reader-secret")).await.assert_error(403, "insufficient_scope");
    let billing = "/v1/functions/billing/package/lookup";
    lookup(&app, billing, &body, Some("ci-secret")).await.assert_error(403, "function_not_allowed");
    lookup(&app, uri, &body, Some("ci-secret")).await.assert_error(404, "artifact_not_found");
}
