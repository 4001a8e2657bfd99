//! The store contract: one suite, written once against `&impl Store`, run on every backend by
//! `store_tests!` (a local directory, and a fresh bucket on a real S3-compatible server).
//!
//! After every local test, the store's `.staging/` directory must be empty: a put, whether it
//! stored, found the key taken or failed, leaves no temp file behind.

use futures_util::StreamExt as _;
use futures_util::future::join_all;
use lambda_packager::package::Sha256Hex;
use lambda_packager::store::key::{FunctionName, KeyPrefix, ListPrefix, ObjectKey, StoreKey};
use lambda_packager::store::local::{LocalStore, STAGING_DIR};
use lambda_packager::store::s3::MAX_SINGLE_PUT_BYTES;
use lambda_packager::store::{ByteRange, Error, ListRequest, PutOutcome, Staged, StagedBytes, Store};

use crate::support::noise;
use crate::support::s3::{MotoServer, TestBucket};

/// `bytes` in an unlinked temp file, as the packages service stages a package over 1 MiB.
fn stage(bytes: &[u8]) -> Staged {
    use std::io::Write as _;
    let mut file = tempfile::tempfile().expect("create a staging file");
    file.write_all(bytes).expect("write the staging file");
    file.sync_all().expect("sync the staging file");
    Staged {
        data: StagedBytes::File(file),
        size: bytes.len() as u64,
        sha256: Sha256Hex::of_bytes(bytes),
        metadata: Default::default(),
    }
}

/// `bytes` staged in memory, as the publisher stages small packages.
fn stage_in_memory(bytes: &[u8]) -> Staged {
    Staged {
        data: StagedBytes::Memory(bytes.to_vec().into()),
        size: bytes.len() as u64,
        sha256: Sha256Hex::of_bytes(bytes),
        metadata: Default::default(),
    }
}

/// The content-addressed key of `bytes` for `function` under `prefix`.
fn key_of(prefix: &str, function: &str, bytes: &[u8]) -> ObjectKey {
    let prefix: KeyPrefix = prefix.parse().expect("valid prefix");
    let function: FunctionName = function.parse().expect("valid function name");
    ObjectKey::package(&prefix, &function, Sha256Hex::of_bytes(bytes))
}

async fn put(store: &impl Store, key: &ObjectKey, bytes: &[u8]) -> PutOutcome {
    store.put_if_absent(&key.into(), stage(bytes)).await.expect("put_if_absent")
}

async fn head(store: &impl Store, key: &ObjectKey) -> Option<lambda_packager::store::ObjectMeta> {
    store.head(&key.into()).await.expect("head")
}

async fn read_all(store: &impl Store, key: &ObjectKey) -> Vec<u8> {
    let body = store.get(&key.into()).await.expect("get");
    let size = body.size;
    let mut out = Vec::new();
    let mut stream = body.stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("a chunk of the body"));
    }
    assert_eq!(out.len() as u64, size, "ObjectBody::size is the streamed length");
    out
}

async fn put_new_then_head_sees_it(store: &impl Store) {
    let bytes = noise(4096, 1);
    let key = key_of("", "fn", &bytes);
    assert!(matches!(put(store, &key, &bytes).await, PutOutcome::Created { .. }));
    let meta = head(store, &key).await.expect("the object exists");
    assert_eq!(meta.size, 4096);
    assert!(meta.last_modified.is_some());
    if let Some(checksum) = &meta.checksum_sha256 {
        assert_eq!(checksum, &Sha256Hex::of_bytes(&bytes).to_base64());
    }
}

async fn a_package_staged_in_memory_is_stored_once_with_its_exact_bytes(store: &impl Store) {
    let bytes = noise(3000, 11);
    let key = key_of("mem/", "fn", &bytes);
    let created =
        store.put_if_absent(&(&key).into(), stage_in_memory(&bytes)).await.expect("put from memory");
    assert!(matches!(created, PutOutcome::Created { .. }));
    assert_eq!(read_all(store, &key).await, bytes);
    // Memory and file staging race for one key alike: the second is refused, the first kept.
    let other = noise(3000, 12);
    let again = store.put_if_absent(&(&key).into(), stage_in_memory(&other)).await.expect("second put");
    assert_eq!(again, PutOutcome::AlreadyExists);
    assert_eq!(put(store, &key, &other).await, PutOutcome::AlreadyExists);
    assert_eq!(read_all(store, &key).await, bytes);
}

