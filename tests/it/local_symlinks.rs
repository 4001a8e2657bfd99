//! The local store never follows a symlink (issue #10, point 5). Whoever can write into the
//! store folder plants a key-named symlink to a file outside it, a symlinked prefix folder, a
//! symlink among listed objects, or a FIFO: none is served, listed or written through, over the
//! store's API and over HTTP, and the store and the outside files are left as they were.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;

use futures_util::StreamExt as _;
use lambda_packager::package::Sha256Hex;
use lambda_packager::store::key::{ListPrefix, ObjectKey, StoreKey};
use lambda_packager::store::local::LocalStore;
use lambda_packager::store::{ByteRange, Error, ListRequest, Staged, StagedBytes, Store};

use crate::golden::basic;
use crate::support::app::TestApp;
use crate::support::pack_archive;

/// Every entry below `dir`, not following symlinks: path → file bytes, `-> target` or `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("readlink");
                out.insert(rel, format!("-> {}", target.display()));
            } else if meta.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &path, out);
            } else if meta.is_file() {
                out.insert(rel, Sha256Hex::of_bytes(&std::fs::read(&path).expect("read")).to_string());
            } else {
                out.insert(rel, "special".into());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A real package (a zip the manifest reader accepts) and its key for function `fn`.
fn package() -> (Vec<u8>, String) {
    let built = pack_archive(&basic().tar());
    let key = format!("lambda-fn-{}.zip", built.packed.sha256);
    (built.bytes, key)
}

#[track_caller]
fn assert_absent(result: Result<impl std::fmt::Debug, Error>) {
    assert!(matches!(result, Err(Error::NotFound)), "{result:?}");
}

/// The store key of a package key's text.
fn store_key(key: &str) -> StoreKey {
    key.parse::<ObjectKey>().expect("a package key").into()
}

/// The keys of `fn`'s packages directly under `prefix`.
async fn listed(store: &LocalStore, prefix: &str) -> Vec<String> {
    listed_at_most(store, prefix, 100).await
}

/// The first page of at most `max` keys of `fn`'s packages directly under `prefix`.
async fn listed_at_most(store: &LocalStore, prefix: &str, max: usize) -> Vec<String> {
    let request = ListRequest::new(
        ListPrefix::Packages {
            prefix: prefix.parse().expect("a prefix"),
            function: "fn".parse().expect("a name"),
        },
        max,
    );
    store.list(&request).await.expect("list").objects.into_iter().map(|(key, _)| key.name()).collect()
}

async fn assert_not_served(store: &LocalStore, key: &str) {
    let key = store_key(key);
    assert_eq!(store.head(&key).await.expect("head"), None, "{key}");
    assert_absent(store.get(&key).await.map(|body| body.size));
    assert_absent(store.read_range(&key, ByteRange::Tail(22)).await);
    assert_absent(store.read_range(&key, ByteRange::Span { start: 0, end: 4 }).await);
}

#[tokio::test]
async fn a_key_named_symlink_to_a_file_outside_the_root_is_not_an_object() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (root, outside) = (dir.path().join("store"), dir.path().join("outside"));
    std::fs::create_dir_all(&outside).expect("outside dir");
    let (bytes, key) = package();
    std::fs::write(outside.join("secret.zip"), &bytes).expect("the file to steal");
    let (store, _) = LocalStore::open(&root).expect("open");
    symlink(outside.join("secret.zip"), root.join(&key)).expect("plant the symlink");
    let (before, outside_before) = (snapshot(&root), snapshot(&outside));

    assert_not_served(&store, &key).await;
    assert!(listed(&store, "").await.is_empty());
    // Storing under the key never writes through the link.
    let staged = Staged {
        data: StagedBytes::Memory(bytes.clone().into()),
        size: bytes.len() as u64,
        sha256: Sha256Hex::of_bytes(&bytes),
        metadata: Default::default(),
    };
    assert_eq!(
        store.put_if_absent(&store_key(&key), staged).await.expect("put"),
        lambda_packager::store::PutOutcome::AlreadyExists
    );
    assert_eq!((snapshot(&root), snapshot(&outside)), (before, outside_before), "nothing changed");
}

