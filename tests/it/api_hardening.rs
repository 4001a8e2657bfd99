//! What keeps a shared service healthy: auth, body and time limits, load shedding, graceful
//! shutdown, request ids, metrics, probes and the OpenAPI document.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::golden::basic;
use crate::support::app::{TestApp, http_request, read_response};

const URI: &str = "/v1/functions/fn/package";

#[tokio::test]
async fn bearer_tokens_guard_the_api_but_not_the_probes() {
    let app =
        TestApp::with(|c| c.auth.tokens = vec!["s3cret-token".to_owned().into(), "second".to_owned().into()])
            .await;
    let bundle = basic().tar();
    let no_token = app.post(URI, bundle.clone()).await;
    no_token.assert_error(401, "unauthorized");
    assert_eq!(no_token.headers["www-authenticate"], "Bearer");
    let wrong = Request::post(URI)
        .header("authorization", "Bearer s3cret-tokeN")
        .body(Body::from(bundle.clone()))
        .expect("request");
    app.call(wrong).await.assert_error(401, "unauthorized");
    app.get("/v1/functions/fn/artifacts").await.assert_error(401, "unauthorized");
    assert!(app.stored().is_empty());
    for token in ["s3cret-token", "second"] {
        let ok = Request::post(URI)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(bundle.clone()))
            .expect("request");
        assert!(app.call(ok).await.status.is_success());
    }
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/readyz").await.status, 200);
    assert_eq!(app.get("/openapi.json").await.status, 200);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413_whether_announced_or_streamed() {
    let app = TestApp::with(|c| c.server.max_body_bytes = 1000).await;
    let bundle = basic().tar();
    assert!(bundle.len() > 1000);
    app.post(URI, bundle.clone()).await.assert_error(413, "payload_too_large");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bundle.chunks(300).map(|c| Ok(c.to_vec())).collect();
    let streamed =
        Request::post(URI).body(Body::from_stream(futures_util::stream::iter(chunks))).expect("request");
    app.call(streamed).await.assert_error(413, "payload_too_large");
    app.post_multipart(URI, &[], &bundle).await.assert_error(413, "payload_too_large");
    assert!(app.stored().is_empty());
    app.assert_no_temp_files();
}

