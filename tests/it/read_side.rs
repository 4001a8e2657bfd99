//! The read side over HTTP, on both stores (a local folder and a bucket on moto): each test is
//! written once against a [`Rig`] and run on each backend by `read_side_tests!`.

use std::time::{Duration, SystemTime};

use lambda_packager::config::Config;
use lambda_packager::package::{FORMAT_VERSION, Sha256Hex};
use lambda_packager::store::Metadata;
use serde_json::{Value, json};

use crate::api_git::Remote;
use crate::golden::basic;
use crate::support::app::TestApp;
use crate::support::archive::{Member, tar};
use crate::support::git_repo::git;
use crate::support::s3::TestBucket;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Local,
    S3,
}

/// A service on one backend, and a way to write objects behind its back (as an older version
/// of the service, or a damaged disk, would).
pub struct Rig {
    pub app: TestApp,
    bucket: Option<TestBucket>,
}

impl Rig {
    pub async fn new(on: On, edit: impl FnOnce(&mut Config)) -> Self {
        match on {
            On::Local => Self { app: TestApp::with(edit).await, bucket: None },
            On::S3 => {
                let bucket = TestBucket::shared().await;
                let app = TestApp::on_s3(&bucket, edit).await;
                Self { app, bucket: Some(bucket) }
            }
        }
    }

    /// The metadata stored with `key`, read straight from the store's own representation: the
    /// object's `x-amz-meta-*` on S3 (through the SDK), the sidecar file next to it locally.
    pub async fn stored_metadata(&self, key: &str) -> Metadata {
        match &self.bucket {
            Some(bucket) => {
                let head = bucket.store().client().head_object().bucket(bucket.name()).key(key).send().await;
                head.unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"))
                    .metadata
                    .unwrap_or_default()
                    .into_iter()
                    .collect()
            }
            None => {
                let path = self.app.store_root().join(key);
                let name = path.file_name().and_then(|n| n.to_str()).expect("a file name");
                let sidecar = path.with_file_name(format!(".{name}.metadata.json"));
                serde_json::from_slice(&std::fs::read(&sidecar).expect("the sidecar")).expect("sidecar JSON")
            }
        }
    }

    /// Writes `bytes` under `key` straight into the store, with no metadata and nothing else.
    pub async fn put_raw(&self, key: &str, bytes: &[u8]) {
        match &self.bucket {
            Some(bucket) => {
                let store = bucket.store();
                let put =
                    store.client().put_object().bucket(bucket.name()).key(key).body(bytes.to_vec().into());
                put.send().await.unwrap_or_else(|e| panic!("writing {key}: {e:?}"));
            }
            None => {
                let path = self.app.store_root().join(key);
                std::fs::create_dir_all(path.parent().expect("a parent")).expect("the key's folder");
                std::fs::write(&path, bytes).expect("writing the object");
            }
        }
    }

    /// POSTs `bundle` for `function`; returns the answer's key.
    pub async fn publish(&self, function: &str, bundle: Vec<u8>) -> String {
        let r = self.app.post(&format!("/v1/functions/{function}/package"), bundle).await;
        assert!(r.status.is_success(), "{}", String::from_utf8_lossy(&r.body));
        r.json()["key"].as_str().expect("key").to_owned()
    }

    /// `GET /v1/artifacts/{key}`, which must answer 200.
    pub async fn detail(&self, key: &str) -> Value {
        let r = self.app.get(&format!("/v1/artifacts/{}", key.replace('/', "%2F"))).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }
}

/// One `#[tokio::test]` per backend and test.
macro_rules! read_side_tests {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::On::Local).await;
                }
            )*
        }

        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::On::S3).await;
                }
            )*
        }
    };
}

read_side_tests!(
    a_corrupt_object_answers_artifact_corrupt_on_metadata_manifest_and_diff,
    provenance_of_tar_gz_zip_and_git_packages_is_stored_with_the_object_and_read_back,
    an_object_stored_without_provenance_reads_with_provenance_null,
);

