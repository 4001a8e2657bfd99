//! Slow clients cannot lock others out (issue #10, point 6): uploads that trickle below the
//! minimum body rate are cut off with 408 `upload_too_slow` after one window, callers without a
//! token are answered 401 (never 503) while every slot is held, and the slots come back.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::golden::basic;
use crate::support::app::{TestApp, http_request, multipart, parse_response};

const URI: &str = "/v1/functions/fn/package";
const TOKEN: &str = "s3cret";
const WINDOW_SECS: u64 = 2;

async fn app() -> TestApp {
    TestApp::with(|c| {
        c.server.concurrency_limit = 2;
        c.server.min_body_rate_bytes_per_sec = 1024;
        c.server.min_body_rate_window_secs = WINDOW_SECS;
        c.auth.tokens = vec![TOKEN.to_owned().into()];
    })
    .await
}

/// An upload that announces `body` and sends it one byte every 100 ms (10 bytes/s) until the
/// server answers; returns the answer's status and body, and when the first byte was sent.
async fn trickle(addr: std::net::SocketAddr, content_type: String, body: Vec<u8>) -> (u16, Vec<u8>, Instant) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {URI} HTTP/1.1\r\nhost: t\r\nconnection: close\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    // Before the head: the server's window cannot start earlier than this.
    let started = Instant::now();
    writer.write_all(head.as_bytes()).await.expect("head");
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for byte in body {
            tick.tick().await;
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
        }
    });
    let mut raw = Vec::new();
    // The server closes the connection after its answer.
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut raw).await;
    sender.abort();
    let (status, _, body) = parse_response(&raw);
    (status, body, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_uploads_get_408_after_one_window_and_never_lock_out_others() {
    let app = app().await;
    let server = app.spawn().await;
    let addr = server.addr;
    let bundle = basic().tar();
    let (ct, form) = multipart(&[], &bundle);
    let raw = tokio::spawn(trickle(addr, "application/octet-stream".into(), bundle.clone()));
    let form = tokio::spawn(trickle(addr, ct, form));
    // Both slots are held once both handlers are reading their bodies.
    while app.state.settings.in_flight.available_permits() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Without a token: 401, even though no slot is free.
    let (status, headers, body) = http_request(addr, "POST", URI, &[], &bundle).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("unauthorized")), "{v}");
    assert_eq!(headers.get("www-authenticate").map(String::as_str), Some("Bearer"));
    let (status, _, _) = http_request(addr, "GET", "/v1/functions/fn/artifacts", &[], b"").await;
    assert_eq!(status, 401);
    // With one: the slots are really taken.
    let auth = ("authorization", "Bearer s3cret");
    let (status, _, body) = http_request(addr, "POST", URI, &[auth], &bundle).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!((status, v["error"]["code"].as_str()), (503, Some("overloaded")), "{v}");

    for (shape, trickler) in [("raw", raw), ("multipart", form)] {
        let (status, body, started) = trickler.await.expect("trickler");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!((status, v["error"]["code"].as_str()), (408, Some("upload_too_slow")), "{shape}: {v}");
        assert!(v["error"]["message"].as_str().expect("message").contains("1024 bytes per second"), "{v}");
        // Cut off by the window's end, not by anything earlier (the request timeout is 300 s).
        assert!(started.elapsed() >= Duration::from_secs(WINDOW_SECS), "{shape}: before the window ended");
    }
    // Their slots come back, and a normal upload goes through.
    while app.state.settings.in_flight.available_permits() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, _, body) = http_request(addr, "POST", URI, &[auth], &bundle).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    server.stop().await.expect("stops");
    assert_eq!(app.stored().len(), 1, "only the normal upload is stored");
    app.assert_no_temp_files();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_above_the_minimum_rate_is_accepted_however_long_it_takes() {
    let app = app().await;
    let server = app.spawn().await;
    // 512 bytes every 100 ms (5 KiB/s, five times the minimum) for more than one window.
    let bundle = crate::support::Fixture::new().file("handler.py", crate::support::noise(12_000, 7)).tar_gz();
    assert!(bundle.len() > 5 * 1024 * WINDOW_SECS as usize, "spans more than one window");
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let head = format!(
        "POST {URI} HTTP/1.1\r\nhost: t\r\nconnection: close\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\n\r\n",
        bundle.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for piece in bundle.chunks(512) {
        tick.tick().await;
        stream.write_all(piece).await.expect("a piece of the body");
    }
    let (status, _, body) = crate::support::app::read_response(&mut stream).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    server.stop().await.expect("stops");
    assert_eq!(app.stored().len(), 1);
    app.assert_no_temp_files();
}
