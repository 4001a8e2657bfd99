//! Every way an input can be bad gets its stable error code: never a panic, never a package.

use lambda_packager::package::Limits;
use lambda_packager::source::Selection;
use rstest::rstest;

use crate::support::archive::{self, Member, ZipMember, gzip, tar, tar_without_end};
use crate::support::{archive_error, pack_archive, try_pack_archive};

fn t(members: &[Member]) -> Vec<u8> {
    tar(members)
}

fn ok_file() -> Member {
    Member::file("ok.py", "x = 1\n")
}

/// A tar whose first header has a broken checksum.
fn bad_checksum() -> Vec<u8> {
    let mut bytes = t(&[ok_file()]);
    bytes[148] = b'7';
    bytes
}

/// Only the members, no end-of-archive marker: what a cut-off upload looks like.
fn truncated_at_member_boundary() -> Vec<u8> {
    tar_without_end(&[ok_file(), Member::file("b.py", "y = 2\n")])
}

fn truncated_in_data() -> Vec<u8> {
    let bytes = t(&[Member::file("big.txt", vec![b'x'; 4000])]);
    bytes[..512 + 1000].to_vec()
}

fn truncated_gzip() -> Vec<u8> {
    let gz = gzip(&t(&[Member::file("a.txt", archive_text())]));
    gz[..gz.len() - 9].to_vec()
}

fn archive_text() -> Vec<u8> {
    (0..2000).flat_map(|i| format!("line {i}\n").into_bytes()).collect()
}

fn trailing_garbage() -> Vec<u8> {
    let mut bytes = t(&[ok_file()]);
    bytes.extend_from_slice(b"more data after the end");
    bytes
}

fn gzip_then_garbage() -> Vec<u8> {
    let mut bytes = gzip(&t(&[ok_file()]));
    bytes.extend_from_slice(b"not gzip");
    bytes
}

/// 40 MB of zeros in a tar.gz of about 40 KB.
fn gzip_bomb() -> Vec<u8> {
    let mut m = Member::file("zeros.bin", Vec::new());
    m.header_size = Some(40 << 20);
    let mut bytes = archive::header(&m).to_vec();
    bytes.resize(512 + (40 << 20), 0);
    bytes.extend_from_slice(&[0u8; 1024]);
    gzip(&bytes)
}

fn long_name_over_cap() -> Vec<u8> {
    t(&[Member::gnu_long_name(&vec![b'a'; 70_000]), ok_file()])
}

fn pax_over_cap() -> Vec<u8> {
    t(&[Member::pax(&[("comment", &vec![b'c'; 70_000])]), ok_file()])
}

fn pax_name(name: &[u8]) -> Vec<u8> {
    t(&[Member::pax(&[("path", name)]), Member::file("placeholder", "x")])
}

fn zip_bomb() -> Vec<u8> {
    archive::zip(&[ZipMember::file("zeros.bin", vec![0u8; 40 << 20], 0o644)])
}

fn zip_with(m: ZipMember) -> Vec<u8> {
    archive::zip(&[m])
}

fn deep_path() -> Vec<u8> {
    let name: Vec<String> = (0..70).map(|i| format!("d{i}")).collect();
    t(&[Member::file(name.join("/"), "x")])
}

