//! Metric labels are bounded (issue #10, point 3): requests with made-up methods on made-up
//! paths, without a token, against the real binary, add no series to `/metrics` and do not grow
//! the server's memory.

use std::collections::BTreeSet;

use crate::faults::{Service, files_under, packages_under, peak_rss_kib, wait_for_startup_scan};
use crate::support::app::http_request;

/// The label sets of every series of `name` in a Prometheus text page.
fn series(page: &str, name: &str) -> BTreeSet<String> {
    let start = format!("{name}{{");
    page.lines()
        .filter(|l| l.starts_with(&start))
        .filter_map(|l| l.rfind('}').map(|end| l[..=end].to_owned()))
        .collect()
}

/// The value of one series.
fn value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
}

/// A made-up method token (never a standard method: those are upper case and this mixes cases).
fn method(x: u64) -> String {
    let letters: String = (0..3 + x % 9).map(|i| (b'a' + ((x >> (i * 5)) % 26) as u8) as char).collect();
    format!("X{letters}")
}

/// One of the request shapes an attacker would send: a made-up method on a made-up path, on a
/// routed path, or a standard method on a made-up path.
fn request(x: u64) -> (String, String) {
    match x % 4 {
        0 => (method(x), format!("/{x:x}/{:x}", x.rotate_left(17))),
        1 => (method(x), "/v1/functions/fn/package".to_owned()),
        2 => (method(x), "/healthz".to_owned()),
        _ => ("GET".to_owned(), format!("/v1/{x:x}")),
    }
}

async fn metrics_page(service: &Service) -> String {
    let (status, _, body) = http_request(service.admin, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    String::from_utf8(body).expect("UTF-8 metrics")
}

#[test]
fn thousands_of_random_methods_and_paths_add_no_metric_series_and_no_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, temp) = (dir.path().join("artifacts"), dir.path().join("tmp"));
    let temp_dir = temp.to_str().expect("UTF-8 path");
    let service = Service::start_with(
        &store,
        &[("LAMBDA_PACKAGER_PACK__TEMP_DIR", temp_dir), ("LAMBDA_PACKAGER_AUTH__TOKENS", r#"["s3cret"]"#)],
    );
    wait_for_startup_scan(&store);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let addr = service.addr;
    // `count` requests over 4 connections at a time, request numbers from `first`.
    let fire = |first: u64, count: u64| {
        runtime.block_on(async move {
            let tasks: Vec<_> = (0..4u64)
                .map(|lane| {
                    tokio::spawn(async move {
                        for i in (first + lane..first + count).step_by(4) {
                            // Spread the request numbers over the whole u64 range.
                            let (method, path) = request(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i);
                            let (status, _, _) = http_request(addr, &method, &path, &[], b"").await;
                            assert!(matches!(status, 401 | 404 | 405), "{method} {path}: {status}");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("requests");
            }
        });
    };
    // Every request shape once, so every label combination they can produce exists.
    fire(0, 400);
    let before = runtime.block_on(metrics_page(&service));
    fire(400, 6000);
    let after = runtime.block_on(metrics_page(&service));

    let other_unmatched = r#"http_requests_total{method="other",route="unmatched",status="404"}"#;
    assert!(value(&after, other_unmatched) >= 1500.0, "the requests were counted:\n{after}");
    for name in ["http_requests_total", "http_request_duration_seconds_count"] {
        let (first, last) = (series(&before, name), series(&after, name));
        assert_eq!(first, last, "6,000 more odd requests added {name} series");
        for labels in &last {
            let methods =
                ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other"];
            let method_ok = methods.iter().any(|m| labels.contains(&format!("method=\"{m}\"")));
            let route_ok = ["unmatched", "/healthz", "/v1/functions/{function}/package"]
                .iter()
                .any(|r| labels.contains(&format!("route=\"{r}\"")));
            assert!(method_ok && route_ok, "unbounded label value in {labels}");
        }
    }
    assert_eq!(before.lines().count(), after.lines().count(), "/metrics did not grow");

    // Measured on the server process (VmHWM) after 6,400 requests: about 30 MiB (debug build).
    // The ceiling leaves room for a noisy machine, not for a registry growing per request.
    let peak = peak_rss_kib(service.child.id());
    eprintln!("peak RSS of the service after 6,400 odd requests: {peak} KiB");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB over 64 MiB");
    let left: Vec<_> = packages_under(&store).into_iter().chain(files_under(&temp)).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    assert!(files_under(&store.join(".staging")).is_empty(), "staging files left");
}
