//! The read side over HTTP, on both stores (a local folder and a bucket on moto): each test is
//! written once against a [`Rig`] and run on each backend by `read_side_tests!`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use lambda_packager::config::Config;
use lambda_packager::package::{FORMAT_VERSION, Sha256Hex};
use lambda_packager::store::Metadata;
use serde_json::{Value, json};

use crate::api_git::Remote;
use crate::golden::basic;
use crate::support::app::TestApp;
use crate::support::archive::{Member, tar};
use crate::support::fault_proxy::{FaultProxy, Kind};
use crate::support::git_repo::git;
use crate::support::s3::TestBucket;
use lambda_packager::packages::{Packages, Row};
use lambda_packager::store::config::S3StoreConfig;
use lambda_packager::store::key::{FunctionName, KeyPrefix, ObjectKey};

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Local,
    S3,
}

/// A service on one backend, and a way to write objects behind its back (as an older version
/// of the service, or a damaged disk, would). On S3 the service talks to moto through a
/// fault proxy that injects nothing and counts every request, by kind.
pub struct Rig {
    pub app: TestApp,
    bucket: Option<TestBucket>,
    pub proxy: Option<FaultProxy>,
}

impl Rig {
    pub async fn new(on: On, edit: impl FnOnce(&mut Config)) -> Self {
        match on {
            On::Local => Self { app: TestApp::with(edit).await, bucket: None, proxy: None },
            On::S3 => {
                let bucket = TestBucket::shared().await;
                let proxy =
                    FaultProxy::to_endpoint(bucket.config().endpoint.as_deref().expect("moto's endpoint"));
                let config = S3StoreConfig { endpoint: Some(proxy.endpoint()), ..bucket.config() };
                let store = crate::support::s3::store_for(&config);
                let app = TestApp::on_s3_store(config, store, edit);
                Self { app, bucket: Some(bucket), proxy: Some(proxy) }
            }
        }
    }

    /// The keys of every package stored (the listing index aside), sorted.
    pub async fn package_keys(&self) -> Vec<String> {
        match &self.bucket {
            Some(bucket) => bucket.keys().await,
            None => self.app.stored().into_keys().collect(),
        }
    }

    /// A rig whose service takes git requests for `remote`, its mirrors in `mirrors`.
    pub async fn with_git(on: On, remote: &Remote, mirrors: &std::path::Path) -> Self {
        let (prefix, mirror_dir) = (remote.server.base_url(), mirrors.to_owned());
        Self::new(on, move |c| {
            c.git.allowed_remotes = vec![format!("{prefix}/")];
            c.git.allow_insecure_http = true;
            c.git.mirror_dir = mirror_dir;
        })
        .await
    }

