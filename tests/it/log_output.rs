//! What the service writes to a log file (issue #14 "Operations"): the compact format without
//! ANSI colour codes when stderr is not a terminal, and the client as a bare address in both
//! formats (never `Some(127.0.0.1)`). The real binary logs to a file, as under `serve 2>log`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::faults::Service;
use crate::golden::basic;
use crate::support::app::http_request;

/// Starts the service logging in `format` to a file, packages one bundle, and returns the log
/// once it holds the line for that request.
fn log_of_one_request(format: &str, dir: &Path) -> String {
    let log = dir.join("serve.log");
    // An empty NO_COLOR means "not set": only the missing terminal may turn colour off here.
    let env = [("LAMBDA_PACKAGER_LOG__FORMAT", format), ("NO_COLOR", "")];
    let service = Service::start_logging_to(&dir.join("artifacts"), &env, &log);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (status, _, body) =
        runtime.block_on(http_request(service.addr, "POST", "/v1/functions/fn/package", &[], &basic().tar()));
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    // The line is written after the response is sent: wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).expect("read the log");
        if text.contains("finished processing request") {
            return text;
        }
        assert!(Instant::now() < deadline, "no request line in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_compact_log_in_a_file_has_no_colour_codes_and_a_bare_client_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = log_of_one_request("compact", dir.path());
    assert!(!text.contains('\u{1b}'), "ANSI escape codes in a log file:\n{text}");
    let line = text.lines().find(|l| l.contains("finished processing request")).expect("request line");
    assert!(line.contains("client=127.0.0.1"), "{line}");
    assert!(
        line.contains(r#"route="/v1/functions/{function}/package""#) && line.contains("status=201"),
        "{line}"
    );
    assert!(!text.contains("Some("), "{text}");
}

#[test]
fn the_json_log_names_the_client_by_its_bare_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = log_of_one_request("json", dir.path());
    let line = text.lines().find(|l| l.contains("finished processing request")).expect("request line");
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(v["span"]["client"], "127.0.0.1", "{line}");
    assert_eq!(v["span"]["method"], "POST", "{line}");
    assert!(!text.contains("Some("), "{text}");
}

#[test]
fn the_request_line_names_the_token_and_never_shows_the_token_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("serve.log");
    let secret = "the-secret-token-value";
    let tokens = format!(r#"[{{"name": "ci-deploy", "token": "{secret}", "scopes": ["write"]}}]"#);
    let env = [("LAMBDA_PACKAGER_LOG__FORMAT", "json"), ("LAMBDA_PACKAGER_AUTH__TOKENS", tokens.as_str())];
    let service = Service::start_logging_to(&dir.path().join("artifacts"), &env, &log);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let bearer = format!("Bearer {secret}");
    let post = |headers: &[(&str, &str)]| {
        runtime.block_on(http_request(
            service.addr,
            "POST",
            "/v1/functions/fn/package",
            headers,
            &basic().tar(),
        ))
    };
    assert_eq!(post(&[("authorization", &bearer)]).0, 201);
    assert_eq!(post(&[("authorization", "Bearer not-a-token")]).0, 401);
    // Both lines are written after their responses are sent: wait for them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).expect("read the log");
        if text.matches("finished processing request").count() >= 2 {
            break text;
        }
        assert!(Instant::now() < deadline, "no request lines in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("finished processing request"))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let statuses: Vec<(String, Option<&str>)> =
        lines.iter().map(|v| (v["status"].to_string(), v["span"]["token"].as_str())).collect();
    assert_eq!(statuses, [("201".to_owned(), Some("ci-deploy")), ("401".to_owned(), None)], "{text}");
    assert!(!text.contains(secret), "the token itself is in the log:\n{text}");
}