/// Every hostile archive of the core issue: (case name, bytes, expected code). Shared with the
/// HTTP tests, which send each one raw and as multipart.
pub fn bad_archives() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        ("parent_dir", t(&[Member::file("../x", "x")]), "invalid_path"),
        ("nested_parent_dir", t(&[Member::file("a/../../x", "x")]), "invalid_path"),
        ("absolute", t(&[Member::file("/etc/passwd", "x")]), "invalid_path"),
        ("many_slashes", t(&[Member::file("////x", "x")]), "invalid_path"),
        ("backslash", t(&[Member::file("a\\b.py", "x")]), "invalid_path"),
        ("nul_in_pax_name", pax_name(b"a\0b"), "invalid_path"),
        ("newline", t(&[Member::file("a\nb", "x")]), "invalid_path"),
        ("empty_name", t(&[Member::file("", "x")]), "invalid_path"),
        ("dot_name", t(&[Member::file(".", "x")]), "invalid_path"),
        ("dot_component", t(&[Member::file("a/./b", "x")]), "invalid_path"),
        ("non_utf8", t(&[Member::file(b"caf\xe9.py", "x")]), "invalid_path"),
        ("long_component", t(&[Member::file("x".repeat(256), "x")]), "invalid_path"),
        ("long_path", pax_name(format!("{}/x", "d/".repeat(600)).as_bytes()), "path_too_long"),
        ("deep_path", deep_path(), "path_too_deep"),
        ("char_device", t(&[Member::typed("dev", b'3')]), "unsupported_entry_type"),
        ("block_device", t(&[Member::typed("dev", b'4')]), "unsupported_entry_type"),
        ("fifo", t(&[Member::typed("fifo", b'6')]), "unsupported_entry_type"),
        ("unknown_type", t(&[Member::typed("vol", b'V')]), "unsupported_entry_type"),
        ("gnu_sparse", t(&[Member::typed("sparse", b'S')]), "sparse_entry"),
        ("pax_sparse", t(&[Member::pax(&[("GNU.sparse.major", b"1")]), ok_file()]), "sparse_entry"),
        ("duplicate_file", t(&[ok_file(), ok_file()]), "duplicate_path"),
        ("file_then_dir", t(&[Member::file("a", "x"), Member::file("a/b", "y")]), "path_conflict"),
        ("dir_then_file", t(&[Member::dir("a/"), Member::file("a", "y")]), "path_conflict"),
        (
            "symlink_then_file",
            t(&[Member::symlink("a", "ok.py"), ok_file(), Member::file("a", "y")]),
            "duplicate_path",
        ),
        ("long_name_over_cap", long_name_over_cap(), "header_too_large"),
        ("pax_over_cap", pax_over_cap(), "header_too_large"),
        ("gzip_bomb", gzip_bomb(), "compression_ratio_exceeded"),
        ("zip_bomb", zip_bomb(), "compression_ratio_exceeded"),
        ("bad_checksum", bad_checksum(), "corrupt_archive"),
        ("truncated_at_member_boundary", truncated_at_member_boundary(), "corrupt_archive"),
        ("truncated_in_data", truncated_in_data(), "corrupt_archive"),
        ("truncated_gzip", truncated_gzip(), "corrupt_archive"),
        ("trailing_garbage", trailing_garbage(), "corrupt_archive"),
        ("gzip_then_garbage", gzip_then_garbage(), "corrupt_archive"),
        ("garbage", b"hello, this is not an archive at all".repeat(20), "unsupported_format"),
        ("empty_body", Vec::new(), "unsupported_format"),
        ("bzip2", b"BZh91AY&SY".to_vec(), "unsupported_format"),
        ("gzip_of_garbage", gzip(&[7u8; 2048]), "corrupt_archive"),
        ("hardlink_to_missing", t(&[Member::hardlink("a", "missing")]), "invalid_hardlink"),
        ("hardlink_to_later", t(&[Member::hardlink("a", "ok.py"), ok_file()]), "invalid_hardlink"),
        (
            "hardlink_to_symlink",
            t(&[Member::symlink("s", "ok.py"), ok_file(), Member::hardlink("h", "s")]),
            "invalid_hardlink",
        ),
        ("symlink_absolute", t(&[Member::symlink("a", "/etc/passwd")]), "symlink_escapes"),
        ("symlink_escaping", t(&[Member::symlink("a", "../outside")]), "symlink_escapes"),
        ("symlink_escaping_deep", t(&[Member::symlink("d/a", "../../x"), ok_file()]), "symlink_escapes"),
        ("symlink_broken", t(&[Member::symlink("a", "missing")]), "symlink_broken"),
        ("symlink_through_file", t(&[ok_file(), Member::symlink("a", "ok.py/x")]), "symlink_broken"),
        ("symlink_loop", t(&[Member::symlink("a", "b"), Member::symlink("b", "a")]), "symlink_loop"),
        ("symlink_self", t(&[Member::symlink("a", "a")]), "symlink_loop"),
        ("directory_link_cycle", t(&[ok_file(), Member::symlink("d/up", "..")]), "symlink_loop"),
        ("zip_backslash", zip_with(ZipMember::dos("dir\\file.py", "x")), "invalid_path"),
        ("zip_traversal", zip_with(ZipMember::file("../evil.py", "x", 0o644)), "invalid_path"),
        (
            "zip_duplicate",
            archive::zip(&[ZipMember::file("a.py", "x", 0o644), ZipMember::file("a.py", "y", 0o644)]),
            "duplicate_path",
        ),
        (
            "zip_encrypted",
            zip_with(ZipMember { flags: 1, ..ZipMember::file("a.py", "x", 0o644) }),
            "encrypted_entry",
        ),
        (
            "zip_unsupported_method",
            zip_with(ZipMember { method: 12, ..ZipMember::file("a.py", "x", 0o644) }),
            "unsupported_compression",
        ),
        (
            "zip_bad_crc",
            zip_with(ZipMember { crc_override: Some(1), ..ZipMember::file("a.py", "hello", 0o644) }),
            "corrupt_archive",
        ),
        (
            "zip_size_lie",
            zip_with(ZipMember { size_override: Some(3), ..ZipMember::file("a.py", "hello", 0o644) }),
            "corrupt_archive",
        ),
        (
            "zip_fifo",
            zip_with(ZipMember { external_attributes: 0o010_644 << 16, ..ZipMember::file("p", "", 0) }),
            "unsupported_entry_type",
        ),
        (
            "zip_truncated",
            zip_with(ZipMember::file("a.py", "hello", 0o644))[..40].to_vec(),
            "corrupt_archive",
        ),
        ("only_directories", t(&[Member::dir("a/"), Member::dir("a/b/")]), "empty_package"),
    ]
}

