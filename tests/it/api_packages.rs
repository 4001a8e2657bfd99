//! `POST /v1/functions/{function}/package` over HTTP: bytes, keys, stored objects, error bodies.

use axum::body::Body;
use axum::http::Request;
use lambda_packager::package::Sha256Hex;

use crate::bad_input::bad_archives;
use crate::golden::{basic, mixed};
use crate::support::app::{TestApp, http_request};
use crate::support::archive::{Member, gzip, tar};
use crate::support::{noise, pack_archive};
use lambda_packager::package::MEMORY_SPOOL_BYTES;

const URI: &str = "/v1/functions/orders-api/package";

#[tokio::test]
async fn a_tarball_is_stored_once_under_its_content_key() {
    let app = TestApp::new().await;
    let bundle = mixed().tar_gz();
    let expected = pack_archive(&bundle);
    let sha = expected.packed.sha256.to_string();

    let first = app.post(URI, bundle.clone()).await;
    assert_eq!(first.status, 201, "{}", String::from_utf8_lossy(&first.body));
    let v = first.json();
    let key = format!("lambda-orders-api-{sha}.zip");
    assert_eq!(v["key"], key.as_str());
    assert_eq!(v["sha256"], sha.as_str());
    assert_eq!(v["code_sha256"], expected.packed.code_sha256());
    assert_eq!((v["size"].as_u64(), v["files"].as_u64()), (Some(expected.packed.size), Some(49)));
    assert_eq!((v["uploaded"].as_bool(), v["function"].as_str()), (Some(true), Some("orders-api")));
    assert_eq!((v["bucket"].is_null(), v["code"].is_null(), v["version_id"].is_null()), (true, true, true));
    assert_eq!((v["format"].as_str(), v["format_version"].as_u64()), (Some("tar.gz"), Some(1)));
    let location = format!("file://{}/{key}", app.store_root().canonicalize().expect("root").display());
    assert_eq!(v["location"], location.as_str());

    let stored = app.stored();
    assert_eq!(stored.keys().collect::<Vec<_>>(), [&key]);
    assert_eq!(stored[&key], expected.bytes, "the stored object is the canonical zip");
    assert_eq!(Sha256Hex::of_bytes(&stored[&key]).to_string(), sha);

    let second = app.post(URI, bundle).await;
    assert_eq!(second.status, 200);
    assert_eq!(
        (second.json()["uploaded"].as_bool(), second.json()["key"].as_str()),
        (Some(false), Some(key.as_str()))
    );
    assert_eq!(app.stored().len(), 1);
    app.assert_no_temp_files();
}

/// A tree past the 1 MiB in-memory limits: 1.5 MB of incompressible bytes (the raw tar, the
/// spooled contents and the zip all go to temp files) and 1.2 MB of text (a tar.gz body small
/// enough for memory whose contents are not).
fn larger_than_memory() -> (Vec<u8>, Vec<u8>) {
    let text: Vec<u8> =
        (0..40_000).flat_map(|i| format!("line {i:08} of the handler\n").into_bytes()).collect();
    let big = tar(&[
        Member::file("model.bin", noise(1_500_000, 7)),
        Member::file("handler.py", "def handler(event, context):\n    return 1\n"),
    ]);
    let compressible = gzip(&tar(&[Member::file("data.txt", &text), Member::exec("run.sh", "#!/bin/sh\n")]));
    assert!(big.len() > MEMORY_SPOOL_BYTES && compressible.len() < MEMORY_SPOOL_BYTES);
    assert!(text.len() > MEMORY_SPOOL_BYTES);
    (big, compressible)
}

#[tokio::test]
async fn bundles_past_the_memory_limit_go_through_temp_files_with_the_same_bytes_and_leave_none() {
    let app = TestApp::new().await;
    let (big, compressible) = larger_than_memory();
    for (body, multipart) in [(&big, false), (&big, true), (&compressible, false)] {
        let expected = pack_archive(body);
        let answer = if multipart {
            app.post_multipart(URI, &[], body).await
        } else {
            app.post(URI, body.clone()).await
        };
        assert!(answer.status == 201 || answer.status == 200, "{}", String::from_utf8_lossy(&answer.body));
        let key = format!("lambda-orders-api-{}.zip", expected.packed.sha256);
        assert_eq!(answer.json()["key"], key.as_str());
        assert_eq!(answer.json()["size"].as_u64(), Some(expected.packed.size));
        assert_eq!(app.stored()[&key], expected.bytes, "the stored object is the canonical zip");
        app.assert_no_temp_files();
    }
    assert_eq!(app.stored().len(), 2);
}