async fn a_corrupt_object_answers_artifact_corrupt_on_metadata_manifest_and_diff(on: On) {
    let rig = Rig::new(on, |_| {}).await;
    let good = rig.publish("fn", basic().tar()).await;
    let zip = crate::support::pack_archive(&tar(&[Member::file("a.py", "x = 1\n")])).bytes;
    // No end-of-central-directory record at all; then a zip whose end record is intact but
    // whose central directory was overwritten.
    let garbage = b"these bytes were never a zip".repeat(8);
    let mut damaged = zip.clone();
    let end = damaged.len() - 22;
    let cd_offset = u32::from_le_bytes(damaged[end + 16..end + 20].try_into().expect("4 bytes")) as usize;
    damaged[cd_offset..end].fill(0x5a);
    for (n, bytes) in [garbage, damaged].into_iter().enumerate() {
        let key = format!("lambda-fn-{}.zip", format!("{n}").repeat(64));
        rig.put_raw(&key, &bytes).await;
        let message =
            rig.app.get(&format!("/v1/artifacts/{key}")).await.assert_error(502, "artifact_corrupt");
        assert!(message.contains(&key), "the message names the key: {message}");
        rig.app.get(&format!("/v1/artifacts/{key}/diff/{good}")).await.assert_error(502, "artifact_corrupt");
        rig.app.get(&format!("/v1/artifacts/{good}/diff/{key}")).await.assert_error(502, "artifact_corrupt");
        // The bytes are still served as they are: the store holds them, the service only
        // refuses to read a manifest out of them.
        let download = rig.app.get(&format!("/v1/artifacts/{key}/zip")).await;
        assert_eq!((download.status.as_u16(), download.body.as_ref()), (200, bytes.as_slice()));
    }
    // A good package still reads fine.
    let detail = rig.app.get(&format!("/v1/artifacts/{good}")).await;
    assert_eq!(detail.status, 200, "{}", String::from_utf8_lossy(&detail.body));
}

/// `created` parses as RFC 3339 and lies between `before` and `after` (with the millisecond
/// the format rounds to).
#[track_caller]
fn assert_created_between(provenance: &Value, before: SystemTime, after: SystemTime) {
    let created = provenance["created"].as_str().expect("created");
    let t = humantime::parse_rfc3339(created).unwrap_or_else(|e| panic!("{created}: {e}"));
    assert!(
        t + Duration::from_millis(1) >= before && t <= after,
        "created {created} is not within the request"
    );
}