#[test]
fn every_bad_archive_is_refused_with_its_code() {
    for (name, bytes, code) in bad_archives() {
        let got = match try_pack_archive(&bytes, &Selection::default(), &Limits::default()) {
            Ok(b) => format!("a package of {} files", b.packed.files),
            Err(e) => e.code().to_owned(),
        };
        assert_eq!(got, code, "case {name}");
    }
}

#[rstest]
#[case::too_many_entries(Limits { max_entries: 3, ..Limits::default() }, "too_many_entries")]
#[case::unpacked_too_large(Limits { max_unpacked_bytes: 10, ..Limits::default() }, "unpacked_too_large")]
#[case::archive_too_large(Limits { max_archive_bytes: 100, ..Limits::default() }, "archive_too_large")]
#[case::path_too_long(Limits { max_path_bytes: 4, ..Limits::default() }, "path_too_long")]
#[case::path_too_deep(Limits { max_path_depth: 1, ..Limits::default() }, "path_too_deep")]
fn limits_are_enforced_with_their_own_codes(#[case] limits: Limits, #[case] code: &str) {
    let bytes = t(&[
        ok_file(),
        Member::file("dir/b.py", "y = 2\n"),
        Member::file("dir/c.py", "z"),
        Member::file("d.py", "w"),
    ]);
    assert_eq!(archive_error(&bytes, &Selection::default(), &limits), code);
    assert_eq!(archive_error(&gzip(&bytes), &Selection::default(), &limits), code, "gzip");
}

#[rstest]
#[case::missing_sub_path(Selection { path: Some("nope".into()), ..Selection::default() }, "path_not_found")]
#[case::sub_path_is_a_file(Selection { path: Some("ok.py".into()), ..Selection::default() }, "path_not_directory")]
#[case::sub_path_escapes(Selection { path: Some("../x".into()), ..Selection::default() }, "invalid_selection")]
#[case::nothing_selected(Selection { include: vec!["*.nothing".into()], ..Selection::default() }, "empty_package")]
#[case::everything_excluded(Selection { exclude: vec!["*".into()], ..Selection::default() }, "empty_package")]
#[case::strip_too_much(Selection { strip_components: 5, ..Selection::default() }, "empty_package")]
#[case::invalid_pattern(Selection { include: vec!["a[z-a]".into()], ..Selection::default() }, "invalid_pattern")]
#[case::multi_line_pattern(Selection { exclude: vec!["a\nb".into()], ..Selection::default() }, "invalid_pattern")]
fn bad_selection_is_refused_with_its_code(#[case] selection: Selection, #[case] code: &str) {
    let bytes = t(&[ok_file(), Member::file("src/app.py", "y = 2\n")]);
    assert_eq!(archive_error(&bytes, &selection, &Limits::default()), code);
}

#[test]
fn a_broken_symlink_the_selection_drops_does_not_matter() {
    let bytes = t(&[
        ok_file(),
        Member::symlink("junk.pyc", "/nowhere"),
        Member::symlink("node_modules/.git/x", "../../../.."),
    ]);
    let kept = try_pack_archive(
        &bytes,
        &Selection { exclude: vec!["*.pyc".into()], ..Selection::default() },
        &Limits::default(),
    )
    .expect("the broken link is excluded");
    assert_eq!(kept.packed.files, 1);
    let code = archive_error(
        &bytes,
        &Selection { default_excludes: true, ..Selection::default() },
        &Limits::default(),
    );
    assert_eq!(code, "symlink_escapes", "kept, the same link is refused");
}

#[test]
fn hard_links_to_earlier_files_and_multi_member_gzip_are_accepted() {
    let plain = pack_archive(&t(&[ok_file(), Member::file("b.py", "x = 1\n")]));
    let linked = pack_archive(&t(&[ok_file(), Member::hardlink("b.py", "ok.py")]));
    assert_eq!(linked.packed.sha256, plain.packed.sha256, "a hard link is a copy of its target");

    // `cat a.tar.gz b.gz`: gzip(1) decodes members in sequence, and so do we.
    let whole = t(&[ok_file(), Member::file("b.py", "x = 1\n")]);
    let (first, second) = whole.split_at(1024);
    let mut multi = gzip(first);
    multi.extend(gzip(second));
    assert_eq!(pack_archive(&multi).packed.sha256, plain.packed.sha256);
}

#[test]
fn old_v7_and_dot_slash_names_are_read() {
    let mut v7 = archive::header(&Member::file("handler.py", "x = 1\n"));
    v7[257..265].fill(0);
    v7[148..156].fill(b' ');
    let sum: u32 = v7.iter().map(|b| u32::from(*b)).sum();
    v7[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut bytes = v7.to_vec();
    bytes.extend_from_slice(b"x = 1\n");
    bytes.resize(1024, 0);
    bytes.extend_from_slice(&[0u8; 1024]);
    let modern = pack_archive(&t(&[Member::dir("./"), Member::file("./handler.py", "x = 1\n")]));
    assert_eq!(pack_archive(&bytes).packed.sha256, modern.packed.sha256);
}