async fn second_put_of_a_key_keeps_the_first_bytes(store: &impl Store) {
    let first = noise(1000, 2);
    let key = key_of("ci/", "fn", &first);
    assert!(matches!(put(store, &key, &first).await, PutOutcome::Created { .. }));
    // Other bytes under the same key (what a key conflict looks like to the store).
    let other = noise(1500, 3);
    assert_eq!(put(store, &key, &other).await, PutOutcome::AlreadyExists);
    assert_eq!(read_all(store, &key).await, first);
    assert_eq!(head(store, &key).await.map(|m| m.size), Some(1000));
}

async fn concurrent_puts_of_one_key_store_it_once(store: &impl Store) {
    let bytes = noise(64 * 1024, 4);
    let key = key_of("", "race", &bytes);
    let store_key = StoreKey::from(&key);
    let outcomes = join_all((0..16).map(|_| {
        let staged = stage(&bytes);
        let key = &store_key;
        async move { store.put_if_absent(key, staged).await }
    }))
    .await;
    let created = outcomes.iter().filter(|o| matches!(o, Ok(PutOutcome::Created { .. }))).count();
    let existed = outcomes.iter().filter(|o| matches!(o, Ok(PutOutcome::AlreadyExists))).count();
    assert_eq!((created, existed), (1, 15), "exactly one put stores the key: {outcomes:?}");
    assert_eq!(read_all(store, &key).await, bytes);
}

/// Every key a listing returns, following its cursor page by page; also returns the number of
/// pages (one backend request each).
async fn list_all(store: &impl Store, prefix: ListPrefix, page: usize) -> (Vec<StoreKey>, usize) {
    let mut request = ListRequest::new(prefix, page);
    let (mut keys, mut pages) = (Vec::new(), 0);
    loop {
        let listing = store.list(&request).await.expect("list");
        pages += 1;
        assert!(listing.objects.len() <= page, "at most `max` keys per page");
        keys.extend(listing.objects.into_iter().map(|(key, _)| key));
        match listing.next {
            Some(next) => request = request.after(&next),
            None => return (keys, pages),
        }
    }
}

fn packages_of(prefix: &str, function: &str) -> ListPrefix {
    ListPrefix::Packages {
        prefix: prefix.parse().expect("valid prefix"),
        function: function.parse().expect("valid function name"),
    }
}

async fn list_returns_exactly_one_functions_keys_in_order(store: &impl Store) {
    let mut keys = Vec::new();
    for (i, (prefix, function)) in [
        ("p/", "fn"),
        ("p/", "fn"),
        ("p/", "fn-api"),
        ("p/", "other"),
        ("q/", "fn"),
        ("p/deeper/", "fn"),
        ("", "fn"),
        ("p/", "fn"),
        ("p/", "fn"),
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = noise(100 + i, 10 + i as u64);
        let key = key_of(prefix, function, &bytes);
        put(store, &key, &bytes).await;
        keys.push(StoreKey::from(key));
    }
    let sorted = |idx: &[usize]| {
        let mut v: Vec<StoreKey> = idx.iter().map(|&i| keys[i].clone()).collect();
        v.sort_by_key(StoreKey::name);
        v
    };
    // `lambda-fn-` is also the start of `lambda-fn-api-`, and `p/deeper/` is below `p/`: neither
    // is one of `fn`'s packages under `p/`.
    assert_eq!(list_all(store, packages_of("p/", "fn"), 100).await.0, sorted(&[0, 1, 7, 8]));
    assert_eq!(list_all(store, packages_of("p/", "fn-api"), 100).await.0, sorted(&[2]));
    assert_eq!(list_all(store, packages_of("", "fn"), 100).await.0, sorted(&[6]));
    assert_eq!(list_all(store, packages_of("p/deeper/", "fn"), 100).await.0, sorted(&[5]));
    assert!(list_all(store, packages_of("p/", "none"), 100).await.0.is_empty());
    assert!(list_all(store, packages_of("nothing/", "fn"), 100).await.0.is_empty());
    // Pages of one key: every key once, in order, one request per page (a last, empty page
    // only when the backend cannot tell that nothing follows).
    let (paged, pages) = list_all(store, packages_of("p/", "fn"), 1).await;
    assert_eq!(paged, sorted(&[0, 1, 7, 8]));
    assert!((4..=5).contains(&pages), "{pages} pages");

    let listing = store.list(&ListRequest::new(packages_of("q/", "fn"), 10)).await.expect("list");
    assert_eq!(listing.objects.len(), 1);
    assert_eq!(listing.objects[0].1.size, 104);
    assert!(listing.objects[0].1.last_modified.is_some());
    assert!(listing.next.is_none());
}