    /// POSTs a JSON git request for `function`.
    pub async fn post_git(&self, function: &str, body: &Value) -> crate::support::app::TestResponse {
        let request = axum::http::Request::post(format!("/v1/functions/{function}/package"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .expect("a request");
        self.app.call(request).await
    }

    /// The packages service.
    pub fn packages(&self) -> &Packages {
        &self.app.state.packages
    }

    /// Every key of the listing index, sorted.
    pub async fn index_keys(&self) -> Vec<String> {
        match &self.bucket {
            Some(bucket) => bucket.index_keys().await,
            None => {
                let root = self.app.store_root();
                let mut keys: Vec<String> = crate::faults::files_under(&root)
                    .into_iter()
                    .map(|p| p.strip_prefix(&root).expect("under root").to_string_lossy().into_owned())
                    .filter(|k| k.split('/').any(|c| c == ".lambda-packager"))
                    .collect();
                keys.sort();
                keys
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
    the_functions_list_pages_by_name_with_counts_and_the_newest_package,
    newest_first_paging_past_ten_thousand_packages_has_no_duplicates_or_gaps,
    packages_are_found_by_a_prefix_of_their_commit_or_by_the_digest_of_their_upload,
    the_latest_package_is_the_newest_and_a_function_without_packages_is_404,
    packages_stored_before_the_index_are_listed_after_the_others_and_counted,
    a_re_posted_package_is_listed_once,
    named_tokens_are_limited_to_their_scopes_and_functions_and_sign_what_they_store,
    request_prefixed_packages_are_listed_with_their_whole_keys,
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
    let rig = Rig::with_git(on, &remote, mirrors.path()).await;
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
    let before = SystemTime::now();
    let created = rig.post_git("orders", &body).await;
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

/// A tar with one file whose content is `n`: a new package for every `n`.
fn numbered(n: usize) -> Vec<u8> {
    tar(&[Member::file("n.txt", n.to_string())])
}

fn keys_of(page: &Value) -> Vec<String> {
    page["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .map(|a| a["key"].as_str().expect("key").to_owned())
        .collect()
}

/// Every page of `uri` (which has a query string), following `next_cursor`; each page's JSON.
async fn all_pages(app: &TestApp, uri: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut next = app.get(uri).await;
    loop {
        assert_eq!(next.status, 200, "{}", String::from_utf8_lossy(&next.body));
        let page = next.json();
        let cursor = page["next_cursor"].as_str().map(str::to_owned);
        pages.push(page);
        match cursor {
            Some(cursor) => next = app.get(&format!("{uri}&cursor={cursor}")).await,
            None => return pages,
        }
    }
}

async fn the_functions_list_pages_by_name_with_counts_and_the_newest_package(on: On) {
    let rig = Rig::new(on, |_| {}).await;
    let mut newest = BTreeMap::new();
    for (i, function) in
        ["orders", "billing", "orders", "orders-api", "a_fn", "billing", "orders"].iter().enumerate()
    {
        newest.insert(*function, rig.publish(function, numbered(i)).await);
    }
    let before = rig.packages().store_requests();
    let pages = all_pages(&rig.app, "/v1/functions?limit=2").await;
    let requests = rig.packages().store_requests().since(&before);
    let listed: Vec<(String, u64, String)> = pages
        .iter()
        .flat_map(|p| p["functions"].as_array().expect("functions").clone())
        .map(|f| {
            let latest = &f["latest"];
            assert!(latest["created"].as_str().expect("created").ends_with('Z'), "{f}");
            (
                f["function"].as_str().expect("name").to_owned(),
                f["packages"].as_u64().expect("count"),
                latest["key"].as_str().expect("key").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, u64, String)> =
        [("a_fn", 1), ("billing", 2), ("orders", 3), ("orders-api", 1)]
            .iter()
            .map(|(f, n)| ((*f).to_owned(), *n, newest[f].clone()))
            .collect();
    assert_eq!(listed, expected, "sorted by name, each once, with its count and newest package");
    assert_eq!(pages.len(), 2);
    // One LIST for the names of a page, then at most two LISTs and two GETs per function.
    assert!(requests.list <= 2 * (1 + 2 * 2) && requests.get <= 2 * 2 * 2, "{requests:?}");
    rig.app.get("/v1/functions?limit=0").await.assert_error(400, "invalid_parameter");
    rig.app.get("/v1/functions?cursor=%21%21").await.assert_error(400, "invalid_cursor");
    rig.app.get("/v1/functions?sort=name").await.assert_error(400, "invalid_request");
}

/// Rows seeded straight into a function's log, `count` of them in runs of `run` (one slot
/// each): what an import through the indexing entry point writes.
async fn seed(packages: &Packages, function: &str, count: usize, run: usize) -> Vec<String> {
    let function: FunctionName = function.parse().expect("a name");
    let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let rows: Vec<Row> = (0..count)
        .map(|i| Row {
            key: ObjectKey::package(&KeyPrefix::default(), &function, Sha256Hex::of_bytes(&i.to_le_bytes())),
            size: i as u64,
            files: Some(1),
            created: created + Duration::from_millis(i as u64),
            created_by: Some("import".into()),
            format: Some("zip".into()),
            commit: None,
            source_sha256: None,
            version_id: None,
        })
        .collect();
    for chunk in rows.chunks(run) {
        // Newest first within a slot, as every slot holds them.
        packages.append_rows(&function, chunk.iter().rev().cloned().collect()).await.expect("append");
    }
    rows.iter().rev().map(|r| r.key.to_string()).collect()
}

async fn newest_first_paging_past_ten_thousand_packages_has_no_duplicates_or_gaps(on: On) {
    // Seven names per store listing request: pages cross many of them.
    let rig = Rig::new(on, |c| c.store.list_page_size = 7).await;
    // Two packages an earlier version stored, found by the scan.
    let legacy: Vec<String> = (0..2)
        .map(|i| format!("lambda-big-{}.zip", Sha256Hex::of_bytes(format!("legacy {i}").as_bytes())))
        .collect();
    for key in &legacy {
        rig.put_raw(key, b"an older package").await;
    }
    let report = rig.packages().backfill_legacy().await.expect("the scan");
    assert_eq!((report.packages, report.functions), (2, 1));
    // 10,000 packages imported in runs of 250, then one posted.
    let seeded = seed(rig.packages(), "big", 10_000, 250).await;
    let posted = rig.publish("big", numbered(1)).await;

    let limit = 100;
    let mut keys: Vec<String> = Vec::new();
    let mut uri = format!("/v1/functions/big/artifacts?limit={limit}");
    let mut pages = 0;
    let mut worst = lambda_packager::store::RequestCounts::default();
    loop {
        let (before, wire) = (rig.packages().store_requests(), rig.wire_reads());
        let response = rig.app.get(&uri).await;
        let cost = rig.packages().store_requests().since(&before);
        let wire = rig.wire_reads().zip(wire).map(|(after, before)| after - before);
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
        let page = response.json();
        pages += 1;
        // A page costs what its size allows, however many packages there are: every slot
        // holds a row at least, and a store listing request returns seven slots here.
        assert!(cost.get <= limit as u64 + 8, "page {pages}: {cost:?}");
        assert!(cost.list <= (limit as u64 + 1).div_ceil(7) + 2, "page {pages}: {cost:?}");
        assert_eq!(cost.put + cost.head, 0, "a listing writes nothing: {cost:?}");
        if let Some(wire) = wire {
            assert_eq!(wire, cost.get + cost.list, "page {pages}: the requests the proxy saw");
        }
        worst = if cost.total() > worst.total() { cost } else { worst };
        let page_keys = keys_of(&page);
        assert!(page_keys.len() <= limit);
        keys.extend(page_keys);
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/functions/big/artifacts?limit={limit}&cursor={cursor}"),
            None => break,
        }
    }
    eprintln!("{pages} pages of {limit}; the most expensive page: {worst:?}");
    let mut expected = vec![posted.clone()];
    expected.extend(seeded);
    let mut legacy_newest_first = legacy.clone();
    legacy_newest_first.reverse();
    // Legacy rows: newest first by the store's time, then by key; both were written in the
    // same moment or one after the other, so compare them as a set in the last two places.
    let (head, tail) = keys.split_at(keys.len() - 2);
    assert_eq!(head, expected.as_slice(), "newest first: the posted package, then the imported ones");
    let mut tail = tail.to_vec();
    tail.sort();
    let mut legacy_sorted = legacy.clone();
    legacy_sorted.sort();
    assert_eq!(tail, legacy_sorted, "the older packages last");
    assert_eq!(keys.len(), 10_003);
    assert_eq!(pages, 101);
    let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no duplicates");

    let functions = rig.app.get("/v1/functions").await.json();
    assert_eq!(functions["functions"][0]["packages"], 10_003, "{functions}");
    assert_eq!(functions["functions"][0]["latest"]["key"], posted.as_str());
    assert_eq!(rig.app.get("/v1/functions/big/latest").await.json()["key"], posted.as_str());
}

impl Rig {
    /// Listing and GET requests on the index the proxy has seen (S3 only).
    fn wire_reads(&self) -> Option<u64> {
        self.proxy.as_ref().map(|p| u64::from(p.seen(Kind::IndexList) + p.seen(Kind::IndexGet)))
    }
}

async fn packages_are_found_by_a_prefix_of_their_commit_or_by_the_digest_of_their_upload(on: On) {
    let remote = Remote::new();
    let mirrors = tempfile::tempdir().expect("temp dir");
    let rig = Rig::with_git(on, &remote, mirrors.path()).await;
    let post_git = |path: &'static str| {
        let body = json!({"git": {"repo": remote.url(), "ref": "main", "path": path}});
        let rig = &rig;
        async move {
            let r = rig.post_git("orders", &body).await;
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            r.json()["key"].as_str().expect("key").to_owned()
        }
    };
    // Two packages of commit A (two directories of it), one of commit B.
    let a = git(remote.repo.path(), &["rev-parse", "HEAD"]).trim().to_owned();
    let a_orders = post_git("lambdas/orders").await;
    let a_billing = post_git("services/billing").await;
    remote.repo.write("lambdas/orders/handler.py", b"def handler(e, c):\n    return 2\n");
    remote.repo.commit("second");
    let b = git(remote.repo.path(), &["rev-parse", "HEAD"]).trim().to_owned();
    let b_orders = post_git("lambdas/orders").await;
    // And an upload.
    let upload = numbered(7);
    let uploaded = rig.publish("orders", upload.clone()).await;

    let by_commit = |digits: &str| format!("/v1/functions/orders/artifacts?limit=1&commit={digits}");
    for digits in [&a[..7], &a[..], &a.to_ascii_uppercase()[..12]] {
        let pages = all_pages(&rig.app, &by_commit(digits)).await;
        let keys: Vec<String> = pages.iter().flat_map(keys_of).collect();
        assert_eq!(keys, [a_billing.clone(), a_orders.clone()], "commit {digits}: newest first, a page each");
        for page in &pages {
            assert_eq!(page["artifacts"][0]["commit"], a.as_str());
        }
    }
    let pages = all_pages(&rig.app, &by_commit(&b[..9])).await;
    assert_eq!(pages.iter().flat_map(keys_of).collect::<Vec<_>>(), std::slice::from_ref(&b_orders));
    let none = rig.app.get("/v1/functions/orders/artifacts?commit=0000000").await.json();
    assert_eq!((none["artifacts"].clone(), none["next_cursor"].clone()), (json!([]), Value::Null));

    let digest = Sha256Hex::of_bytes(&upload).to_string();
    for spelled in [digest.clone(), digest.to_ascii_uppercase()] {
        let found =
            rig.app.get(&format!("/v1/functions/orders/artifacts?source_sha256={spelled}")).await.json();
        assert_eq!(keys_of(&found), std::slice::from_ref(&uploaded));
        assert_eq!(found["artifacts"][0]["source_sha256"], digest.as_str());
    }
    // Unfiltered: every package, newest first.
    let all = rig.app.get("/v1/functions/orders/artifacts").await.json();
    assert_eq!(keys_of(&all), [uploaded, b_orders, a_billing, a_orders]);

    for bad in [
        "commit=abc",
        "commit=xyz1234",
        &format!("commit={}0", a),
        "source_sha256=abc",
        &format!("commit={a}&source_sha256={digest}"),
    ] {
        rig.app
            .get(&format!("/v1/functions/orders/artifacts?{bad}"))
            .await
            .assert_error(400, "invalid_parameter");
    }
    rig.app
        .get(&format!("{}&cursor=bm90LW91cnM", by_commit(&a[..7])))
        .await
        .assert_error(400, "invalid_cursor");
}

async fn the_latest_package_is_the_newest_and_a_function_without_packages_is_404(on: On) {
    let rig = Rig::new(on, |_| {}).await;
    rig.app.get("/v1/functions/fn/latest").await.assert_error(404, "artifact_not_found");
    let first = rig.publish("fn", numbered(1)).await;
    assert_eq!(rig.app.get("/v1/functions/fn/latest").await.json()["key"], first.as_str());
    let second = rig.publish("fn", numbered(2)).await;
    let latest = rig.app.get("/v1/functions/fn/latest").await.json();
    assert_eq!(latest["key"], second.as_str());
    assert_eq!((latest["format"].as_str(), latest["files"].as_u64()), (Some("tar"), Some(1)));
    // A re-post of the first does not make it the newest: it is the same package.
    rig.publish("fn", numbered(1)).await;
    assert_eq!(rig.app.get("/v1/functions/fn/latest").await.json()["key"], second.as_str());
    rig.app.get("/v1/functions/fn-other/latest").await.assert_error(404, "artifact_not_found");
    rig.app.get("/v1/functions/not%20a%20name/latest").await.assert_error(400, "invalid_function_name");
}

async fn packages_stored_before_the_index_are_listed_after_the_others_and_counted(on: On) {
    let rig = Rig::new(on, |c| c.store.list_page_size = 2).await;
    // What an earlier version left: packages of `fn` (one under a request prefix), one of
    // `other`, and objects that are no package at all.
    let sha = |s: &str| Sha256Hex::of_bytes(s.as_bytes());
    let legacy = [
        format!("lambda-fn-{}.zip", sha("1")),
        format!("lambda-fn-{}.zip", sha("2")),
        format!("ci/lambda-fn-{}.zip", sha("3")),
        format!("lambda-other-{}.zip", sha("4")),
    ];
    for key in &legacy {
        rig.put_raw(key, b"older bytes").await;
    }
    rig.put_raw("notes.txt", b"not a package").await;
    rig.put_raw("lambda-fn-nothex.zip", b"not a package key").await;
    let report = rig.packages().backfill_legacy().await.expect("the scan");
    assert_eq!((report.already_done, report.packages, report.functions), (false, 4, 2));
    let again = rig.packages().backfill_legacy().await.expect("the scan, again");
    assert!(again.already_done, "the scan runs once");

    let new = rig.publish("fn", numbered(1)).await;
    let listed = rig.app.get("/v1/functions/fn/artifacts").await.json();
    let keys = keys_of(&listed);
    assert_eq!(keys[0], new, "the new package first");
    let mut older: Vec<String> = keys[1..].to_vec();
    older.sort();
    let mut expected: Vec<String> = legacy[..3].to_vec();
    expected.sort();
    assert_eq!(older, expected, "then the older ones, request-prefixed included");
    let rows = listed["artifacts"].as_array().expect("rows");
    let created: Vec<&str> = rows[1..].iter().map(|r| r["created"].as_str().expect("created")).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first: {created:?}");
    for row in &rows[1..] {
        assert_eq!(
            (row["files"].clone(), row["format"].clone(), row["created_by"].clone()),
            (Value::Null, Value::Null, Value::Null),
            "{row}"
        );
        assert_eq!(row["size"], 11);
    }
    let functions = rig.app.get("/v1/functions").await.json();
    let counts: Vec<(String, u64)> = functions["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| (f["function"].as_str().expect("name").to_owned(), f["packages"].as_u64().expect("count")))
        .collect();
    assert_eq!(counts, [("fn".to_owned(), 4), ("other".to_owned(), 1)]);
    assert_eq!(functions["functions"][0]["latest"]["key"], new.as_str());
    assert_eq!(rig.app.get("/v1/functions/other/latest").await.json()["key"], legacy[3].as_str());

    // An older version's package stored after the scan (a replica not yet upgraded): not
    // listed until it is posted again, which indexes it.
    let built = crate::support::pack_archive(&numbered(2));
    let straggler = format!("lambda-fn-{}.zip", built.packed.sha256);
    rig.put_raw(&straggler, &built.bytes).await;
    assert!(!keys_of(&rig.app.get("/v1/functions/fn/artifacts").await.json()).contains(&straggler));
    let again = rig.app.post("/v1/functions/fn/package", numbered(2)).await;
    assert_eq!((again.status.as_u16(), again.json()["uploaded"].clone()), (200, Value::Bool(false)));
    let keys = keys_of(&rig.app.get("/v1/functions/fn/artifacts").await.json());
    assert_eq!(keys[0], straggler, "indexed by the re-post, as the newest");
    assert_eq!(keys.len(), 5);
    assert_eq!(rig.app.get("/v1/functions").await.json()["functions"][0]["packages"], 5);
}

async fn a_re_posted_package_is_listed_once(on: On) {
    let rig = Rig::new(on, |_| {}).await;
    // Eight requests at once for one new package, then the same tree as a zip.
    let bundle = numbered(3);
    let answers = futures_util::future::join_all(
        (0..8).map(|_| rig.app.post("/v1/functions/fn/package", bundle.clone())),
    )
    .await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    assert_eq!(created, 1, "stored once");
    let key = answers[0].json()["key"].as_str().expect("key").to_owned();
    let zip = crate::support::Fixture::new().file("n.txt", "3").zip();
    assert_eq!(rig.app.post("/v1/functions/fn/package", zip).await.json()["key"], key.as_str());
    let listed = rig.app.get("/v1/functions/fn/artifacts").await.json();
    assert_eq!(keys_of(&listed), std::slice::from_ref(&key), "{listed}");
    assert_eq!(rig.app.get("/v1/functions").await.json()["functions"][0]["packages"], 1);
    // One claim, one slot, one done marker: the re-posts wrote nothing.
    let index = rig.index_keys().await;
    let count = |part: &str| index.iter().filter(|k| k.contains(part)).count();
    assert_eq!((count("/claim/"), count("/log/"), count("/done/")), (1, 1, 1), "{index:?}");
}

/// A package whose creator claimed it and stopped before indexing it (a crash): its object,
/// with provenance, and its claim, but no row and no `done`. Returns the package's key.
async fn claimed_but_not_indexed(rig: &Rig, bundle: &[u8], claim_age: Duration) -> String {
    use lambda_packager::packages::Provenance;
    use lambda_packager::store::{Staged, Store};
    let built = crate::support::pack_archive(bundle);
    let key: ObjectKey = format!("lambda-fn-{}.zip", built.packed.sha256).parse().expect("a key");
    let (store, _) =
        lambda_packager::store::local::LocalStore::open(&rig.app.store_root()).expect("the store");
    let provenance = Provenance::new("tar", Some(Sha256Hex::of_bytes(bundle)), None, None);
    let staged = Staged { metadata: provenance.to_metadata(), ..Staged::from_bytes(built.bytes) };
    store.put_if_absent(&(&key).into(), staged).await.expect("the object");
    let id = Sha256Hex::of_bytes(key.to_string().as_bytes());
    let claims = rig.app.store_root().join(".lambda-packager/index/v1/fn/fn/claim");
    std::fs::create_dir_all(&claims).expect("the claims folder");
    let claim = claims.join(format!("{id}.00"));
    std::fs::write(&claim, b"{}").expect("the claim");
    let file = std::fs::File::options().write(true).open(&claim).expect("the claim");
    file.set_modified(SystemTime::now() - claim_age).expect("its time");
    key.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_older_than_the_lease_is_taken_over_by_a_re_post_and_a_fresh_one_is_left_alone() {
    let rig = Rig::new(On::Local, |_| {}).await;
    // Any package first: the index's cutover exists before the others are stored.
    let first = rig.publish("fn", numbered(0)).await;
    let stale = claimed_but_not_indexed(
        &rig,
        &numbered(1),
        lambda_packager::packages::CLAIM_LEASE + Duration::from_secs(60),
    )
    .await;
    let fresh = claimed_but_not_indexed(&rig, &numbered(2), Duration::from_secs(1)).await;
    // A holder that appended its row and crashed before it marked the row done.
    let appended =
        claimed_but_not_indexed(&rig, &numbered(3), lambda_packager::packages::CLAIM_LEASE * 2).await;
    let built = crate::support::pack_archive(&numbered(3));
    let row = Row {
        key: appended.parse().expect("a key"),
        size: built.packed.size,
        files: Some(built.packed.files),
        created: SystemTime::now(),
        created_by: None,
        format: Some("tar".into()),
        commit: None,
        source_sha256: None,
        version_id: None,
    };
    rig.packages().append_rows(&"fn".parse().expect("a name"), vec![row]).await.expect("the holder's append");
    assert_eq!(
        keys_of(&rig.app.get("/v1/functions/fn/artifacts").await.json()),
        [appended.clone(), first.clone()]
    );

    for n in [1, 2, 3] {
        let again = rig.app.post("/v1/functions/fn/package", numbered(n)).await;
        assert_eq!((again.status.as_u16(), again.json()["uploaded"].clone()), (200, Value::Bool(false)));
    }
    // The stale claim's package is indexed by the re-post, under the next claim; the one whose
    // row was appended is marked done, not appended again; the fresh one's holder may still be
    // at work, so it is left to it.
    let listed = keys_of(&rig.app.get("/v1/functions/fn/artifacts").await.json());
    assert_eq!(listed, [stale.clone(), appended.clone(), first]);
    let index = rig.index_keys().await;
    let id = |key: &str| Sha256Hex::of_bytes(key.as_bytes()).to_string();
    let claims: Vec<&String> =
        index.iter().filter(|k| [&stale, &fresh, &appended].iter().any(|p| k.contains(&id(p)))).collect();
    let suffixes: Vec<String> = claims
        .iter()
        .map(|k| k.rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/"))
        .collect();
    let mut expected = vec![
        format!("claim/{}.00", id(&stale)),
        format!("claim/{}.01", id(&stale)),
        format!("done/{}", id(&stale)),
        format!("claim/{}.00", id(&fresh)),
        format!("claim/{}.00", id(&appended)),
        format!("claim/{}.01", id(&appended)),
        format!("done/{}", id(&appended)),
    ];
    expected.sort();
    let mut suffixes = suffixes;
    suffixes.sort();
    assert_eq!(suffixes, expected, "{index:?}");
}

/// A request with a bearer token.
async fn as_token(
    app: &TestApp,
    token: &str,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> crate::support::app::TestResponse {
    let request = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::from(body))
        .expect("a request");
    app.call(request).await
}

async fn named_tokens_are_limited_to_their_scopes_and_functions_and_sign_what_they_store(on: On) {
    let rig = Rig::new(on, |c| {
        let tokens = r#"[
            "admin-secret",
            {name = "ci-orders", token = "ci-secret", scopes = ["write"], functions = ["orders*"]},
            {name = "dash-orders", token = "dash-secret", scopes = ["read"], functions = ["orders-*"]},
            {name = "reader", token = "reader-secret", scopes = ["read"]}
        ]"#;
        let figment = figment::Figment::new().merge(
            <figment::providers::Toml as figment::providers::Format>::string(&format!("tokens = {tokens}")),
        );
        c.auth = figment.extract().expect("an [auth] table");
    })
    .await;
    let app = &rig.app;
    let post = |token: &'static str, function: &'static str, n: usize| async move {
        as_token(app, token, "POST", &format!("/v1/functions/{function}/package"), numbered(n)).await
    };
    let get =
        |token: &'static str, uri: String| async move { as_token(app, token, "GET", &uri, Vec::new()).await };

    // Writing: the write scope, within the token's functions.
    let orders = post("ci-secret", "orders", 1).await;
    assert_eq!(orders.status, 201, "{}", String::from_utf8_lossy(&orders.body));
    let orders = orders.json()["key"].as_str().expect("key").to_owned();
    let orders_api = post("ci-secret", "orders-api", 2).await.json()["key"].as_str().expect("key").to_owned();
    let billing = post("admin-secret", "billing", 3).await.json()["key"].as_str().expect("key").to_owned();
    let stored = rig.package_keys().await;
    let message = post("ci-secret", "billing", 4).await.assert_error(403, "function_not_allowed");
    assert!(
        message.contains("ci-orders") && message.contains("billing") && !message.contains("ci-secret"),
        "{message}"
    );
    let message = post("reader-secret", "orders", 5).await.assert_error(403, "insufficient_scope");
    assert!(message.contains("reader") && message.contains("write"), "{message}");
    post("dash-secret", "orders-api", 6).await.assert_error(403, "insufficient_scope");
    assert_eq!(as_token(app, "wrong", "POST", "/v1/functions/orders/package", numbered(7)).await.status, 401);
    assert_eq!(rig.package_keys().await, stored, "nothing stored by a refused request");

    // What a token stores carries its name, never the token.
    let created_by = |key: &str| {
        let uri = format!("/v1/artifacts/{key}");
        async move { get("admin-secret", uri).await.json()["provenance"]["created_by"].clone() }
    };
    assert_eq!(created_by(&orders).await, "ci-orders");
    assert_eq!(created_by(&billing).await, "token-1");
    assert_eq!(
        rig.stored_metadata(&orders).await.get("lp-created-by").map(String::as_str),
        Some("ci-orders")
    );

    // Reading: the read scope; a write-only token may not list.
    get("ci-secret", "/v1/functions/orders/artifacts".into()).await.assert_error(403, "insufficient_scope");
    let names = |page: Value| -> Vec<String> {
        page["functions"]
            .as_array()
            .expect("functions")
            .iter()
            .map(|f| f["function"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(
        names(get("reader-secret", "/v1/functions".into()).await.json()),
        ["billing", "orders", "orders-api"]
    );
    // Limited to `orders-*`: only those functions are listed, and every other is refused on
    // every route, packages named by key included.
    assert_eq!(names(get("dash-secret", "/v1/functions".into()).await.json()), ["orders-api"]);
    assert_eq!(get("dash-secret", "/v1/functions/orders-api/artifacts".into()).await.status, 200);
    assert_eq!(get("dash-secret", "/v1/functions/orders-api/latest".into()).await.status, 200);
    assert_eq!(get("dash-secret", format!("/v1/artifacts/{orders_api}")).await.status, 200);
    for uri in [
        "/v1/functions/orders/artifacts".to_owned(),
        "/v1/functions/billing/latest".to_owned(),
        format!("/v1/artifacts/{billing}"),
        format!("/v1/artifacts/{billing}/zip"),
        format!("/v1/artifacts/{orders_api}/diff/{orders}"),
        format!("/v1/artifacts/{orders}/diff/{orders_api}"),
    ] {
        get("dash-secret", uri.clone()).await.assert_error(403, "function_not_allowed");
    }
    assert_eq!(app.get("/v1/functions").await.status, 401, "no token");
    assert_eq!(app.get("/healthz").await.status, 200, "probes stay open");
}

async fn request_prefixed_packages_are_listed_with_their_whole_keys(on: On) {
    let rig = Rig::new(on, |c| {
        c.store.prefix = "ops/".parse().expect("a prefix");
        c.store.allow_request_prefix = true;
    })
    .await;
    let plain = rig.publish("fn", numbered(1)).await;
    let r = rig.app.post("/v1/functions/fn/package?prefix=team%2Fa%2F", numbered(2)).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let prefixed = r.json()["key"].as_str().expect("key").to_owned();
    assert!(
        plain.starts_with("ops/lambda-fn-") && prefixed.starts_with("ops/team/a/lambda-fn-"),
        "{plain} {prefixed}"
    );
    // One index per operator prefix: both packages of `fn`, each with its whole key.
    assert_eq!(keys_of(&rig.app.get("/v1/functions/fn/artifacts").await.json()), [prefixed.clone(), plain]);
    assert_eq!(rig.app.get("/v1/functions").await.json()["functions"][0]["packages"], 2);
    assert_eq!(rig.detail(&prefixed).await["key"], prefixed.as_str());
    assert!(rig.index_keys().await.iter().all(|k| k.starts_with("ops/.lambda-packager/index/v1/")));
    // The listing has no `prefix` parameter: every request prefix is in it.
    rig.app.get("/v1/functions/fn/artifacts?prefix=team%2F").await.assert_error(400, "invalid_request");
}
