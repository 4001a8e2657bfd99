//! Issue #10, point 8: a re-post of a stored package needs no free disk beyond the upload
//! itself, and a full disk is `507 insufficient_storage`, never a 500.
//!
//! The real `lambda-packager serve` runs in its own mount namespace (`unshare --mount`) with its
//! store and temp directory on a 32 MiB tmpfs, which the test fills through
//! `/proc/<pid>/root`: a genuinely full file system, not a simulated error. This needs root (as
//! on this machine and in CI); if the namespace or the mount cannot be set up, the service never
//! starts and the test fails, loudly.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::faults::{Service, files_under};
use crate::support::app::http_request;
use crate::support::archive::{Member, gzip, tar};
use crate::support::noise;

const URI: &str = "/v1/functions/fn/package";

/// Every stored package (path → size): no staging file, metadata sidecar or index entry.
fn objects(store: &Path) -> BTreeMap<PathBuf, u64> {
    files_under(store)
        .into_iter()
        .filter(|p| !p.starts_with(store.join(".staging")) && !p.starts_with(store.join(".lambda-packager")))
        .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
        .map(|p| {
            let len = std::fs::metadata(&p).expect("stat").len();
            (p, len)
        })
        .collect()
}

/// Appends to `file` until the file system refuses: first in 1 MiB writes, then page by page.
fn fill_up(file: &mut File) {
    for chunk in [1 << 20, 4096] {
        let bytes = vec![0xa5u8; chunk];
        loop {
            match file.write(&bytes) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
    }
}

/// Free bytes of the file system holding `path`, as `stat -f` reports them.
fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("stat").args(["-f", "-c", "%a %S"]).arg(path).output().expect("stat -f");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u64>().expect("a number"));
    numbers.next().expect("free blocks") * numbers.next().expect("block size")
}

struct FullDisk {
    service: Service,
    /// The store as the test sees it (through the service's root).
    store: PathBuf,
    temp: PathBuf,
    fill: File,
}

impl FullDisk {
    fn start() -> (tempfile::TempDir, Self) {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = dir.path().join("disk");
        std::fs::create_dir(&disk).expect("mount point");
        let (store, temp) = (disk.join("artifacts"), disk.join("tmp"));
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size=32m lambda-packager-test "$1" && exec "$2" serve"#)
            .arg("sh")
            .arg(&disk)
            .arg(env!("CARGO_BIN_EXE_lambda-packager"));
        let service = Service::spawn(cmd, &store, &[("LAMBDA_PACKAGER_PACK__TEMP_DIR", &temp)]);
        let pid = service.child.id();
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let disk_str = disk.to_str().expect("UTF-8 temp dir");
        assert!(
            mounts.lines().any(|l| l.split(' ').nth(4) == Some(disk_str) && l.contains(" - tmpfs ")),
            "the service does not see a tmpfs at {disk_str}"
        );
        let view = PathBuf::from(format!("/proc/{pid}/root")).join(disk.strip_prefix("/").expect("absolute"));
        let fill =
            OpenOptions::new().create_new(true).append(true).open(view.join("fill")).expect("fill file");
        let full = Self { service, store: view.join("artifacts"), temp: view.join("tmp"), fill };
        (dir, full)
    }

    /// Fills the disk, then frees `room` bytes (rounded to pages by the file system).
    fn leave_free(&mut self, room: u64) {
        fill_up(&mut self.fill);
        let len = self.fill.metadata().expect("stat fill").len();
        self.fill.set_len(len - room.min(len)).expect("free room");
        eprintln!("free on the disk: {} bytes", free_bytes(&self.store));
    }

    fn post(&self, body: &[u8]) -> (u16, serde_json::Value) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (status, _, body) = runtime.block_on(http_request(self.service.addr, "POST", URI, &[], body));
        (status, serde_json::from_slice(&body).expect("a JSON answer"))
    }

    #[track_caller]
    fn assert_unchanged(&self, before: &BTreeMap<PathBuf, u64>) {
        assert_eq!(&objects(&self.store), before, "the store changed");
        assert!(files_under(&self.store.join(".staging")).is_empty(), "staging files left");
        assert!(files_under(&self.temp).is_empty(), "temp files left");
    }
}

/// A raw tar of `len` incompressible bytes (its zip is a file in staging, not a buffer).
fn raw_tar(len: usize, seed: u64) -> Vec<u8> {
    tar(&[
        Member::file("model.bin", noise(len, seed)),
        Member::file("handler.py", format!("SEED = {seed}\n")),
    ])
}

#[test]
fn a_repost_on_a_full_disk_is_answered_from_the_store_and_a_new_package_is_507() {
    let (_dir, mut disk) = FullDisk::start();
    let big_tar = raw_tar(4 << 20, 1);
    let small_gz = gzip(&raw_tar(600 << 10, 2));
    let big_gz = gzip(&raw_tar(4 << 20, 3));
    let mut keys = Vec::new();
    for body in [&big_tar, &small_gz, &big_gz] {
        let (status, v) = disk.post(body);
        assert_eq!(status, 201, "{v}");
        keys.push(v["key"].clone());
    }
    let stored = objects(&disk.store);
    assert_eq!(stored.len(), 3);

    // Room for the upload itself (a temp file: it is over 1 MiB), not for the 4 MiB zip: the
    // zip is hashed as it is built and dropped when the disk is full, and the key is found.
    disk.leave_free(big_tar.len() as u64 + (256 << 10));
    let (status, v) = disk.post(&big_tar);
    assert_eq!((status, &v["key"], &v["uploaded"]), (200, &keys[0], &false.into()), "{v}");
    disk.assert_unchanged(&stored);

    // No room at all: a small package (upload, contents and zip all stay in memory).
    disk.leave_free(0);
    assert!(free_bytes(&disk.store) < 64 << 10, "the disk is full");
    let (status, v) = disk.post(&small_gz);
    assert_eq!((status, &v["key"], &v["uploaded"]), (200, &keys[1], &false.into()), "{v}");
    disk.assert_unchanged(&stored);

    // A new small package (kept in memory) on a full disk: the local store cannot write it.
    let (status, v) = disk.post(&tar(&[Member::file("new.py", "print('new')\n")]));
    assert_eq!((status, v["error"]["code"].as_str()), (507, Some("insufficient_storage")), "{v}");
    disk.assert_unchanged(&stored);

    // A new package with room for its upload only: 507, and nothing is left behind.
    let new_tar = raw_tar(4 << 20, 4);
    disk.leave_free(new_tar.len() as u64 + (256 << 10));
    let (status, v) = disk.post(&new_tar);
    assert_eq!((status, v["error"]["code"].as_str()), (507, Some("insufficient_storage")), "{v}");
    disk.assert_unchanged(&stored);

    // A tar.gz must be decompressed somewhere: over 1 MiB of contents, that is the spool on
    // disk (README, "What needs disk"). With room for the upload only, even a re-post is 507,
    // never a 500.
    disk.leave_free(big_gz.len() as u64 + (256 << 10));
    let (status, v) = disk.post(&big_gz);
    assert_eq!((status, v["error"]["code"].as_str()), (507, Some("insufficient_storage")), "{v}");
    disk.assert_unchanged(&stored);

    // No room for the upload itself (over 1 MiB, so it spills to a temp file): 507 as well.
    disk.leave_free(0);
    let (status, v) = disk.post(&big_tar);
    assert_eq!((status, v["error"]["code"].as_str()), (507, Some("insufficient_storage")), "{v}");
    disk.assert_unchanged(&stored);
}
