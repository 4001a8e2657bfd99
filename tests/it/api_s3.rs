//! The service on S3 (a real moto server over HTTP): stored once under the content key with a
//! checksum, the same key from racing replicas, conflicts, outages and ranged manifest reads.

use lambda_packager::package::Sha256Hex;
use serde_json::Value;

use crate::golden::{basic, mixed};
use crate::support::app::{TestApp, http_request};
use crate::support::archive::{Member, tar};
use crate::support::s3::{MotoServer, TestBucket};
use crate::support::{noise, pack_archive};
use lambda_packager::package::MEMORY_SPOOL_BYTES;

const URI: &str = "/v1/functions/orders/package";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_is_stored_once_in_the_bucket_with_a_cloudformation_code_block() {
    let bucket = TestBucket::shared().await;
    let app = TestApp::on_s3(&bucket, |c| c.store.prefix = "lambda/".parse().expect("prefix")).await;
    let bundle = mixed().tar_gz();
    let expected = pack_archive(&bundle);
    let key = format!("lambda/lambda-orders-{}.zip", expected.packed.sha256);

    let first = app.post(URI, bundle.clone()).await;
    assert_eq!(first.status, 201, "{}", String::from_utf8_lossy(&first.body));
    let v = first.json();
    assert_eq!(v["key"], key.as_str());
    assert_eq!(v["bucket"], bucket.name());
    assert_eq!(v["location"], format!("s3://{}/{key}", bucket.name()).as_str());
    assert_eq!(v["code"], serde_json::json!({"S3Bucket": bucket.name(), "S3Key": key}));
    assert_eq!(bucket.keys().await, std::slice::from_ref(&key));

    let again = app.post(URI, bundle).await;
    assert_eq!((again.status.as_u16(), again.json()["uploaded"].clone()), (200, Value::Bool(false)));

    // The bytes in the bucket are the canonical zip, and the manifest comes from ranged reads.
    let encoded = key.replace('/', "%2F");
    let zip = app.get(&format!("/v1/artifacts/{encoded}/zip")).await;
    assert_eq!(zip.body.as_ref(), expected.bytes.as_slice());
    assert_eq!(Sha256Hex::of_bytes(&zip.body), expected.packed.sha256);
    let detail = app.get(&format!("/v1/artifacts/{encoded}")).await.json();
    assert_eq!(detail["files"], 49);
    let listed = app.get("/v1/functions/orders/artifacts").await.json();
    assert_eq!(listed["artifacts"][0]["key"], key.as_str());
    app.assert_no_temp_files();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_past_the_memory_limit_is_uploaded_from_its_temp_file_byte_for_byte() {
    let bucket = TestBucket::shared().await;
    let app = TestApp::on_s3(&bucket, |c| c.store.prefix = "big/".parse().expect("prefix")).await;
    let bundle = tar(&[Member::file("model.bin", noise(1_500_000, 9)), Member::file("a.py", "x = 1\n")]);
    let expected = pack_archive(&bundle);
    assert!(expected.packed.size > MEMORY_SPOOL_BYTES as u64, "staged in a temp file, not in memory");
    let key = format!("big/lambda-orders-{}.zip", expected.packed.sha256);
    let answer = app.post(URI, bundle).await;
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["key"], key.as_str());
    assert_eq!(bucket.keys().await, std::slice::from_ref(&key));
    let zip = app.get(&format!("/v1/artifacts/{}/zip", key.replace('/', "%2F"))).await;
    assert_eq!(zip.body.as_ref(), expected.bytes.as_slice());
    app.assert_no_temp_files();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_uploads_racing_on_three_replicas_store_one_object() {
    let bucket = TestBucket::shared().await;
    let replicas = [
        TestApp::on_s3(&bucket, |_| {}).await,
        TestApp::on_s3(&bucket, |_| {}).await,
        TestApp::on_s3(&bucket, |_| {}).await,
    ];
    let mut servers = Vec::new();
    for r in &replicas {
        servers.push(r.spawn().await);
    }
    let bundle = basic().tar_gz();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (addr, bundle) = (servers[i % 3].addr, bundle.clone());
            tokio::spawn(async move { http_request(addr, "POST", URI, &[], &bundle).await })
        })
        .collect();
    let mut keys = Vec::new();
    let mut created = 0;
    for t in tasks {
        let (status, _, body) = t.await.expect("task");
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert!(status == 200 || status == 201, "{status}: {v}");
        created += usize::from(status == 201);
        assert_eq!(v["uploaded"] == true, status == 201);
        keys.push(v["key"].as_str().expect("key").to_owned());
    }
    keys.dedup();
    assert_eq!(keys.len(), 1, "every answer carries the same key");
    assert_eq!(created, 1, "exactly one request stored it");
    assert_eq!(bucket.keys().await, keys, "one object");
    for s in servers {
        s.stop().await.expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_holding_other_bytes_in_the_bucket_is_a_conflict() {
    let bucket = TestBucket::shared().await;
    let app = TestApp::on_s3(&bucket, |_| {}).await;
    let bundle = basic().tar();
    let key = format!("lambda-orders-{}.zip", pack_archive(&bundle).packed.sha256);
    bucket
        .store()
        .client()
        .put_object()
        .bucket(bucket.name())
        .key(&key)
        .body(b"something else".to_vec().into())
        .send()
        .await
        .expect("plant an object");
    let message = app.post(URI, bundle).await.assert_error(409, "key_conflict");
    assert!(message.contains(&key));
    assert_eq!(bucket.keys().await, [key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_on_s3_stores_nothing() {
    let bucket = TestBucket::shared().await;
    let app = TestApp::on_s3(&bucket, |_| {}).await;
    let v = app.post(&format!("{URI}?dry_run=true"), basic().tar()).await.json();
    assert_eq!((v["uploaded"].clone(), v["exists"].clone()), (Value::Bool(false), Value::Bool(false)));
    // Neither a location nor a CloudFormation `Code` block for an object that does not exist.
    assert_eq!((v.get("location"), &v["code"]), (None, &Value::Null), "{v}");
    assert!(bucket.keys().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_store_answers_503_with_retry_after_then_recovers() {
    let mut server = tokio::task::spawn_blocking(MotoServer::start).await.expect("moto");
    let bucket = TestBucket::create(&server).await;
    let app = TestApp::on_s3(&bucket, |_| {}).await;
    let bundle = basic().tar();
    server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .expect("stop");
    let down = app.post(URI, bundle.clone()).await;
    down.assert_error(503, "store_unavailable");
    assert_eq!(down.headers["retry-after"], "5");
    app.get("/readyz").await.assert_error(503, "store_unavailable");
    app.assert_no_temp_files();

    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .expect("restart");
    bucket.recreate().await;
    assert_eq!(app.post(URI, bundle).await.status, 201, "recovered once the store is back");
    assert_eq!(app.get("/readyz").await.status, 200);
    drop(bucket);
    drop(server);
}