async fn read_range_returns_the_requested_bytes(store: &impl Store) {
    let bytes = noise(1000, 20);
    let key = key_of("", "ranges", &bytes);
    put(store, &key, &bytes).await;
    let key = StoreKey::from(key);
    let read = |range| {
        let key = key.clone();
        async move { store.read_range(&key, range).await.expect("read_range").to_vec() }
    };
    assert_eq!(read(ByteRange::Tail(22)).await, &bytes[978..]);
    assert_eq!(read(ByteRange::Tail(1000)).await, bytes);
    assert_eq!(read(ByteRange::Tail(5000)).await, bytes, "clamped to the object");
    assert_eq!(read(ByteRange::Span { start: 10, end: 20 }).await, &bytes[10..20]);
    assert_eq!(read(ByteRange::Span { start: 0, end: 1 }).await, &bytes[..1]);
    assert_eq!(read(ByteRange::Span { start: 990, end: 2000 }).await, &bytes[990..], "clamped to the object");
    assert!(read(ByteRange::Span { start: 1000, end: 1010 }).await.is_empty());
    assert!(read(ByteRange::Span { start: 5, end: 5 }).await.is_empty());
    assert!(read(ByteRange::Tail(0)).await.is_empty());
}

async fn get_streams_the_exact_bytes(store: &impl Store) {
    // Several chunks of the stream, and a length that is no multiple of any buffer.
    let bytes = noise(700 * 1024 + 13, 30);
    let key = key_of("big/", "fn", &bytes);
    put(store, &key, &bytes).await;
    assert_eq!(read_all(store, &key).await, bytes);
}

async fn missing_keys_are_absent_not_errors(store: &impl Store) {
    let key = StoreKey::from(key_of("", "missing", b"never stored"));
    assert_eq!(store.head(&key).await.expect("head of a missing key"), None);
    assert!(matches!(store.get(&key).await, Err(Error::NotFound)));
    for range in
        [ByteRange::Tail(10), ByteRange::Span { start: 0, end: 10 }, ByteRange::Span { start: 3, end: 3 }]
    {
        assert!(matches!(store.read_range(&key, range).await, Err(Error::NotFound)), "{range:?}");
    }
    let listing = store.list(&ListRequest::new(packages_of("", "missing"), 10)).await.expect("list");
    assert!(listing.objects.is_empty() && listing.next.is_none());
}

async fn a_recursive_listing_returns_every_package_below_the_prefix_in_name_order(store: &impl Store) {
    let mut keys = Vec::new();
    for (i, prefix) in
        ["tree/", "tree/a/", "tree/a/b/", "tree/a-b/", "tree/b/", "tree/a/", "other/"].into_iter().enumerate()
    {
        let bytes = noise(50 + i, 200 + i as u64);
        let key = key_of(prefix, if i % 2 == 0 { "fn" } else { "fn-api" }, &bytes);
        put(store, &key, &bytes).await;
        keys.push(key);
    }
    // Objects that are no package (an index entry, a stray file's name) are skipped.
    let index_key = StoreKey::index(
        &"tree/".parse().expect("prefix"),
        lambda_packager::store::key::IndexEntry::Function("fn".parse().expect("name")),
    );
    store.put_if_absent(&index_key, Staged::from_bytes(b"{}".to_vec())).await.expect("an index entry");
    let mut expected: Vec<StoreKey> =
        keys.iter().filter(|k| k.prefix().as_str().starts_with("tree/")).map(StoreKey::from).collect();
    // S3's order: the byte order of whole names (`tree/a-b/…` before `tree/a/…`).
    expected.sort_by_key(StoreKey::name);
    let tree = || ListPrefix::AllPackages { prefix: "tree/".parse().expect("prefix") };
    for page in [1, 2, 1000] {
        let (listed, _) = list_all(store, tree(), page).await;
        assert_eq!(listed, expected, "pages of {page}");
    }
}