async fn provenance_of_tar_gz_zip_and_git_packages_is_stored_with_the_object_and_read_back(on: On) {
    let remote = Remote::new();
    let mirrors = tempfile::tempdir().expect("temp dir");
    let (prefix, mirror_dir) = (remote.server.base_url(), mirrors.path().to_owned());
    let rig = Rig::new(on, move |c| {
        c.git.allowed_remotes = vec![format!("{prefix}/")];
        c.git.allow_insecure_http = true;
        c.git.mirror_dir = mirror_dir;
    })
    .await;
    let version = env!("CARGO_PKG_VERSION");

    // A raw tar.gz: its own digest is the source's.
    let tar_gz = basic().tar_gz();
    let before = SystemTime::now();
    let key = rig.publish("fn", tar_gz.clone()).await;
    let after = SystemTime::now();
    let provenance = rig.detail(&key).await["provenance"].clone();
    assert_created_between(&provenance, before, after);
    let expected = json!({
        "format_version": FORMAT_VERSION,
        "packager_version": version,
        "input_format": "tar.gz",
        "source_sha256": Sha256Hex::of_bytes(&tar_gz).to_string(),
        "git": null,
        "created": provenance["created"],
        "created_by": null,
    });
    assert_eq!(provenance, expected);
    // Stored with the object in the store's own form, not only in the service's memory.
    let stored = rig.stored_metadata(&key).await;
    assert_eq!(stored.get("lp-input-format").map(String::as_str), Some("tar.gz"));
    assert_eq!(stored.get("lp-source-sha256"), Some(&Sha256Hex::of_bytes(&tar_gz).to_string()));

    // The same tree again, as a zip in a multipart body: the key exists, so the first
    // provenance stays (the object is never rewritten).
    let zip = basic().zip();
    let (content_type, body) = crate::support::app::multipart(&[], &zip);
    let request = axum::http::Request::post("/v1/functions/fn/package")
        .header("content-type", content_type)
        .body(axum::body::Body::from(body))
        .expect("a request");
    let again = rig.app.call(request).await;
    assert_eq!((again.status.as_u16(), again.json()["key"].as_str()), (200, Some(key.as_str())));
    assert_eq!(rig.detail(&key).await["provenance"], expected, "a re-post keeps the first provenance");

    // A new zip, in a multipart body: the digest is the bundle part's, not the body's.
    let new_zip = crate::support::Fixture::new().file("a.py", "x = 2\n").exec("run.sh", "#!/bin/sh\n").zip();
    let (content_type, body) = crate::support::app::multipart(&[("exclude", "nothing")], &new_zip);
    let request = axum::http::Request::post("/v1/functions/fn/package")
        .header("content-type", content_type)
        .body(axum::body::Body::from(body))
        .expect("a request");
    let created = rig.app.call(request).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let zip_key = created.json()["key"].as_str().expect("key").to_owned();
    let provenance = rig.detail(&zip_key).await["provenance"].clone();
    assert_eq!(provenance["input_format"], "zip");
    assert_eq!(provenance["source_sha256"], Sha256Hex::of_bytes(&new_zip).to_string().as_str());
    assert_eq!(provenance["git"], Value::Null);

    // A git commit: repo, ref, commit and path; no source digest.
    let head = git(remote.repo.path(), &["rev-parse", "HEAD"]).trim().to_owned();
    let body = json!({"git": {"repo": remote.url(), "ref": "main", "path": "lambdas/orders"}});
    let request = axum::http::Request::post("/v1/functions/orders/package")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("a request");
    let before = SystemTime::now();
    let created = rig.app.call(request).await;
    let after = SystemTime::now();
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let git_key = created.json()["key"].as_str().expect("key").to_owned();
    let provenance = rig.detail(&git_key).await["provenance"].clone();
    assert_created_between(&provenance, before, after);
    assert_eq!(provenance["input_format"], "git");
    assert_eq!(provenance["source_sha256"], Value::Null);
    assert_eq!(
        provenance["git"],
        json!({"repo": remote.url(), "ref": "main", "commit": head, "path": "lambdas/orders"})
    );
    assert_eq!(rig.stored_metadata(&git_key).await.get("lp-git-commit"), Some(&head));
}

async fn an_object_stored_without_provenance_reads_with_provenance_null(on: On) {
    let rig = Rig::new(on, |_| {}).await;
    // What an earlier version stored: the canonical zip under its key, and no metadata.
    let built = crate::support::pack_archive(&basic().tar());
    let key = format!("lambda-fn-{}.zip", built.packed.sha256);
    rig.put_raw(&key, &built.bytes).await;
    let detail = rig.detail(&key).await;
    assert_eq!(detail["provenance"], Value::Null);
    assert_eq!(detail["files"].as_u64(), Some(built.packed.files));
    assert_eq!(detail["size"].as_u64(), Some(built.packed.size));
    // A re-post of its source finds it, and does not rewrite it.
    let again = rig.app.post("/v1/functions/fn/package", basic().tar()).await;
    assert_eq!((again.status.as_u16(), again.json()["uploaded"].clone()), (200, Value::Bool(false)));
    assert_eq!(rig.detail(&key).await["provenance"], Value::Null);
}
