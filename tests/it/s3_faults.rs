//! The service on S3 when the network or the store misbehaves: a fault-injecting proxy
//! (`support/fault_proxy.rs`) sits between the S3 store and a real moto server and refuses
//! connections, answers 503/500/409/403 itself, delays answers, or lets a PUT commit and never
//! answers it.
//!
//! Every test checks the HTTP answer (status, error code, `Retry-After`), the bucket, read
//! straight from moto (no object, or exactly one whose bytes are the package and hash to its
//! key), and what the proxy saw when the count proves something (retries made, no PUT sent).
//! The store behind the proxy makes [`ATTEMPTS`] attempts of at most [`ATTEMPT_TIMEOUT`] each, so
//! every failure ends in seconds.

use std::time::{Duration, Instant};

use lambda_packager::package::Sha256Hex;
use lambda_packager::store::config::S3StoreConfig;
use lambda_packager::store::s3::{S3Settings, S3Store};
use rstest::rstest;
use serde_json::Value;

use crate::golden::basic;
use crate::support::app::{TestApp, TestResponse, http_request};
use crate::support::fault_proxy::{Fault, FaultProxy, Kind};
use crate::support::s3::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, TestBucket};
use crate::support::{Built, pack_archive};

const URI: &str = "/v1/functions/orders/package";

/// Attempts per S3 request (the SDK's retries included).
const ATTEMPTS: u32 = 3;

/// Longest attempt of any S3 request, uploads included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// A bucket on the shared moto server, a proxy in front of it, and the package under test.
struct Faulty {
    bucket: TestBucket,
    proxy: FaultProxy,
    bundle: Vec<u8>,
    expected: Built,
    key: String,
}

impl Faulty {
    async fn new() -> Self {
        let bucket = TestBucket::shared().await;
        let proxy = FaultProxy::to_endpoint(bucket.config().endpoint.as_deref().expect("moto's endpoint"));
        let bundle = basic().tar();
        let expected = pack_archive(&bundle);
        let key = format!("lambda-orders-{}.zip", expected.packed.sha256);
        Self { bucket, proxy, bundle, expected, key }
    }

    /// A replica of the service whose S3 store goes through the proxy.
    fn replica(&self) -> TestApp {
        let config = S3StoreConfig { endpoint: Some(self.proxy.endpoint()), ..self.bucket.config() };
        let settings = S3Settings {
            max_attempts: ATTEMPTS,
            initial_backoff: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: ATTEMPT_TIMEOUT,
            put_attempt_timeout: ATTEMPT_TIMEOUT,
        };
        let store = S3Store::with_static_credentials(&config, ACCESS_KEY_ID, SECRET_ACCESS_KEY, settings);
        TestApp::on_s3_store(config, store, |_| {})
    }

    async fn post(&self, app: &TestApp) -> TestResponse {
        app.post(URI, self.bundle.clone()).await
    }

    /// The answer says the package is stored under its key; `uploaded` is whether this request
    /// stored it (201) or found it (200).
    #[track_caller]
    fn assert_stored_answer(&self, response: &TestResponse, status: u16) {
        let v = response.json();
        assert_eq!(response.status, status, "{v}");
        assert_eq!(v["key"], self.key.as_str());
        assert_eq!(v["sha256"], self.expected.packed.sha256.to_string().as_str());
        assert_eq!(v["uploaded"], status == 201);
    }

    /// The bucket holds exactly one object: the package, under its key, hashing to that key.
    async fn assert_stored_once(&self) {
        let objects = self.bucket.objects().await;
        assert_eq!(objects.keys().collect::<Vec<_>>(), [&self.key], "exactly one object");
        let stored = &objects[&self.key];
        let digest = Sha256Hex::of_bytes(stored);
        assert!(self.key.ends_with(&format!("-{digest}.zip")), "the stored bytes hash to the key");
        assert!(stored == &self.expected.bytes, "the stored bytes are the canonical zip");
    }

    async fn assert_nothing_stored(&self) {
        assert_eq!(self.bucket.keys().await, Vec::<String>::new(), "nothing stored");
    }

