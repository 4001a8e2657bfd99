//! Shared test support: fixture trees in every input form, packing helpers, zip readers, and the
//! S3-compatible test server (`s3`) and a fault-injecting proxy in front of it (`fault_proxy`).

pub mod app;
pub mod archive;
pub mod counting_proxy;
pub mod fault_proxy;
pub(crate) mod git_http;
pub(crate) mod git_repo;
pub mod s3;

use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use lambda_packager::package::{self, Limits, PackOptions, Packed};
use lambda_packager::packages::{self, BuildError, Input};
use lambda_packager::source::Selection;

use self::archive::{Member, ZipMember};

/// One node of a fixture tree.
#[derive(Debug, Clone)]
pub enum Node {
    File { data: Vec<u8>, exec: bool },
    Symlink(String),
}

/// A source tree that can be written as a directory, a tar, a tar.gz or a zip.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub nodes: Vec<(String, Node)>,
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough to be stored.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl Fixture {
    pub fn new() -> Self {
        Self { nodes: Vec::new() }
    }

    pub fn file(mut self, path: &str, data: impl AsRef<[u8]>) -> Self {
        self.nodes.push((path.into(), Node::File { data: data.as_ref().to_vec(), exec: false }));
        self
    }

    pub fn exec(mut self, path: &str, data: impl AsRef<[u8]>) -> Self {
        self.nodes.push((path.into(), Node::File { data: data.as_ref().to_vec(), exec: true }));
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.nodes.push((path.into(), Node::Symlink(target.into())));
        self
    }

    /// Directories implied by the paths, parents first.
    fn dirs(&self) -> Vec<String> {
        let mut dirs: Vec<String> = self
            .nodes
            .iter()
            .flat_map(|(p, _)| p.match_indices('/').map(|(i, _)| p[..i].to_owned()).collect::<Vec<_>>())
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Writes the tree under `root` with odd but legal metadata: group/other bits, setgid.
    pub fn write_dir(&self, root: &Path) {
        for d in self.dirs() {
            fs::create_dir_all(root.join(&d)).expect("create dir");
        }
        for (path, node) in &self.nodes {
            let full = root.join(path);
            match node {
                Node::File { data, exec } => {
                    fs::write(&full, data).expect("write file");
                    let mode = if *exec { 0o2775 } else { 0o664 };
                    fs::set_permissions(&full, fs::Permissions::from_mode(mode)).expect("chmod");
                }
                Node::Symlink(target) => std::os::unix::fs::symlink(target, &full).expect("symlink"),
            }
        }
    }

    /// A tar whose members come in reverse order, with `./` names, directory members,
    /// arbitrary owners, mtimes and permission noise.
    pub fn tar(&self) -> Vec<u8> {
        let mut members = vec![Member::dir("./")];
        for (i, d) in self.dirs().iter().enumerate() {
            members.push(Member { mtime: 42 + i as u64, ..Member::dir(format!("./{d}/")) });
        }
        for (i, (path, node)) in self.nodes.iter().enumerate().rev() {
            let m = match node {
                Node::File { data, exec: true } => Member { mode: 0o4751, ..Member::exec(path, data) },
                Node::File { data, exec: false } => Member { mode: 0o600, ..Member::file(path, data) },
                Node::Symlink(t) => Member::symlink(path, t),
            };
            members.push(Member {
                uid: 500 + i as u64,
                gid: 7,
                uname: format!("user{i}"),
                mtime: if i % 2 == 0 { 0 } else { 0o77_777_777_777 },
                ..m
            });
        }
        archive::tar(&members)
    }

    pub fn tar_gz(&self) -> Vec<u8> {
        archive::gzip(&self.tar())
    }

    /// A zip with timestamps, extra fields and DOS entries, the way other tools write them.
    pub fn zip(&self) -> Vec<u8> {
        let mut members = Vec::new();
        for (i, (path, node)) in self.nodes.iter().enumerate() {
            let mut m = match node {
                Node::File { data, exec: true } => ZipMember::file(path, data, 0o775),
                Node::File { data, exec: false } if i % 3 == 0 => ZipMember::dos(path, data),
                Node::File { data, exec: false } => ZipMember::file(path, data, 0o600),
                Node::Symlink(t) => ZipMember {
                    external_attributes: 0o120_777 << 16,
                    method: 0,
                    ..ZipMember::file(path, t.as_bytes(), 0)
                },
            };
            // An extended-timestamp extra field ("UT") with an mtime, as Info-ZIP writes.
            m.extra = vec![0x55, 0x54, 5, 0, 1, 0x10, 0x20, 0x30, 0x40];
            m.dos_time = (i as u16).wrapping_mul(977);
            if !path.is_ascii() {
                m.flags |= 1 << 11;
            }
            members.push(m);
        }
        members.reverse();
        archive::zip(&members)
    }
}

/// A built package: its summary and its bytes.
#[derive(Debug)]
pub struct Built {
    pub packed: Packed,
    pub bytes: Vec<u8>,
}

fn build(input: Input, selection: &Selection, limits: &Limits, threads: usize) -> Result<Built, BuildError> {
    let mut out = tempfile::tempfile().expect("temp file");
    let options = PackOptions { threads: threads.try_into().expect("nonzero"), ..PackOptions::default() };
    let built = packages::build(input, selection, limits, None, &options, None, &mut out)?;
    let mut bytes = Vec::new();
    std::io::Seek::rewind(&mut out).expect("rewind");
    out.read_to_end(&mut bytes).expect("read zip");
    assert_eq!(bytes.len() as u64, built.packed.size, "reported size is the file size");
    Ok(Built { packed: built.packed, bytes })
}

/// Packs archive bytes (any format) with a selection and limits.
pub fn try_pack_archive(bytes: &[u8], selection: &Selection, limits: &Limits) -> Result<Built, BuildError> {
    let mut file = tempfile::tempfile().expect("temp file");
    file.write_all(bytes).expect("write archive");
    std::io::Seek::rewind(&mut file).expect("rewind");
    let from_file = build(Input::Archive(file.into()), selection, limits, 2);
    // The service keeps small uploads in memory: both must decode alike, down to the error.
    let from_memory = build(Input::Archive(bytes.to_vec().into()), selection, limits, 2);
    match (&from_file, &from_memory) {
        (Ok(f), Ok(m)) => assert_eq!(f.bytes, m.bytes, "same zip from a file and from memory"),
        (Err(f), Err(m)) => assert_eq!(f.code(), m.code(), "same error from a file and from memory"),
        _ => panic!("file and memory input disagree: {from_file:?} vs {from_memory:?}"),
    }
    from_file
}

/// Packs archive bytes with the default selection and limits.
#[track_caller]
pub fn pack_archive(bytes: &[u8]) -> Built {
    try_pack_archive(bytes, &Selection::default(), &Limits::default()).expect("archive packs")
}

/// The error code packing these archive bytes fails with.
#[track_caller]
pub fn archive_error(bytes: &[u8], selection: &Selection, limits: &Limits) -> String {
    match try_pack_archive(bytes, selection, limits) {
        Ok(b) => panic!("expected an error, got a package with {} files", b.packed.files),
        Err(e) => e.code().to_owned(),
    }
}

/// Packs a directory.
pub fn try_pack_dir(dir: &Path, selection: &Selection, threads: usize) -> Result<Built, BuildError> {
    build(Input::Directory(dir.to_owned()), selection, &Limits::default(), threads)
}

#[track_caller]
pub fn pack_dir(dir: &Path) -> Built {
    try_pack_dir(dir, &Selection::default(), 2).expect("directory packs")
}

/// Writes a fixture as a directory in a fresh temp dir and packs it.
#[track_caller]
pub fn pack_fixture_dir(fixture: &Fixture) -> Built {
    let dir = tempfile::tempdir().expect("temp dir");
    fixture.write_dir(dir.path());
    pack_dir(dir.path())
}

/// Every entry of a zip as (path, unix mode, bytes), read with the zip crate.
pub fn unzip(bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("a readable zip");
    (0..archive.len())
        .map(|i| {
            let mut f = archive.by_index(i).expect("entry");
            let mut data = Vec::new();
            f.read_to_end(&mut data).expect("entry data (CRC checked)");
            let name = String::from_utf8(f.name_raw().to_vec()).expect("UTF-8 name");
            (name, f.unix_mode().expect("unix mode"), data)
        })
        .collect()
}

/// The central directory, parsed by the crate's own manifest reader.
pub fn manifest(bytes: &[u8]) -> Vec<package::manifest::ManifestEntry> {
    package::manifest::read(Cursor::new(bytes)).expect("a parseable central directory")
}

/// What Python's `zipfile` (an independent implementation) sees in a zip, after `testzip()`
/// verified every CRC: one JSON object per entry.
pub fn python_zipfile_view(bytes: &[u8]) -> Vec<serde_json::Value> {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    fs::write(file.path(), bytes).expect("write zip");
    let script = r#"
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    assert bad is None, f"bad CRC in {bad}"
    print(json.dumps([{
        "name": i.filename, "date_time": list(i.date_time), "mode": i.external_attr >> 16,
        "create_system": i.create_system, "extra": i.extra.hex(), "comment": i.comment.hex(),
        "flag_bits": i.flag_bits, "compress_type": i.compress_type, "file_size": i.file_size,
    } for i in z.infolist()]))
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(file.path()).output().expect("python3 runs");
    assert!(out.status.success(), "python zipfile failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json from python")
}