#[tokio::test]
async fn a_symlinked_prefix_folder_is_not_read_listed_or_written_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (root, outside) = (dir.path().join("store"), dir.path().join("outside"));
    std::fs::create_dir_all(&outside).expect("outside dir");
    let (bytes, key) = package();
    std::fs::write(outside.join(&key), &bytes).expect("a package-named file outside");
    let (store, _) = LocalStore::open(&root).expect("open");
    symlink(&outside, root.join("ci")).expect("plant the symlinked folder");
    let (before, outside_before) = (snapshot(&root), snapshot(&outside));

    let prefixed = format!("ci/{key}");
    assert_not_served(&store, &prefixed).await;
    assert!(listed(&store, "ci/").await.is_empty());
    // A put under the folder fails instead of creating a file outside the root.
    let other = b"other bytes".to_vec();
    let other_key = store_key(&format!("ci/lambda-fn-{}.zip", Sha256Hex::of_bytes(&other)));
    let staged = Staged {
        data: StagedBytes::Memory(other.clone().into()),
        size: 11,
        sha256: Sha256Hex::of_bytes(&other),
        metadata: Default::default(),
    };
    let refused = store.put_if_absent(&other_key, staged).await;
    assert!(matches!(refused, Err(Error::Io(_))), "{refused:?}");
    assert_eq!((snapshot(&root), snapshot(&outside)), (before, outside_before), "nothing changed");
}

#[tokio::test]
async fn symlinks_and_fifos_among_objects_are_skipped_and_never_opened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    let (store, _) = LocalStore::open(&root).expect("open");
    let (bytes, key) = package();
    std::fs::write(root.join(&key), &bytes).expect("a real object");
    // A link inside the root, to a real object, under another key: still not an object. Both
    // names sort before any real package's, so a page of one name must look past them.
    let alias = format!("lambda-fn-{}.zip", "0".repeat(64));
    symlink(&key, root.join(&alias)).expect("an alias");
    let fifo = format!("lambda-fn-{}1.zip", "0".repeat(63));
    let made = std::process::Command::new("mkfifo").arg(root.join(&fifo)).status().expect("mkfifo");
    assert!(made.success());
    let before = snapshot(&root);

    assert_eq!(listed(&store, "").await, std::slice::from_ref(&key), "only the regular file is listed");
    assert_eq!(listed_at_most(&store, "", 1).await, std::slice::from_ref(&key), "a page of one name too");
    assert_not_served(&store, &alias).await;
    // Opening a FIFO for reading would block until a writer came; it is refused at once.
    assert_not_served(&store, &fifo).await;
    let body = store.get(&store_key(&key)).await.expect("the real object");
    let read: Vec<u8> = body.stream.map(|c| c.expect("chunk").to_vec()).concat().await;
    assert_eq!(read, bytes);
    assert_eq!(snapshot(&root), before);
}

#[test]
fn a_symlinked_staging_folder_is_refused_at_startup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (root, elsewhere) = (dir.path().join("store"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(&root).expect("root");
    std::fs::create_dir_all(&elsewhere).expect("elsewhere");
    std::fs::write(elsewhere.join("tmp-keep"), b"not ours").expect("a file the sweep must not remove");
    symlink(&elsewhere, root.join(".staging")).expect("plant");
    let e = LocalStore::open(&root).expect_err("refused");
    assert!(e.to_string().contains(".staging"), "{e}");
    assert!(elsewhere.join("tmp-keep").exists(), "nothing swept through the link");
}

#[tokio::test]
async fn over_http_planted_symlinks_answer_404_and_list_nothing() {
    let outside = tempfile::tempdir().expect("temp dir");
    let (bytes, key) = package();
    std::fs::write(outside.path().join("secret.zip"), &bytes).expect("the file to steal");
    std::fs::write(outside.path().join(&key), &bytes).expect("a package-named file outside");

    // A key-named symlink at the root.
    let app = TestApp::new().await;
    symlink(outside.path().join("secret.zip"), app.store_root().join(&key)).expect("plant");
    // A symlinked folder, under the operator prefix of a second app.
    let prefixed = TestApp::with(|c| c.store.prefix = "ci/".parse().expect("prefix")).await;
    symlink(outside.path(), prefixed.store_root().join("ci")).expect("plant");
    let outside_before = snapshot(outside.path());

    for (app, key) in [(&app, key.clone()), (&prefixed, format!("ci%2F{key}"))] {
        let before = snapshot(&app.store_root());
        app.get(&format!("/v1/artifacts/{key}")).await.assert_error(404, "artifact_not_found");
        app.get(&format!("/v1/artifacts/{key}/zip")).await.assert_error(404, "artifact_not_found");
        let listed = app.get("/v1/functions/fn/artifacts").await;
        assert_eq!(listed.status, 200);
        assert_eq!(listed.json()["artifacts"], serde_json::json!([]), "{key}");
        assert_eq!(snapshot(&app.store_root()), before, "{key}: the store is as it was");
        app.assert_no_temp_files();
    }
    // Publishing under the symlinked folder is refused, and writes nothing outside the store.
    let before = snapshot(&prefixed.store_root());
    prefixed.post("/v1/functions/other/package", basic().tar()).await.assert_error(500, "store_io_error");
    assert_eq!(snapshot(&prefixed.store_root()), before);
    prefixed.assert_no_temp_files();
    assert_eq!(snapshot(outside.path()), outside_before, "nothing outside the store changed");
}
