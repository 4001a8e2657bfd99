//! One guard per rule of the canonical format, checked on real packages by reading them back:
//! with the crate's own central-directory parser (raw header fields), with the zip crate, and
//! with Python's `zipfile` as an independent implementation.

use std::fs::{self, File};
use std::time::{Duration, SystemTime};

use lambda_packager::package::canonical::DEFLATE_LEVEL;

use crate::golden::{basic, mixed, order};
use crate::support::{Built, manifest, pack_dir, pack_fixture_dir, python_zipfile_view, try_pack_dir, unzip};

/// 1980-01-01 as a DOS date: year 0 since 1980, month 1, day 1.
const DOS_DATE_1980_01_01: u16 = (1 << 5) | 1;

fn packages() -> Vec<(&'static str, Built)> {
    vec![
        ("basic", pack_fixture_dir(&basic())),
        ("order", pack_fixture_dir(&order())),
        ("mixed", pack_fixture_dir(&mixed())),
    ]
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[test]
fn every_entry_carries_the_fixed_1980_timestamp() {
    for (name, built) in packages() {
        for e in manifest(&built.bytes) {
            assert_eq!((e.dos_date, e.dos_time), (DOS_DATE_1980_01_01, 0), "{name}: {}", e.path);
            let local = &built.bytes[e.local_header_offset as usize..];
            assert_eq!(
                (u16_at(local, 12), u16_at(local, 10)),
                (DOS_DATE_1980_01_01, 0),
                "{name}: {} (local)",
                e.path
            );
        }
    }
}

#[test]
fn modes_are_only_0644_or_0755_and_follow_the_owner_exec_bit() {
    for (name, built) in packages() {
        for e in manifest(&built.bytes) {
            assert!(e.mode == 0o100644 || e.mode == 0o100755, "{name}: {} has {:o}", e.path, e.mode);
        }
    }
    let modes: Vec<(String, u32)> =
        manifest(&pack_fixture_dir(&basic()).bytes).into_iter().map(|e| (e.path, e.mode)).collect();
    assert_eq!(
        modes,
        [
            ("bin/run".to_owned(), 0o100755),
            ("data/blob.bin".to_owned(), 0o100644),
            ("empty.txt".to_owned(), 0o100644),
            ("handler.py".to_owned(), 0o100644),
        ]
    );
}

#[test]
fn no_extra_fields_comments_or_data_descriptors_and_made_by_unix() {
    for (name, built) in packages() {
        for e in manifest(&built.bytes) {
            assert_eq!((e.extra_len, e.comment_len), (0, 0), "{name}: {}", e.path);
            let local = &built.bytes[e.local_header_offset as usize..];
            assert_eq!(u16_at(local, 28), 0, "{name}: {} local extra field", e.path);
            assert_eq!(e.flags & (1 << 3), 0, "{name}: {} uses a data descriptor", e.path);
            let utf8_flag = e.flags & (1 << 11) != 0;
            assert_eq!(utf8_flag, !e.path.is_ascii(), "{name}: {} UTF-8 flag", e.path);
            assert_eq!(e.flags & !(1 << 11), 0, "{name}: {} other flags", e.path);
            assert_eq!(e.version_made_by >> 8, 3, "{name}: {} made by Unix", e.path);
            assert_eq!(e.internal_attributes, 0, "{name}: {}", e.path);
        }
        let eocd = &built.bytes[built.bytes.len() - 22..];
        assert_eq!(u16_at(eocd, 20), 0, "{name}: archive comment");
        assert_eq!(&eocd[..4], b"PK\x05\x06", "{name}: no ZIP64 records or trailing bytes");
    }
}

#[test]
fn entries_are_sorted_by_path_bytes_and_directories_have_no_entries() {
    let paths: Vec<String> =
        manifest(&pack_fixture_dir(&order()).bytes).into_iter().map(|e| e.path).collect();
    assert_eq!(
        paths,
        [
            "B.txt",
            "Z/y.txt",
            "a b/space.txt",
            "a-b/c.py",
            "a.b",
            "a.txt",
            "a/b/deep.txt",
            "a/z.py",
            "über/straße.py"
        ]
    );
    for (name, built) in packages() {
        let paths: Vec<String> = manifest(&built.bytes).into_iter().map(|e| e.path).collect();
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(paths, sorted, "{name}");
        assert!(paths.iter().all(|p| !p.ends_with('/')), "{name}: a directory entry");
        assert_eq!(paths.len() as u64, built.packed.files);
    }
}

#[test]
fn entries_are_deflated_only_when_it_makes_them_smaller() {
    for (name, built) in packages() {
        for e in manifest(&built.bytes) {
            match e.method {
                8 => assert!(e.compressed_size < e.size, "{name}: {} deflated but not smaller", e.path),
                0 => assert_eq!(e.compressed_size, e.size, "{name}: {}", e.path),
                m => panic!("{name}: {} uses method {m}", e.path),
            }
        }
    }
    let basic = manifest(&pack_fixture_dir(&basic()).bytes);
    let method = |p: &str| basic.iter().find(|e| e.path == p).map(|e| e.method);
    assert_eq!(method("empty.txt"), Some(0), "empty files are stored");
    assert_eq!(method("data/blob.bin"), Some(0), "incompressible files are stored");
    let mixed = manifest(&pack_fixture_dir(&mixed()).bytes);
    let big = mixed.iter().find(|e| e.path == "lib/big.json").expect("big.json");
    assert_eq!(big.method, 8, "compressible files are deflated");
    assert!(big.compressed_size * 5 < big.size, "level {DEFLATE_LEVEL} compresses JSON well");
}

#[test]
fn python_zipfile_reads_every_package_with_valid_crcs_and_the_same_metadata() {
    for (name, built) in packages() {
        let view = python_zipfile_view(&built.bytes);
        let ours = manifest(&built.bytes);
        assert_eq!(view.len(), ours.len(), "{name}");
        for (py, e) in view.iter().zip(&ours) {
            assert_eq!(py["name"], e.path.as_str(), "{name}");
            assert_eq!(py["date_time"], serde_json::json!([1980, 1, 1, 0, 0, 0]), "{name}: {}", e.path);
            assert_eq!(py["create_system"], 3, "{name}: {}", e.path);
            assert_eq!(
                (py["extra"].as_str(), py["comment"].as_str()),
                (Some(""), Some("")),
                "{name}: {}",
                e.path
            );
            assert_eq!(py["mode"], e.mode, "{name}: {}", e.path);
            assert_eq!(py["file_size"], e.size, "{name}: {}", e.path);
        }
    }
}

#[test]
fn contents_read_back_byte_for_byte_with_symlinks_materialized() {
    let built = pack_fixture_dir(&mixed());
    let files = unzip(&built.bytes);
    let get = |p: &str| files.iter().find(|(n, _, _)| n == p).map(|(_, m, d)| (*m, d.clone()));
    let handler = b"def handler(e, c):\r\n    return 1\r\n".to_vec();
    assert_eq!(get("lib/handler.py"), Some((0o100644, handler.clone())), "CRLF kept");
    assert_eq!(get("handler.py"), Some((0o100644, handler.clone())), "file link copied");
    assert_eq!(get("lib/again.py"), Some((0o100644, handler)), "link to a link copied");
    assert_eq!(get("common/util.py"), Some((0o100644, b"X = 1\n".to_vec())), "directory link copied");
    assert_eq!(get("common/tool.sh"), Some((0o100755, b"#!/bin/sh\n".to_vec())), "exec bit of the target");
    assert_eq!(files.len(), 49);
}

#[test]
fn mtimes_before_1980_and_after_2107_do_not_change_the_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    basic().write_dir(dir.path());
    let reference = pack_dir(dir.path()).bytes;
    for when in [
        SystemTime::UNIX_EPOCH,
        SystemTime::UNIX_EPOCH - Duration::from_secs(86_400 * 365 * 30),
        SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 365 * 250),
    ] {
        for entry in walk(dir.path()) {
            File::options().write(true).open(&entry).and_then(|f| f.set_modified(when)).expect("set mtime");
        }
        assert_eq!(pack_dir(dir.path()).bytes, reference, "mtime {when:?}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_bytes_do_not_depend_on_the_number_of_threads() {
    let dir = tempfile::tempdir().expect("temp dir");
    mixed().write_dir(dir.path());
    let selection = Default::default();
    let one = try_pack_dir(dir.path(), &selection, 1).expect("packs").bytes;
    for threads in [2, 8] {
        assert_eq!(
            try_pack_dir(dir.path(), &selection, threads).expect("packs").bytes,
            one,
            "{threads} threads"
        );
    }
}