#[tokio::test]
async fn tar_tar_gz_zip_and_multipart_of_one_tree_give_one_key() {
    let app = TestApp::new().await;
    let tree = basic();
    let mut keys = Vec::new();
    for body in [tree.tar(), tree.tar_gz(), tree.zip()] {
        keys.push(app.post(URI, body).await.json()["key"].as_str().expect("key").to_owned());
    }
    keys.push(
        app.post_multipart(URI, &[], &tree.tar_gz()).await.json()["key"].as_str().expect("key").to_owned(),
    );
    let sha = pack_archive(&tree.tar()).packed.sha256;
    assert_eq!(keys, vec![format!("lambda-orders-api-{sha}.zip"); 4]);
    assert_eq!(app.stored().len(), 1);
}

#[tokio::test]
async fn selection_options_work_as_query_parameters_and_multipart_fields() {
    let app = TestApp::new().await;
    let bundle = mixed().tar_gz();
    let query = "?path=lib&include=*.py&include=*.json&exclude=common/&dry_run=true";
    let by_query = app.post(&format!("{URI}{query}"), bundle.clone()).await.json();
    assert_eq!(by_query["files"], 3, "handler.py, again.py, big.json");
    let fields = [
        ("path", "lib"),
        ("include", "*.py"),
        ("include", "*.json"),
        ("exclude", "common/"),
        ("dry_run", "true"),
    ];
    let by_fields = app.post_multipart(URI, &fields, &bundle).await.json();
    assert_eq!(by_fields["sha256"], by_query["sha256"]);
    let off = app.post(&format!("{URI}?default_excludes=false&strip_components=0&dry_run=1"), bundle).await;
    assert_eq!(off.status, 200);
}

#[tokio::test]
async fn dry_run_computes_the_key_and_stores_nothing() {
    let app = TestApp::new().await;
    let bundle = basic().tar();
    let dry = app.post(&format!("{URI}?dry_run=true"), bundle.clone()).await;
    assert_eq!(dry.status, 200);
    assert_eq!(
        (dry.json()["uploaded"].as_bool(), dry.json()["exists"].as_bool()),
        (Some(false), Some(false))
    );
    // Nothing is stored under the key: no location names an object that does not exist.
    assert!(dry.json().get("location").is_none(), "{}", dry.json());
    assert!(app.stored().is_empty());
    app.assert_no_temp_files();

    let real = app.post(URI, bundle.clone()).await.json();
    let again = app.post(&format!("{URI}?dry_run=true"), bundle).await.json();
    assert_eq!((again["exists"].as_bool(), again["key"].clone()), (Some(true), real["key"].clone()));
    assert_eq!(again["location"], real["location"], "a stored key has its location");
}

#[tokio::test]
async fn a_key_holding_other_bytes_is_a_conflict_never_a_success() {
    let app = TestApp::new().await;
    let bundle = basic().tar();
    let key = format!("lambda-orders-api-{}.zip", pack_archive(&bundle).packed.sha256);
    std::fs::create_dir_all(app.store_root()).expect("store dir");
    std::fs::write(app.store_root().join(&key), b"not the package").expect("plant");
    let response = app.post(URI, bundle).await;
    let message = response.assert_error(409, "key_conflict");
    assert!(message.contains(&key), "{message}");
    assert_eq!(app.stored()[&key], b"not the package", "the existing object is untouched");
    app.assert_no_temp_files();
}

#[tokio::test]
async fn prefixes_come_from_the_operator_and_from_requests_only_when_allowed() {
    let app = TestApp::with(|c| c.store.prefix = "lambda/".parse().expect("prefix")).await;
    let bundle = basic().tar();
    let v = app.post(URI, bundle.clone()).await.json();
    assert!(v["key"].as_str().expect("key").starts_with("lambda/lambda-orders-api-"), "{v}");
    app.post(&format!("{URI}?prefix=team/"), bundle.clone()).await.assert_error(403, "prefix_not_allowed");

    let open = TestApp::with(|c| c.store.allow_request_prefix = true).await;
    let v = open.post(&format!("{URI}?prefix=team/ci/"), bundle.clone()).await.json();
    assert!(v["key"].as_str().expect("key").starts_with("team/ci/lambda-orders-api-"), "{v}");
    assert!(open.stored().keys().all(|k| k.starts_with("team/ci/")));
    open.post(&format!("{URI}?prefix=../x/"), bundle).await.assert_error(400, "invalid_prefix");
}

