//! A multipart body holds bounded memory however it is shaped (issue #10, point 4): a 200 MB
//! text field, a body with no boundary and a part header that never ends are each refused after
//! their first bytes, against the real binary, while its peak RSS stays flat. Bodies are
//! generated while they are sent, never built whole in the test either.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::faults::{Service, files_under, packages_under, peak_rss_kib};
use crate::support::app::parse_response;

const URI: &str = "/v1/functions/fn/package";
const BOUNDARY: &str = "XyZ-lambda-packager-boundary";
const FIELD_BYTES: u64 = 200_000_000;

/// The answer to a streamed body, and how many body bytes the client had written when it came.
struct Answer {
    status: u16,
    json: serde_json::Value,
    sent_when_answered: u64,
}

/// Reads one response: its head, then `content-length` bytes. The server resets a connection
/// whose body it did not read, so an error once the response is complete does not matter.
async fn read_answer(reader: &mut OwnedReadHalf) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            if raw.len() >= split + 4 + length {
                return raw;
            }
        }
        match reader.read(&mut buf).await {
            Ok(0) => {
                panic!("connection closed before a complete response: {}", String::from_utf8_lossy(&raw))
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{e} before a complete response: {}", String::from_utf8_lossy(&raw)),
        }
    }
}

/// POSTs a multipart body made of `start`, then `filler` bytes of `fill` (written 64 KiB at a
/// time, as fast as the server takes them), then the closing boundary, and reads the answer
/// meanwhile.
async fn stream_multipart(addr: std::net::SocketAddr, start: String, fill: u8, filler: u64) -> Answer {
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let length = start.len() as u64 + filler + tail.len() as u64;
    let head = format!(
        "POST {URI} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\
         content-type: multipart/form-data; boundary={BOUNDARY}\r\ncontent-length: {length}\r\n\r\n{start}"
    );
    let (mut reader, mut writer) = TcpStream::connect(addr).await.expect("connect").into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![fill; 64 * 1024];
        let mut left = filler;
        while left > 0 {
            let n = left.min(chunk.len() as u64);
            writer.write_all(&chunk[..n as usize]).await?;
            counter.fetch_add(n, Ordering::Relaxed);
            left -= n;
        }
        writer.write_all(tail.as_bytes()).await
    });
    let raw = read_answer(&mut reader).await;
    let sent_when_answered = sent.load(Ordering::Relaxed);
    sender.abort();
    let (status, _, body) = parse_response(&raw);
    let json = serde_json::from_slice(&body).expect("a JSON error");
    Answer { status, json, sent_when_answered }
}

#[test]
fn huge_text_fields_and_endless_framing_are_refused_early_within_a_flat_memory_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, temp) = (dir.path().join("artifacts"), dir.path().join("tmp"));
    let service =
        Service::start_with(&store, &[("LAMBDA_PACKAGER_PACK__TEMP_DIR", temp.to_str().expect("UTF-8"))]);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let addr = service.addr;
    let include = format!("--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"include\"\r\n\r\n");
    let no_boundary = String::new();
    let endless_header = format!("--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"path\"\r\nx-pad: ");
    // Eight 200 MB `include` fields at once (the 1.65 GB case), and four of each framing shape.
    let cases: Vec<(&str, String, &str)> = std::iter::repeat_n(("include", include, "invalid_parameter"), 8)
        .chain(std::iter::repeat_n(("no boundary", no_boundary, "invalid_multipart"), 4))
        .chain(std::iter::repeat_n(("endless part header", endless_header, "invalid_multipart"), 4))
        .collect();
    let answers = runtime.block_on(async {
        let tasks: Vec<_> = cases
            .iter()
            .map(|(_, start, _)| tokio::spawn(stream_multipart(addr, start.clone(), b'a', FIELD_BYTES)))
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("upload task"));
        }
        answers
    });
    for ((name, _, code), answer) in cases.iter().zip(&answers) {
        assert_eq!(
            (answer.status, answer.json["error"]["code"].as_str()),
            (400, Some(*code)),
            "{name}: {}",
            answer.json
        );
        // The server stopped reading after the field cap (1 KiB) or the framing budget (1 MiB):
        // what the client could write is that plus what the two sockets' buffers absorb, a few
        // MiB on loopback, never the 200 MB.
        assert!(
            answer.sent_when_answered < 32 << 20,
            "{name}: answered only after {} bytes",
            answer.sent_when_answered
        );
    }
    let most = answers.iter().map(|a| a.sent_when_answered).max().unwrap_or_default();
    eprintln!("most body bytes written before an answer: {most}");
    let message = answers[0].json["error"]["message"].as_str().expect("message");
    assert!(message.contains("include") && message.contains("1024"), "{message}");

    // Measured on the server process (VmHWM) after the sixteen uploads: about 38 MiB (debug
    // build); before the fix one such field took 428 MB, eight 1.65 GB.
    let peak = peak_rss_kib(service.child.id());
    eprintln!("peak RSS of the service after 16 hostile multipart bodies: {peak} KiB");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB over 64 MiB");
    let left: Vec<_> = packages_under(&store).into_iter().chain(files_under(&temp)).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    assert!(files_under(&store.join(".staging")).is_empty(), "staging files left");
}