fn tagged(tag: &str) -> lambda_packager::store::Metadata {
    [("lp-test".to_owned(), tag.to_owned()), ("lp-other".to_owned(), "x%2Fy".to_owned())].into()
}

async fn metadata_is_stored_with_the_object_and_a_losing_put_changes_nothing(store: &impl Store) {
    let bytes = noise(2000, 90);
    let key = key_of("meta/", "fn", &bytes);
    let staged = Staged { metadata: tagged("first"), ..stage_in_memory(&bytes) };
    assert!(matches!(
        store.put_if_absent(&(&key).into(), staged).await.expect("put"),
        PutOutcome::Created { .. }
    ));
    assert_eq!(head(store, &key).await.expect("exists").metadata, tagged("first"));
    // A second put of the key, with other bytes and other metadata, changes neither.
    let staged = Staged { metadata: tagged("second"), ..stage(&noise(2000, 91)) };
    assert_eq!(store.put_if_absent(&(&key).into(), staged).await.expect("put"), PutOutcome::AlreadyExists);
    assert_eq!(head(store, &key).await.expect("exists").metadata, tagged("first"));
    assert_eq!(read_all(store, &key).await, bytes);
    // An object stored without metadata has none.
    let plain = noise(10, 92);
    let plain_key = key_of("meta/", "fn", &plain);
    put(store, &plain_key, &plain).await;
    assert!(head(store, &plain_key).await.expect("exists").metadata.is_empty());
}

async fn concurrent_puts_of_one_key_keep_the_winners_bytes_with_the_winners_metadata(store: &impl Store) {
    let key = StoreKey::from(key_of("race/", "meta", b"one key for all"));
    let outcomes = join_all((0..12u64).map(|i| {
        let staged = Staged { metadata: tagged(&i.to_string()), ..stage(&noise(5000, 100 + i)) };
        let key = &key;
        async move { store.put_if_absent(key, staged).await.expect("put") }
    }))
    .await;
    let created = outcomes.iter().filter(|o| matches!(o, PutOutcome::Created { .. })).count();
    assert_eq!(created, 1, "{outcomes:?}");
    // Whichever put won, the metadata read back is the one that came with its bytes.
    let stored = store.head(&key).await.expect("head").expect("exists").metadata;
    let winner: u64 = stored["lp-test"].parse().expect("a tag");
    let body = store.get(&key).await.expect("get");
    let bytes: Vec<u8> = body.stream.map(|c| c.expect("chunk").to_vec()).concat().await;
    assert_eq!(bytes, noise(5000, 100 + winner), "the bytes are put {winner}'s, as its metadata says");
}

async fn ready_is_ok(store: &impl Store) {
    store.ready().await.expect("the store is ready");
}

/// One `#[tokio::test]` per backend and contract test.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let env = super::LocalEnv::new();
                    super::$name(&env.store).await;
                    env.assert_staging_is_empty();
                }
            )*
        }

        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let bucket = crate::support::s3::TestBucket::shared().await;
                    super::$name(&bucket.store()).await;
                }
            )*
        }
    };
}

store_tests!(
    put_new_then_head_sees_it,
    a_package_staged_in_memory_is_stored_once_with_its_exact_bytes,
    second_put_of_a_key_keeps_the_first_bytes,
    concurrent_puts_of_one_key_store_it_once,
    list_returns_exactly_one_functions_keys_in_order,
    read_range_returns_the_requested_bytes,
    get_streams_the_exact_bytes,
    missing_keys_are_absent_not_errors,
    a_recursive_listing_returns_every_package_below_the_prefix_in_name_order,
    metadata_is_stored_with_the_object_and_a_losing_put_changes_nothing,
    concurrent_puts_of_one_key_keep_the_winners_bytes_with_the_winners_metadata,
    ready_is_ok,
);