#[tokio::test]
async fn malformed_requests_get_json_errors_and_store_nothing() {
    let app = TestApp::new().await;
    let tar = basic().tar();
    app.post("/v1/functions/bad.name/package", tar.clone()).await.assert_error(400, "invalid_function_name");
    app.post(&format!("{URI}?exlude=*.pyc"), tar.clone()).await.assert_error(400, "invalid_parameter");
    app.post(&format!("{URI}?dry_run=maybe"), tar.clone()).await.assert_error(400, "invalid_parameter");
    app.post(&format!("{URI}?strip_components=-1"), tar.clone()).await.assert_error(400, "invalid_parameter");
    app.post_multipart(URI, &[("path", "lib")], b"").await.assert_error(415, "unsupported_format");
    let (ct, body) = crate::support::app::multipart(&[("colour", "red")], &tar);
    let request = Request::post(URI).header("content-type", ct).body(Body::from(body)).expect("request");
    app.call(request).await.assert_error(400, "invalid_parameter");
    let request = Request::post(URI)
        .header("content-type", "multipart/form-data; boundary=x")
        .body(Body::from("--x\r\ncontent-disposition: form-data; name=\"path\"\r\n\r\nlib\r\n--x--\r\n"))
        .expect("request");
    app.call(request).await.assert_error(400, "missing_bundle");
    let git = Request::post(URI)
        .header("content-type", "application/json")
        .body(Body::from(r#"{"git":{"repo":"https://example.com/r.git","ref":"main"}}"#))
        .expect("request");
    app.call(git).await.assert_error(422, "git_source_disabled");
    let json =
        Request::post(URI).header("content-type", "application/json").body(Body::from("{")).expect("request");
    app.call(json).await.assert_error(400, "invalid_json");
    app.get("/v1/nothing/here").await.assert_error(404, "not_found");
    app.get(URI).await.assert_error(405, "method_not_allowed");
    assert!(app.stored().is_empty());
    app.assert_no_temp_files();
}

/// The HTTP status each input-error code maps to (README's error table).
fn status_of(code: &str) -> u16 {
    match code {
        "unsupported_format" => 415,
        "corrupt_archive" | "invalid_pattern" | "invalid_selection" => 400,
        "header_too_large"
        | "too_many_entries"
        | "unpacked_too_large"
        | "archive_too_large"
        | "compression_ratio_exceeded" => 413,
        _ => 422,
    }
}

#[tokio::test]
async fn every_bad_archive_gets_its_code_raw_and_multipart_and_leaves_nothing_behind() {
    let app = TestApp::new().await;
    for (name, bytes, code) in bad_archives() {
        let raw = app.post(URI, bytes.clone()).await;
        assert_eq!(
            (raw.status.as_u16(), raw.json()["error"]["code"].as_str()),
            (status_of(code), Some(code)),
            "raw {name}"
        );
        let multi = app.post_multipart(URI, &[], &bytes).await;
        assert_eq!(
            (multi.status.as_u16(), multi.json()["error"]["code"].as_str()),
            (status_of(code), Some(code)),
            "multipart {name}"
        );
    }
    assert!(app.stored().is_empty(), "no object for any bad input");
    app.assert_no_temp_files();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_identical_uploads_store_one_object_and_one_uploaded_true() {
    let app = TestApp::new().await;
    let server = app.spawn().await;
    let bundle = mixed().tar_gz();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let bundle = bundle.clone();
            tokio::spawn(async move { http_request(server.addr, "POST", URI, &[], &bundle).await })
        })
        .collect();
    let mut keys = Vec::new();
    let mut uploaded = 0;
    for t in tasks {
        let (status, _, body) = t.await.expect("task");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert!(status == 200 || status == 201, "{status}: {v}");
        uploaded += usize::from(v["uploaded"] == true);
        assert_eq!(v["uploaded"] == true, status == 201);
        keys.push(v["key"].as_str().expect("key").to_owned());
    }
    keys.dedup();
    assert_eq!(keys.len(), 1, "one key for all");
    assert_eq!(uploaded, 1, "exactly one request stored it");
    assert_eq!(app.stored().len(), 1);
    server.stop().await.expect("clean shutdown");
    app.assert_no_temp_files();
}
