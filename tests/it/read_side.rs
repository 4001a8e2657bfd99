//! The read side over HTTP, on both stores (a local folder and a bucket on moto): each test is
//! written once against a [`Rig`] and run on each backend by `read_side_tests!`.

use crate::golden::basic;
use crate::support::app::TestApp;
use crate::support::archive::{Member, tar};
use crate::support::s3::TestBucket;

/// A service on one backend, and a way to write objects behind its back (as an older version
/// of the service, or a damaged disk, would).
pub struct Rig {
    pub app: TestApp,
    bucket: Option<TestBucket>,
}

impl Rig {
    pub async fn local(edit: impl FnOnce(&mut lambda_packager::config::Config)) -> Self {
        Self { app: TestApp::with(edit).await, bucket: None }
    }

    pub async fn s3(edit: impl FnOnce(&mut lambda_packager::config::Config)) -> Self {
        let bucket = TestBucket::shared().await;
        let app = TestApp::on_s3(&bucket, edit).await;
        Self { app, bucket: Some(bucket) }
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
}

/// One `#[tokio::test]` per backend and test.
macro_rules! read_side_tests {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Rig::local(|_| {}).await).await;
                }
            )*
        }

        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Rig::s3(|_| {}).await).await;
                }
            )*
        }
    };
}

read_side_tests!(a_corrupt_object_answers_artifact_corrupt_on_metadata_manifest_and_diff);

async fn a_corrupt_object_answers_artifact_corrupt_on_metadata_manifest_and_diff(rig: Rig) {
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