    #[track_caller]
    fn assert_seen(&self, kind: Kind, expected: u32) {
        assert_eq!(self.proxy.seen(kind), expected, "{kind:?} requests; all: {:?}", self.proxy.counts());
    }
}

/// 503 `store_unavailable`, with the Retry-After the client should honour.
#[track_caller]
fn assert_unavailable(response: &TestResponse) {
    response.assert_error(503, "store_unavailable");
    assert_eq!(response.headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"5"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_answer_503_with_retry_after_and_store_nothing_until_the_store_is_back() {
    let mut faulty = Faulty::new().await;
    let app = faulty.replica();
    faulty.proxy.refuse_connections().await;

    assert_unavailable(&faulty.post(&app).await);
    assert_unavailable(&app.get("/readyz").await);
    faulty.assert_nothing_stored().await;
    app.assert_no_temp_files();

    faulty.proxy.accept_connections();
    faulty.assert_stored_answer(&faulty.post(&app).await, 201);
    faulty.assert_stored_once().await;
    // Nothing got through while the proxy refused: the one HEAD and PUT are the second POST's.
    faulty.assert_seen(Kind::Head, 1);
    faulty.assert_seen(Kind::Put, 1);
    faulty.proxy.stop().await;
}

#[rstest]
#[case::slow_down(Fault::SLOW_DOWN)]
#[case::internal_error(Fault::INTERNAL_ERROR)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_5xx_than_attempts_are_retried_by_the_sdk_and_store_one_object(#[case] fault: Fault) {
    let faulty = Faulty::new().await;
    let app = faulty.replica();
    faulty.proxy.inject(Kind::Put, 1..ATTEMPTS, fault);

    faulty.assert_stored_answer(&faulty.post(&app).await, 201);
    faulty.assert_stored_once().await;
    faulty.assert_seen(Kind::Put, ATTEMPTS);
    faulty.proxy.stop().await;
}

#[rstest]
#[case::slow_down_on_put(Kind::Put, Fault::SLOW_DOWN)]
#[case::internal_error_on_put(Kind::Put, Fault::INTERNAL_ERROR)]
#[case::slow_down_on_head(Kind::Head, Fault::SLOW_DOWN)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_5xx_answer_503_with_retry_after_after_every_attempt_and_store_nothing(
    #[case] kind: Kind,
    #[case] fault: Fault,
) {
    let faulty = Faulty::new().await;
    let app = faulty.replica();
    faulty.proxy.inject(kind, .., fault);

    let response = faulty.post(&app).await;
    assert_unavailable(&response);
    faulty.assert_nothing_stored().await;
    // The SDK made its attempts, and nothing above it added more.
    faulty.assert_seen(kind, ATTEMPTS);
    if kind == Kind::Head {
        faulty.assert_seen(Kind::Put, 0);
    }
    app.assert_no_temp_files();
    faulty.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_request_conflict_on_the_first_put_is_retried_after_a_backoff_and_stores_once() {
    let faulty = Faulty::new().await;
    let app = faulty.replica();
    // The SDK does not retry a 409; the store's own backoff loop does.
    faulty.proxy.inject(Kind::Put, 1..=1, Fault::CONDITIONAL_CONFLICT);

    faulty.assert_stored_answer(&faulty.post(&app).await, 201);
    faulty.assert_stored_once().await;
    faulty.assert_seen(Kind::Put, 2);
    faulty.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_request_conflict_that_outlasts_the_backoff_answers_503_with_retry_after() {
    let faulty = Faulty::new().await;
    let app = faulty.replica();
    faulty.proxy.inject(Kind::Put, .., Fault::CONDITIONAL_CONFLICT);

    // Another write to the key is still in flight: "retry later", not a store failure.
    assert_unavailable(&faulty.post(&app).await);
    faulty.assert_nothing_stored().await;
    // The first PUT and the store's five retries (100 ms doubling to 1.6 s).
    faulty.assert_seen(Kind::Put, 6);
    faulty.proxy.stop().await;
}

/// `then_409` is what S3 may answer while the lost write is still finishing.
#[rstest]
#[case::then_412(false)]
#[case::then_409_then_412(true)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_committed_whose_answer_is_lost_is_retried_into_412_and_answers_the_right_key(
    #[case] then_409: bool,
) {
    let faulty = Faulty::new().await;
    let app = faulty.replica();
    faulty.proxy.inject(Kind::Put, 1..=1, Fault::Hang);
    if then_409 {
        faulty.proxy.inject(Kind::Put, 2..=2, Fault::CONDITIONAL_CONFLICT);
    }

    let started = Instant::now();
    let response = faulty.post(&app).await;
    assert!(started.elapsed() >= ATTEMPT_TIMEOUT, "the first PUT timed out");
    // The first PUT stored the object, but its answer never came; a retry got 412, and the
    // HEAD after it found the same bytes. The answer is the right key with `uploaded: false`:
    // this request cannot know its lost attempt was the one that landed, and nothing a client
    // does with the answer (deploy the key) depends on who stored it. Claiming `uploaded: true`
    // from a 412 would be wrong whenever another replica stored it.
    faulty.assert_stored_answer(&response, 200);
    faulty.assert_stored_once().await;
    faulty.assert_seen(Kind::Put, if then_409 { 3 } else { 2 });
    // The first HEAD found nothing; the second verified the object after the 412.
    faulty.assert_seen(Kind::Head, 2);
    faulty.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_usual_but_within_the_attempt_timeout_succeed_without_a_retry() {
    let faulty = Faulty::new().await;
    let app = faulty.replica();
    let slow = Fault::Delay(ATTEMPT_TIMEOUT / 4);
    faulty.proxy.inject(Kind::Head, .., slow);
    faulty.proxy.inject(Kind::Put, .., slow);

    faulty.assert_stored_answer(&faulty.post(&app).await, 201);
    faulty.assert_stored_once().await;
    faulty.assert_seen(Kind::Head, 1);
    faulty.assert_seen(Kind::Put, 1);
    faulty.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_answers_slower_than_the_attempt_timeout_end_in_503_and_never_a_second_object() {
    let faulty = Faulty::new().await;
    let app = faulty.replica();
    faulty.proxy.inject(Kind::Put, .., Fault::Delay(ATTEMPT_TIMEOUT * 3));

    // Every attempt reached moto (the first stored the object, the others got 412) and every
    // answer came too late: the request cannot tell, so it answers "retry".
    assert_unavailable(&faulty.post(&app).await);
    faulty.assert_seen(Kind::Put, ATTEMPTS);
    faulty.assert_stored_once().await;

    // The retry the client was told to make finds the object the first attempt stored.
    faulty.proxy.clear_faults();
    faulty.assert_stored_answer(&faulty.post(&app).await, 200);
    faulty.assert_seen(Kind::Put, ATTEMPTS);
    faulty.assert_stored_once().await;
    faulty.proxy.stop().await;
}

#[rstest]
#[case::on_head(Kind::Head)]
#[case::on_put(Kind::Put)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_is_access_denied_never_retried_and_never_read_as_absent(#[case] kind: Kind) {
    let faulty = Faulty::new().await;
    let app = faulty.replica();
    faulty.proxy.inject(kind, .., Fault::ACCESS_DENIED);

    let response = faulty.post(&app).await;
    response.assert_error(502, "store_access_denied");
    assert!(response.headers.get("retry-after").is_none(), "retrying does not fix credentials");
    // One attempt. A denied HEAD says nothing about whether the key exists: no PUT follows it.
    faulty.assert_seen(kind, 1);
    faulty.assert_seen(Kind::Put, u32::from(kind == Kind::Put));
    faulty.assert_nothing_stored().await;
    app.assert_no_temp_files();
    faulty.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_racing_sixteen_uploads_through_throttled_puts_store_one_object_under_one_key() {
    let faulty = Faulty::new().await;
    // Fewer injected failures than two requests' worth of attempts: at most one request can
    // run out of attempts, every other one must succeed.
    let throttled = 2 * ATTEMPTS - 2;
    faulty.proxy.inject(Kind::Put, 1..=throttled, Fault::SLOW_DOWN);
    let replicas = [faulty.replica(), faulty.replica(), faulty.replica()];
    let mut servers = Vec::new();
    for replica in &replicas {
        servers.push(replica.spawn().await);
    }

    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (addr, bundle) = (servers[i % 3].addr, faulty.bundle.clone());
            tokio::spawn(async move { http_request(addr, "POST", URI, &[], &bundle).await })
        })
        .collect();
    let (mut created, mut found, mut unavailable) = (0, 0, 0);
    for task in tasks {
        let (status, headers, body) = task.await.expect("request task");
        let v: Value = serde_json::from_slice(&body).expect("a JSON answer");
        match status {
            200 | 201 => {
                assert_eq!(v["key"], faulty.key.as_str(), "every success carries the one key");
                assert_eq!(v["uploaded"], status == 201);
                if status == 201 { created += 1 } else { found += 1 }
            }
            503 => {
                assert_eq!(v["error"]["code"], "store_unavailable");
                assert_eq!(headers.get("retry-after").map(String::as_str), Some("5"));
                unavailable += 1;
            }
            _ => panic!("unexpected answer {status}: {v}"),
        }
    }
    assert!(unavailable <= 1, "{unavailable} requests ran out of attempts");
    // moto's conditional PUT is check-then-act, so two PUTs racing inside it may both "create"
    // the same bytes; S3 answers the loser 412 or 409. Either way: one object, one key.
    assert!(created >= 1, "someone stored it ({created} created, {found} found)");
    assert_eq!(created + found + unavailable, 16);
    faulty.assert_stored_once().await;
    assert!(faulty.proxy.seen(Kind::Put) > throttled, "{:?}", faulty.proxy.counts());

    for server in servers {
        server.stop().await.expect("the replica stops");
    }
    faulty.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_retried_through_throttling_and_answer_503_with_retry_after_while_it_lasts() {
    let faulty = Faulty::new().await;
    let app = faulty.replica();
    faulty.assert_stored_answer(&faulty.post(&app).await, 201);
    let zip_uri = format!("/v1/artifacts/{}/zip", faulty.key);

    // One throttled answer per kind of read: the SDK's retry hides it. The listing reads the
    // index: one LIST of its log, one GET of the slot.
    let (gets, lists) = (faulty.proxy.seen(Kind::IndexGet), faulty.proxy.seen(Kind::IndexList));
    faulty.proxy.inject(Kind::Get, 1..=1, Fault::SLOW_DOWN);
    faulty.proxy.inject(Kind::IndexList, lists + 1..=lists + 1, Fault::SLOW_DOWN);
    faulty.proxy.inject(Kind::IndexGet, gets + 1..=gets + 1, Fault::SLOW_DOWN);
    let zip = app.get(&zip_uri).await;
    assert_eq!(zip.status, 200);
    assert!(zip.body == faulty.expected.bytes, "the whole package, byte for byte");
    let listed = app.get("/v1/functions/orders/artifacts").await.json();
    assert_eq!(listed["artifacts"][0]["key"], faulty.key.as_str(), "{listed}");
    faulty.assert_seen(Kind::Get, 2);
    faulty.assert_seen(Kind::IndexList, lists + 2);
    faulty.assert_seen(Kind::IndexGet, gets + 2);

    // A store that keeps failing: the reads say "retry later", like the uploads.
    faulty.proxy.clear_faults();
    faulty.proxy.inject(Kind::Get, .., Fault::INTERNAL_ERROR);
    faulty.proxy.inject(Kind::IndexList, .., Fault::INTERNAL_ERROR);
    assert_unavailable(&app.get(&zip_uri).await);
    assert_unavailable(&app.get("/v1/functions/orders/artifacts").await);
    faulty.assert_seen(Kind::Get, 2 + ATTEMPTS);
    faulty.assert_seen(Kind::IndexList, lists + 2 + ATTEMPTS);
    faulty.assert_stored_once().await;
    faulty.proxy.stop().await;
}
