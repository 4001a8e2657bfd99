//! One pack for identical concurrent requests: followers wait for the leader's package and
//! answer as a re-post would; a leader that goes away hands the flight to a follower.
//!
//! The tests hold the service's only worker with a blocker, so that every request is in the
//! service before the first one can pack, and release it once the service's own counters show
//! them all waiting: no sleep, no race on who arrives first.

use std::sync::Arc;
use std::time::Duration;

use lambda_packager::packages::{PackCounts, Packages};

use crate::cancellation::eventually;
use crate::golden::mixed;
use crate::support::app::{TestApp, TestResponse};
use crate::support::archive::{Member, tar};

const URI: &str = "/v1/functions/fn/package";

async fn one_worker() -> TestApp {
    TestApp::with(|c| {
        c.pack.workers = 1.try_into().expect("nonzero");
        c.pack.queue_timeout_secs = 120;
    })
    .await
}

/// Occupies the pool's only worker until the returned sender is dropped or sent to.
async fn hold_the_worker(
    packages: &Arc<Packages>,
) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let pool = Arc::clone(packages);
    let blocker = tokio::spawn(async move {
        pool.run_blocking(move || {
            let _ = held.recv();
        })
        .await
        .expect("the blocker runs");
    });
    let busy = Arc::clone(packages);
    assert!(
        eventually(Duration::from_secs(10), || busy.busy_workers() == 1).await,
        "the blocker holds the worker"
    );
    (release, blocker)
}