/// Sends the request head and the first `sent` bytes of a `total`-byte body, then stalls.
async fn stalled_upload(addr: std::net::SocketAddr, total: usize, sent: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head =
        format!("POST {URI} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {total}\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(sent).await.expect("some body");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_cut_off_by_the_request_timeout() {
    let app = TestApp::with(|c| c.server.request_timeout_secs = 1).await;
    let server = app.spawn().await;
    let bundle = basic().tar();
    let mut slow = stalled_upload(server.addr, bundle.len(), &bundle[..100]).await;
    let started = Instant::now();
    let (status, _, body) = read_response(&mut slow).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!((status, v["error"]["code"].as_str()), (408, Some("request_timeout")));
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, _, _) = http_request(server.addr, "POST", URI, &[], &bundle).await;
    assert_eq!(status, 201, "a normal request still works");
    server.stop().await.expect("stops");
    app.assert_no_temp_files();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_too_slowly_is_disconnected() {
    let app = TestApp::with(|c| c.server.header_read_timeout_secs = 1).await;
    let server = app.spawn().await;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n").await.expect("partial head");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the timeout");
    let (status, _, _) = http_request(server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200);
    server.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_get_a_fast_503() {
    let app = TestApp::with(|c| c.server.concurrency_limit = 1).await;
    let server = app.spawn().await;
    let bundle = basic().tar();
    let mut held = stalled_upload(server.addr, bundle.len(), &bundle[..100]).await;
    // Wait until the held request owns the only slot (its handler is reading the body), so the
    // request below is the one refused, whatever the scheduling.
    while app.state.settings.in_flight.available_permits() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, headers, body) = http_request(server.addr, "POST", URI, &[], &bundle).await;
    assert_eq!(status, 503, "a request beyond the limit is shed");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "overloaded");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
    let (status, _, _) = http_request(server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200, "probes are not shed");
    held.write_all(&bundle[100..]).await.expect("rest of the body");
    let (status, _, _) = read_response(&mut held).await;
    assert_eq!(status, 201, "the held request completes");
    server.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_worker_pool_answers_busy_with_retry_after() {
    let app = TestApp::with(|c| {
        c.pack.workers = 1.try_into().expect("nonzero");
        c.pack.queue_timeout_secs = 0;
    })
    .await;
    let (hold, release) = std::sync::mpsc::channel::<()>();
    let packages = std::sync::Arc::clone(&app.state.packages);
    let holder = tokio::spawn(async move { packages.run_blocking(move || release.recv()).await });
    while app.state.packages.busy_workers() == 0 {
        tokio::task::yield_now().await;
    }
    let busy = app.post(URI, basic().tar()).await;
    busy.assert_error(503, "busy");
    assert_eq!(busy.headers["retry-after"], "1");
    hold.send(()).expect("release");
    holder.await.expect("join").expect("ran").expect("received");
    assert_eq!(app.post(URI, basic().tar()).await.status, 201);
    app.assert_no_temp_files();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_an_upload_in_flight_and_stops_accepting() {
    let app = TestApp::new().await;
    let server = app.spawn().await;
    let addr = server.addr;
    let bundle = basic().tar();
    let mut inflight = stalled_upload(addr, bundle.len(), &bundle[..100]).await;
    // The upload holds a concurrency permit once its handler runs: wait for that, so the
    // shutdown below finds it in flight.
    let limit = app.config.server.concurrency_limit;
    tokio::time::timeout(Duration::from_secs(10), async {
        while app.state.settings.in_flight.available_permits() == limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the upload reaches its handler");
    server.trigger_shutdown();
    // Draining starts with the listener closed; only then does the rest of the body go out.
    tokio::time::timeout(Duration::from_secs(10), async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the listener closes on shutdown");
    inflight.write_all(&bundle[100..]).await.expect("rest of the body");
    let (status, _, body) = read_response(&mut inflight).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    server.join().await.expect("the server exits cleanly");
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
    assert_eq!(app.stored().len(), 1);
}

#[tokio::test]
async fn request_ids_are_set_or_propagated() {
    let app = TestApp::new().await;
    let r = app.get("/healthz").await;
    assert_eq!(r.headers["x-request-id"].len(), 36, "a UUID");
    let given =
        Request::get("/nope").header("x-request-id", "ci-run-42").body(Body::empty()).expect("request");
    let r = app.call(given).await;
    assert_eq!(r.headers["x-request-id"], "ci-run-42");
    r.assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_the_admin_listener() {
    let app = TestApp::new().await;
    let server = app.spawn().await;
    let bundle = basic().tar();
    http_request(server.addr, "POST", URI, &[], &bundle).await;
    http_request(server.addr, "POST", URI, &[], &bundle).await;
    let (status, _, body) = http_request(server.admin_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("utf-8");
    for needle in [
        "packages_created_total",
        "packages_deduplicated_total",
        "pack_duration_seconds",
        "packs_total{format=\"tar\"}",
        "blocking_pool_wait_seconds",
        "http_requests_total{method=\"POST\",route=\"/v1/functions/{function}/package\",status=\"201\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let (status, _, _) = http_request(server.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 404, "metrics are not on the public listener");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn readiness_follows_the_store() {
    let app = TestApp::new().await;
    assert_eq!(app.get("/readyz").await.json()["status"], "ready");
    std::fs::remove_dir_all(app.store_root()).expect("break the store");
    let r = app.get("/readyz").await;
    r.assert_error(503, "store_unavailable");
    assert_eq!(app.get("/healthz").await.status, 200, "liveness does not depend on the store");
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes() {
    let app = TestApp::new().await;
    let doc = app.get("/openapi.json").await.json();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("methods").keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let expected = [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/v1/artifacts/{key}"),
        ("GET", "/v1/artifacts/{key}/diff/{other_key}"),
        ("GET", "/v1/artifacts/{key}/zip"),
        ("GET", "/v1/functions"),
        ("GET", "/v1/functions/{function}/artifacts"),
        ("GET", "/v1/functions/{function}/latest"),
        ("POST", "/v1/functions/{function}/package"),
        ("POST", "/v1/functions/{function}/package/lookup"),
    ];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(documented, expected);
    // Every documented route is routed: no `not_found` answer from the router's fallback.
    for (method, path) in &documented {
        let concrete = path
            .replace("{function}", "fn")
            .replace("{key}", &format!("lambda-fn-{}.zip", "0".repeat(64)))
            .replace("{other_key}", &format!("lambda-fn-{}.zip", "1".repeat(64)));
        let r = app
            .call(
                Request::builder()
                    .method(method.as_str())
                    .uri(&concrete)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
        let code = r.json().get("error").map(|e| e["code"].clone());
        assert_ne!(
            code,
            Some(serde_json::json!("not_found")),
            "{method} {path} is documented but not routed"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// The properties of schema `name` of an OpenAPI document, each of which must be described.
#[track_caller]
fn described_properties(doc: &serde_json::Value, name: &str) -> Vec<String> {
    let properties = doc["components"]["schemas"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no schema {name}"));
    for (property, schema) in properties {
        let description = schema["description"]
            .as_str()
            .or_else(|| schema["oneOf"][0]["description"].as_str())
            .or_else(|| schema["allOf"][0]["description"].as_str());
        assert!(
            description.is_some_and(|d| !d.trim().is_empty()),
            "{name}.{property} is not described: {schema}"
        );
    }
    properties.keys().cloned().collect()
}

#[tokio::test]
async fn the_openapi_document_describes_the_read_side_routes_fields_and_parameters() {
    let app = TestApp::new().await;
    let doc = app.get("/openapi.json").await.json();
    let has = |schema: &str, fields: &[&str]| {
        let properties = described_properties(&doc, schema);
        for field in fields {
            assert!(properties.iter().any(|p| p == field), "{schema} lacks {field}: {properties:?}");
        }
    };
    has(
        "ArtifactSummary",
        &[
            "key",
            "sha256",
            "size",
            "files",
            "created",
            "created_by",
            "format",
            "commit",
            "source_sha256",
            "version_id",
            "ui_url",
        ],
    );
    has("ArtifactList", &["function", "artifacts", "next_cursor"]);
    has("ArtifactDetail", &["key", "function", "sha256", "size", "provenance", "code", "ui_url", "entries"]);
    has("ArtifactDiff", &["from", "to", "added", "removed", "changed", "ui_url"]);
    has("PackageResponse", &["key", "code", "ui_url"]);
    has(
        "ProvenanceInfo",
        &[
            "format_version",
            "packager_version",
            "input_format",
            "source_sha256",
            "git",
            "created",
            "created_by",
            "truncated",
        ],
    );
    has("GitProvenanceInfo", &["repo", "ref", "commit", "path"]);
    has("FunctionList", &["functions", "next_cursor"]);
    has("FunctionInfo", &["function", "packages", "latest", "ui_url"]);
    has("LatestPackage", &["key", "created"]);
    let provenance = doc["components"]["schemas"]["ArtifactDetail"]["properties"]["provenance"].to_string();
    assert!(
        provenance.contains("#/components/schemas/ProvenanceInfo") && provenance.contains("null"),
        "{provenance}"
    );

    let operation = |path: &str| doc["paths"][path]["get"].clone();
    let query = |path: &str| -> Vec<String> {
        let parameters = operation(path)["parameters"].as_array().cloned().unwrap_or_default();
        parameters
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| {
                assert_eq!(p["required"], false, "{path}: {p}");
                assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()), "{path}: {p}");
                p["name"].as_str().expect("a name").to_owned()
            })
            .collect()
    };
    assert_eq!(query("/v1/functions"), ["limit", "cursor"]);
    assert_eq!(query("/v1/functions/{function}/artifacts"), ["limit", "cursor", "commit", "source_sha256"]);
    let response = |path: &str, status: &str| operation(path)["responses"][status].to_string();
    assert!(response("/v1/functions", "200").contains("FunctionList"));
    assert!(response("/v1/functions/{function}/latest", "200").contains("ArtifactSummary"));
    assert!(response("/v1/functions/{function}/latest", "404").contains("ErrorBody"));
    assert!(response("/v1/functions/{function}/artifacts", "403").contains("function_not_allowed"));
    assert!(response("/v1/artifacts/{key}", "502").contains("artifact_corrupt"));
    assert!(response("/v1/artifacts/{key}", "200").contains("ArtifactDetail"));
}