/// A local store in a temp directory.
struct LocalEnv {
    _dir: tempfile::TempDir,
    store: LocalStore,
}

impl LocalEnv {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, swept) = LocalStore::open(dir.path()).expect("open the local store");
        assert_eq!(swept, 0);
        Self { _dir: dir, store }
    }

    #[track_caller]
    fn assert_staging_is_empty(&self) {
        let staging = self.store.root().join(STAGING_DIR);
        let left: Vec<_> = std::fs::read_dir(&staging)
            .expect("read .staging")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "temp files left in .staging: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_failed_put_leaves_no_temp_file() {
    let env = LocalEnv::new();
    // A file where the key's folder should be: the publish step fails.
    std::fs::write(env.store.root().join("blocked"), b"not a directory").expect("write");
    let bytes = noise(100, 40);
    let key = key_of("blocked/", "fn", &bytes);
    let result = env.store.put_if_absent(&(&key).into(), stage(&bytes)).await;
    assert!(matches!(result, Err(Error::Io(_))), "{result:?}");
    env.assert_staging_is_empty();
    assert_eq!(head(&env.store, &key).await, None, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stores_and_returns_the_sha256_checksum() {
    let bucket = TestBucket::shared().await;
    let store = bucket.store();
    let bytes = noise(2048, 50);
    let key = key_of("", "sum", &bytes);
    put(&store, &key, &bytes).await;
    let meta = head(&store, &key).await.expect("exists");
    assert_eq!(
        meta.checksum_sha256.as_deref(),
        Some(Sha256Hex::of_bytes(&bytes).to_base64().as_str()),
        "HEAD with checksum mode returns the full-object SHA-256 sent with the PUT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_names_its_bucket_and_s3_urls() {
    let bucket = TestBucket::shared().await;
    let store = bucket.store();
    let key = key_of("ci/", "fn", b"zip");
    assert_eq!(store.bucket(), Some(bucket.name()));
    assert_eq!(store.location(&key), format!("s3://{}/{key}", bucket.name()));
    assert_eq!(store.region(), Some(crate::support::s3::REGION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_put_sends_the_staged_sha256_not_a_computed_one() {
    let bucket = TestBucket::shared().await;
    let store = bucket.store();
    let bytes = noise(2048, 51);
    let key = key_of("", "lie", &bytes);
    // A staged file whose digest is wrong (a corrupted body, as S3 would see it).
    let mut staged = stage(&bytes);
    let wrong = Sha256Hex::of_bytes(b"other bytes");
    staged.sha256 = wrong;
    match store.put_if_absent(&(&key).into(), staged).await {
        // A server that validates checksums (AWS S3) refuses the body, and stores nothing.
        Err(Error::Backend(_)) => assert_eq!(bucket.keys().await, Vec::<String>::new()),
        // moto does not validate, but keeps the checksum it was sent: ours, not the body's.
        Ok(PutOutcome::Created { .. }) => {
            let meta = head(&store, &key).await;
            assert_eq!(meta.and_then(|m| m.checksum_sha256), Some(wrong.to_base64()));
        }
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_refuses_a_package_larger_than_one_put() {
    let bucket = TestBucket::shared().await;
    let store = bucket.store();
    let bytes = noise(10, 60);
    let key = key_of("", "huge", &bytes);
    let mut staged = stage(&bytes);
    staged.size = MAX_SINGLE_PUT_BYTES + 1;
    let err = store.put_if_absent(&(&key).into(), staged).await.expect_err("too large");
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    let message = format!("{:?}", err);
    assert!(message.contains("largest single S3 PUT"), "{message}");
    assert!(bucket.keys().await.is_empty(), "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_list_pages_through_more_keys_than_one_request_returns() {
    let bucket = TestBucket::shared().await;
    let store = bucket.store();
    let mut keys: Vec<ObjectKey> = (0..1005u64).map(|i| key_of("many/", "fn", &i.to_le_bytes())).collect();
    // Straight through the SDK: 1,005 staged files would be slow and prove nothing more here.
    for chunk in keys.chunks(64) {
        join_all(chunk.iter().map(|key| {
            store
                .client()
                .put_object()
                .bucket(bucket.name())
                .key(key.to_string())
                .body(b"x".to_vec().into())
                .send()
        }))
        .await
        .into_iter()
        .for_each(|r| {
            r.expect("put");
        });
    }
    keys.sort_by_key(ObjectKey::to_string);
    let expected: Vec<StoreKey> = keys.into_iter().map(StoreKey::from).collect();
    // S3 returns at most 1,000 keys per request: two pages at the most, three of 400.
    let (all, pages) = list_all(&store, packages_of("many/", "fn"), 5000).await;
    assert_eq!((all.len(), pages), (1005, 2));
    assert_eq!(all, expected);
    let (all, pages) = list_all(&store, packages_of("many/", "fn"), 400).await;
    assert_eq!((all, pages), (expected, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_is_unavailable_quickly_then_recovers() {
    let mut server = tokio::task::spawn_blocking(MotoServer::start).await.expect("start moto");
    let bucket = TestBucket::create(&server).await;
    let store = bucket.store();
    let bytes = noise(512, 70);
    let key = key_of("", "outage", &bytes);
    put(&store, &key, &bytes).await;

    let mut server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .expect("stop moto");
    let started = std::time::Instant::now();
    let head = store.head(&(&key).into()).await;
    assert!(matches!(head, Err(Error::Unavailable(_))), "{head:?}");
    assert!(matches!(store.ready().await, Err(Error::Unavailable(_))));
    let put_result = store.put_if_absent(&(&key).into(), stage(&bytes)).await;
    assert!(matches!(put_result, Err(Error::Unavailable(_))), "{put_result:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "an outage is reported in seconds, not minutes: {:?}",
        started.elapsed()
    );

    // Back (moto restarts empty): the same store works again, without a new client.
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .expect("restart moto");
    bucket.recreate().await;
    store.ready().await.expect("ready after the restart");
    assert!(matches!(put(&store, &key, &bytes).await, PutOutcome::Created { .. }));
    assert_eq!(bucket.keys().await, vec![key.to_string()]);
    drop(bucket);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_denied_access_is_an_error_never_absent() {
    let server =
        tokio::task::spawn_blocking(MotoServer::start_with_auth).await.expect("start moto with auth");
    let config = lambda_packager::store::config::S3StoreConfig {
        bucket: "lp-denied".into(),
        region: Some(crate::support::s3::REGION.into()),
        endpoint: Some(server.endpoint()),
        force_path_style: true,
    };
    let store = crate::support::s3::store_for(&config);
    let bytes = noise(64, 80);
    let key = key_of("", "denied", &bytes);
    let head = store.head(&(&key).into()).await;
    assert!(matches!(head, Err(Error::Denied(_))), "{head:?}");
    let put_result = store.put_if_absent(&(&key).into(), stage(&bytes)).await;
    assert!(matches!(put_result, Err(Error::Denied(_))), "{put_result:?}");
    assert!(matches!(store.ready().await, Err(Error::Denied(_))));
    let listed = store.list(&ListRequest::new(packages_of("", "denied"), 10)).await;
    assert!(matches!(listed, Err(Error::Denied(_))), "{listed:?}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_a_temp_file_that_cannot_be_linked_is_copied_into_place() {
    use std::io::Write as _;
    let env = LocalEnv::new();
    // A file that had a name and lost it (not created nameless): `linkat` refuses to name it
    // again, so the store copies it into `.staging/` and renames the copy.
    let bytes = noise(3 << 20, 300);
    let named = tempfile::NamedTempFile::new().expect("a named temp file");
    let mut file = named.reopen().expect("a second handle");
    drop(named);
    file.write_all(&bytes).expect("write");
    let key = key_of("copied/", "fn", &bytes);
    let staged = Staged {
        data: StagedBytes::File(file),
        size: bytes.len() as u64,
        sha256: Sha256Hex::of_bytes(&bytes),
        metadata: tagged("copied"),
    };
    assert!(matches!(
        env.store.put_if_absent(&(&key).into(), staged).await.expect("put"),
        PutOutcome::Created { .. }
    ));
    assert_eq!(read_all(&env.store, &key).await, bytes);
    assert_eq!(head(&env.store, &key).await.expect("exists").metadata, tagged("copied"));
    env.assert_staging_is_empty();
}