fn post(app: &TestApp, bundle: &[u8]) -> tokio::task::JoinHandle<TestResponse> {
    let (router, bundle) = (app.router(), bundle.to_vec());
    tokio::spawn(async move {
        let request = axum::http::Request::post(URI).body(axum::body::Body::from(bundle)).expect("request");
        let response = tower::ServiceExt::oneshot(router, request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        TestResponse { status: parts.status, headers: parts.headers, body }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_identical_concurrent_posts_run_one_pack() {
    let app = one_worker().await;
    let packages = Arc::clone(&app.state.packages);
    let bundle = mixed().tar_gz();
    let (release, blocker) = hold_the_worker(&packages).await;

    let posts: Vec<_> = (0..16).map(|_| post(&app, &bundle)).collect();
    let waiting = Arc::clone(&packages);
    assert!(
        eventually(Duration::from_secs(30), || waiting.pack_counts().shared == 15).await,
        "15 posts wait for the first: {:?}",
        waiting.pack_counts()
    );
    assert_eq!(packages.shared_builds_in_progress(), 1);
    release.send(()).expect("release the worker");
    blocker.await.expect("blocker");

    let mut answers = Vec::new();
    for post in posts {
        let response = post.await.expect("post");
        assert!(
            response.status == 200 || response.status == 201,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        answers.push(response.json());
    }
    assert_eq!(packages.pack_counts(), PackCounts { packs: 1, shared: 15 }, "one decode and pack for all");
    let uploaded = answers.iter().filter(|a| a["uploaded"] == true).count();
    assert_eq!(uploaded, 1, "the leader stored it; the others answer as re-posts");
    let mut first = answers[0].clone();
    first["uploaded"] = false.into();
    for answer in &answers {
        let mut answer = answer.clone();
        answer["uploaded"] = false.into();
        assert_eq!(answer, first, "the same key, digest and location for all");
    }
    let stored = app.stored();
    assert_eq!(stored.keys().collect::<Vec<_>>(), [first["key"].as_str().expect("key")]);
    assert_eq!(packages.shared_builds_in_progress(), 0, "the flight is gone once done");

    // Later, a re-post packs again (no flight outlives its requests) and finds the key.
    let again = app.post(URI, bundle).await;
    assert_eq!((again.status.as_u16(), &again.json()["key"]), (200, &first["key"]));
    assert_eq!(packages.pack_counts().packs, 2);
}

/// The leader's client goes away while the leader waits for the worker: its followers do not
/// fail with it; one of them leads, packs once, and both are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_a_leader_that_goes_away_pack_once_and_are_answered() {
    let app = one_worker().await;
    let packages = Arc::clone(&app.state.packages);
    let bundle = mixed().tar_gz();
    let (release, blocker) = hold_the_worker(&packages).await;

    let leader = post(&app, &bundle);
    let flying = Arc::clone(&packages);
    assert!(eventually(Duration::from_secs(30), || flying.shared_builds_in_progress() == 1).await);
    let followers = [post(&app, &bundle), post(&app, &bundle)];
    let waiting = Arc::clone(&packages);
    assert!(eventually(Duration::from_secs(30), || waiting.pack_counts().shared == 2).await);

    leader.abort();
    assert!(leader.await.expect_err("aborted").is_cancelled());
    // One follower leads now, the other follows it: a third wait.
    assert!(
        eventually(Duration::from_secs(30), || waiting.pack_counts().shared == 3).await,
        "{:?}",
        waiting.pack_counts()
    );
    release.send(()).expect("release the worker");
    blocker.await.expect("blocker");

    let mut answers = Vec::new();
    for follower in followers {
        let response = follower.await.expect("follower");
        assert!(
            response.status == 200 || response.status == 201,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        answers.push(response.json());
    }
    assert_eq!(packages.pack_counts().packs, 1, "the gone leader never packed; one follower did");
    let mut uploaded: Vec<_> = answers.iter().map(|a| a["uploaded"].as_bool()).collect();
    uploaded.sort();
    assert_eq!(uploaded, [Some(false), Some(true)]);
    assert_eq!(answers[0]["key"], answers[1]["key"]);
    assert_eq!(app.stored().len(), 1);
    assert_eq!(packages.shared_builds_in_progress(), 0);
    app.assert_no_temp_files();
}

/// Requests that differ in an option do not share: each is its own build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_with_other_options_do_not_share_a_pack() {
    let app = one_worker().await;
    let packages = Arc::clone(&app.state.packages);
    let bundle = mixed().tar_gz();
    let (release, blocker) = hold_the_worker(&packages).await;
    let plain = post(&app, &bundle);
    let (router, body) = (app.router(), bundle.clone());
    let dry = tokio::spawn(async move {
        let request = axum::http::Request::post(format!("{URI}?dry_run=true"))
            .body(axum::body::Body::from(body))
            .expect("request");
        tower::ServiceExt::oneshot(router, request).await.expect("infallible").status()
    });
    let flying = Arc::clone(&packages);
    assert!(eventually(Duration::from_secs(30), || flying.shared_builds_in_progress() == 2).await);
    release.send(()).expect("release the worker");
    blocker.await.expect("blocker");
    assert_eq!(plain.await.expect("post").status, 201);
    assert_eq!(dry.await.expect("dry run"), 200);
    assert_eq!(packages.pack_counts(), PackCounts { packs: 2, shared: 0 });
}

/// A leader whose input is refused hands the refusal to its followers (the same bytes with the
/// same options): they do not decode it again one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_bad_posts_share_the_leaders_refusal() {
    let app = one_worker().await;
    let packages = Arc::clone(&app.state.packages);
    let bundle = tar(&[Member::file("../escape.py", "x = 1\n")]);
    let (release, blocker) = hold_the_worker(&packages).await;
    let posts: Vec<_> = (0..3).map(|_| post(&app, &bundle)).collect();
    let waiting = Arc::clone(&packages);
    assert!(eventually(Duration::from_secs(30), || waiting.pack_counts().shared == 2).await);
    release.send(()).expect("release the worker");
    blocker.await.expect("blocker");
    for post in posts {
        let message = post.await.expect("post").assert_error(422, "invalid_path");
        assert!(message.contains("../escape.py"), "{message}");
    }
    assert_eq!(packages.pack_counts(), PackCounts { packs: 0, shared: 2 }, "no follower boarded again");
    assert!(app.stored().is_empty());
    assert_eq!(packages.shared_builds_in_progress(), 0);
}
