//! The S3 store's credentials and region come from the standard AWS chain, web identity (EKS
//! IRSA) included, with the lean feature set (no SDK default HTTPS client, no `sso`); without a
//! region, `serve` stops at startup and says so.
//!
//! The service binary runs with a cleared environment, an empty home (no profile) and instance
//! metadata disabled, so the only source of credentials is `AWS_WEB_IDENTITY_TOKEN_FILE` +
//! `AWS_ROLE_ARN`, exchanged with moto's STS (`AWS_ENDPOINT_URL_STS`). `/readyz` answers 200
//! only if the store's `HeadBucket` was signed, i.e. credentials were resolved; without the role
//! the same setup has none and answers 503.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::s3::{self, TestBucket, free_port, stop_watched, watched};

/// Starts `serve` against `bucket` with only web-identity variables, returns `/readyz`'s status.
fn readyz_with_web_identity(bucket: &str, endpoint: &str, home: &Path, role_arn: Option<&str>) -> u16 {
    let (api, admin) = (free_port(), free_port());
    let token = home.join("token");
    std::fs::write(&token, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0In0.").expect("write the token");
    let log = std::fs::File::create(home.join("serve.log")).expect("log file");
    let mut command = watched(Path::new(env!("CARGO_BIN_EXE_lambda-packager")));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
        .env("AWS_ROLE_SESSION_NAME", "lambda-packager-test")
        .env("AWS_ENDPOINT_URL_STS", endpoint)
        .env("AWS_REGION", s3::REGION)
        .env("LAMBDA_PACKAGER_SERVER__LISTEN", format!("127.0.0.1:{api}"))
        .env("LAMBDA_PACKAGER_SERVER__ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("LAMBDA_PACKAGER_STORE__BACKEND", "s3")
        .env("LAMBDA_PACKAGER_STORE__S3__BUCKET", bucket)
        .env("LAMBDA_PACKAGER_STORE__S3__ENDPOINT", endpoint)
        .env("LAMBDA_PACKAGER_STORE__S3__FORCE_PATH_STYLE", "true")
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log);
    if let Some(role_arn) = role_arn {
        command.env("AWS_ROLE_ARN", role_arn);
    }
    let child = command.spawn().expect("start lambda-packager serve");
    let status = get_status(api, "/readyz", home);
    stop_watched(child);
    status
}

/// The status code of `GET path`, once the server listens.
fn get_status(port: u16, path: &str, home: &Path) -> u16 {
    let started = Instant::now();
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => panic!(
                "serve did not listen on {port}: {e}; its log:\n{}",
                std::fs::read_to_string(home.join("serve.log")).unwrap_or_default()
            ),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_irsa_credentials_reach_the_bucket() {
    let bucket = TestBucket::shared().await;
    let home = tempfile::tempdir().expect("temp home");
    let name = bucket.name().to_owned();
    let endpoint = bucket.config().endpoint.expect("an endpoint");
    let dir = home.path().to_owned();
    let (with_role, without_role) = tokio::task::spawn_blocking(move || {
        let role = "arn:aws:iam::123456789012:role/lambda-packager";
        (
            readyz_with_web_identity(&name, &endpoint, &dir, Some(role)),
            readyz_with_web_identity(&name, &endpoint, &dir, None),
        )
    })
    .await
    .expect("the serve runs");
    assert_eq!(with_role, 200, "web identity credentials were resolved");
    assert_eq!(without_role, 503, "control: no role, no credentials");
}

#[test]
fn serve_without_a_region_stops_at_startup_and_says_so() {
    let home = tempfile::tempdir().expect("temp home");
    let log_path = home.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = watched(Path::new(env!("CARGO_BIN_EXE_lambda-packager")))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        // The region chain would otherwise ask instance metadata, which is not on this machine.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("LAMBDA_PACKAGER_SERVER__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("LAMBDA_PACKAGER_SERVER__ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("LAMBDA_PACKAGER_STORE__BACKEND", "s3")
        .env("LAMBDA_PACKAGER_STORE__S3__BUCKET", "some-bucket")
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .expect("start lambda-packager serve");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "serve kept running without a region");
        std::thread::sleep(Duration::from_millis(25));
    };
    stop_watched(child);
    let output = std::fs::read_to_string(&log_path).expect("read the log");
    assert!(!status.success(), "{output}");
    assert!(output.contains("no AWS region"), "{output}");
}
