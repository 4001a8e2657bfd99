//! Issue #10, point 7 (the decoders' and the selection's part): one parse, no differentials.
//! Where two readers could see two different packages in one upload, the upload is refused;
//! where a standard tool reads an input one way (gzip's zero padding), so do we.

use std::io::Write as _;
use std::process::{Command, Stdio};

use rstest::rstest;

use crate::support::app::TestApp;
use crate::support::archive::{Member, ZipMember, gzip, tar, zip};

const URI: &str = "/v1/functions/fn/package";

fn files() -> Vec<Member> {
    vec![Member::file("handler.py", "def handler(e, c):\n    return 1\n"), Member::file("etc/passwd", "x\n")]
}

/// A zip whose first entry's local header says `local` where the central directory says
/// `central`: extractors that walk local headers and those that read the directory disagree.
fn zip_with_local_name(central: &str, local: &str) -> Vec<u8> {
    assert_eq!(central.len(), local.len(), "same length, so every offset stays right");
    let mut bytes = zip(&[ZipMember::file(central, "print('which one?')\n", 0o644)]);
    bytes[30..30 + local.len()].copy_from_slice(local.as_bytes());
    bytes
}

/// A directory entry that carries bytes: what an extractor that writes every entry's data
/// would put somewhere, and what a tree reader never sees.
fn zip_directory_with_data(method: u16, unix: bool) -> Vec<u8> {
    let mut dir = ZipMember::file("lib/", "hidden bytes", 0o755);
    dir.method = method;
    dir.external_attributes = if unix { (0o040_755) << 16 } else { 0x10 };
    dir.system = if unix { 3 } else { 0 };
    zip(&[dir, ZipMember::file("lib/a.py", "x = 1\n", 0o644)])
}

fn gzip_then(tail: &[u8]) -> Vec<u8> {
    let mut bytes = gzip(&tar(&files()));
    bytes.extend_from_slice(tail);
    bytes
}

#[rstest]
#[case::zip_local_name_differs_from_the_central_directory(zip_with_local_name("a.py", "b.py"))]
#[case::zip_local_name_differs_in_a_directory(zip_with_local_name("x/a.py", "y/a.py"))]
#[case::zip_unix_directory_with_stored_data(zip_directory_with_data(0, true))]
#[case::zip_dos_directory_with_deflated_data(zip_directory_with_data(8, false))]
#[case::gzip_zero_padding_then_garbage(gzip_then(&[&[0u8; 512][..], b"garbage"].concat()))]
#[tokio::test]
async fn uploads_two_readers_would_read_differently_are_refused_and_nothing_is_stored(
    #[case] bytes: Vec<u8>,
) {
    let app = TestApp::new().await;
    app.post(URI, bytes.clone()).await.assert_error(400, "corrupt_archive");
    app.post_multipart(URI, &[], &bytes).await.assert_error(400, "corrupt_archive");
    assert!(app.stored().is_empty(), "stored: {:?}", app.stored().keys());
    app.assert_no_temp_files();
}

#[tokio::test]
async fn a_directory_entry_without_data_is_still_a_directory() {
    let app = TestApp::new().await;
    let mut dir = ZipMember::file("lib/", "", 0o755);
    dir.external_attributes = (0o040_755) << 16;
    let with_dir = app.post(URI, zip(&[dir, ZipMember::file("lib/a.py", "x = 1\n", 0o644)])).await;
    assert_eq!(with_dir.status, 201, "{}", String::from_utf8_lossy(&with_dir.body));
    let without = app.post(URI, zip(&[ZipMember::file("lib/a.py", "x = 1\n", 0o644)])).await.json();
    assert_eq!(
        (without["key"].clone(), without["uploaded"].clone()),
        (with_dir.json()["key"].clone(), false.into())
    );
}

/// `gzip -d` (an independent reader) decodes gzip followed by zeros silently, and so do we: the
/// package is the one of the same tar without the padding.
#[tokio::test]
async fn gzip_followed_by_zero_padding_is_read_as_gzip_d_reads_it() {
    let padded = gzip_then(&[0u8; 10_000]);
    let mut gunzip = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gzip runs");
    gunzip.stdin.take().expect("stdin").write_all(&padded).expect("feed gzip");
    let out = gunzip.wait_with_output().expect("gzip finishes");
    assert!(out.status.success() && out.stderr.is_empty(), "gzip -d: {out:?}");
    assert_eq!(out.stdout, tar(&files()), "gzip -d reads the tar and ignores the zeros");

    let app = TestApp::new().await;
    let plain = app.post(URI, gzip(&tar(&files()))).await.json();
    let r = app.post(URI, padded).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["key"], plain["key"]);
    assert_eq!(app.stored().len(), 1);
    app.assert_no_temp_files();
}

#[rstest]
#[case::absolute_path("path=/etc", 400, "invalid_selection")]
#[case::root_path("path=/", 400, "invalid_selection")]
#[case::unclosed_class_include("include=%5B", 400, "invalid_pattern")]
#[case::unclosed_class_exclude("exclude=*.py%5B", 400, "invalid_pattern")]
#[tokio::test]
async fn options_that_would_be_silently_reinterpreted_are_refused(
    #[case] query: &str,
    #[case] status: u16,
    #[case] code: &str,
) {
    let app = TestApp::new().await;
    let message = app.post(&format!("{URI}?{query}"), tar(&files())).await.assert_error(status, code);
    assert!(!message.is_empty());
    assert!(app.stored().is_empty(), "stored: {:?}", app.stored().keys());
    app.assert_no_temp_files();
    // The relative spelling is what `path=/etc` used to mean, and it still works.
    let relative = app.post(&format!("{URI}?path=etc"), tar(&files())).await.json();
    assert_eq!(relative["files"], 1, "{relative}");
}
