//! The local-directory backend: the embedded default, and a single-replica deployment option.
//!
//! Zips are built in `<root>/.staging/` (same file system as their final place), fsynced, then
//! published with a no-clobber rename (`renameat2(RENAME_NOREPLACE)`, or link + unlink where that
//! is missing), and the directory is fsynced. "Already exists" means someone else stored the
//! key first. A reader therefore never sees a partial file under a final name, and a crash
//! leaves at most a temp file in `.staging/`, which the startup sweep removes. One directory
//! serves one process: the sweep would remove a second process's uploads in progress.
//!
//! No operation follows a symlink below the root (see [`LocalStore`]): a key-named symlink, a
//! symlinked prefix folder or a symlink in a listed folder is treated as absent, and a put that
//! would have to pass through one fails. Keys under `.staging/` are reserved.

use std::fs::{self, File};
use std::io::{self, Read, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::key::ObjectKey;
use super::{ByteRange, Error, ObjectBody, ObjectMeta, PutOutcome, Staged, StagedBytes, Store};

/// Name of the staging directory under the root.
pub const STAGING_DIR: &str = ".staging";

/// A directory of packages.
///
/// Every operation starts from the root directory, opened once, and walks down one component
/// at a time with `openat(O_NOFOLLOW)` (`mkdirat` first where a put needs a folder): a symlink
/// anywhere below the root, as a key's file or as one of its folders, is never followed, and
/// only regular files are objects. Whoever can write into the store folder therefore cannot
/// make the service serve, list or write any file outside it.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    staging: PathBuf,
    root_dir: Arc<OwnedFd>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io(io::Error::other(e)))?.map_err(Error::Io)
}

/// Whether an error of the no-follow walk means "nothing there": missing, a file where a folder
/// should be, or a symlink refused.
fn is_absent(e: Errno) -> bool {
    matches!(e, Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
}

/// Opens the directory `name` of `dir`, refusing a symlink.
fn open_dir(dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The folders and the file name of a key, if it is a valid package key (so no component is
/// empty, `.` or `..`) outside the staging directory.
fn split_key(key: &str) -> Option<(Vec<&str>, &str)> {
    key.parse::<ObjectKey>().ok()?;
    let mut dirs: Vec<&str> = key.split('/').collect();
    let name = dirs.pop()?;
    (dirs.first() != Some(&STAGING_DIR)).then_some((dirs, name))
}

/// An open object: a regular file, reached with no symlink on the way.
struct Opened {
    file: File,
    meta: fs::Metadata,
}

impl LocalStore {
    /// Opens (creating if needed) the store at `root` and sweeps stale temp files. Returns the
    /// store and how many temp files the sweep removed. A `.staging` that is not a directory (a
    /// symlink, say) is refused.
    ///
    /// Runs synchronously: call it at startup, before serving.
    pub fn open(root: &Path) -> io::Result<(Self, usize)> {
        fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let root_dir =
            rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        match rustix::fs::mkdirat(&root_dir, STAGING_DIR, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let staging = root.join(STAGING_DIR);
        open_dir(root_dir.as_fd(), STAGING_DIR).map_err(|e| {
            io::Error::other(format!("{} is not a directory ({e}); symlinks are refused", staging.display()))
        })?;
        let mut swept = 0;
        for entry in fs::read_dir(&staging)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                swept += 1;
            }
        }
        Ok((Self { root, staging, root_dir: Arc::new(root_dir) }, swept))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder reached by `components` below the root, never through a symlink. With
    /// `create`, missing folders are made (`mkdirat`, then opened no-follow, so a symlink put
    /// in place meanwhile is refused too). `Ok(None)`: there is no such folder (reads only).
    fn folder(&self, components: &[&str], create: bool) -> io::Result<Option<OwnedFd>> {
        let mut current: Option<OwnedFd> = None;
        for name in components {
            let parent = current.as_ref().map_or(self.root_dir.as_fd(), AsFd::as_fd);
            if create {
                match rustix::fs::mkdirat(parent, *name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match open_dir(parent, name) {
                Ok(dir) => current = Some(dir),
                Err(e) if is_absent(e) && !create => return Ok(None),
                Err(e) if is_absent(e) => {
                    return Err(io::Error::other(format!(
                        "{name:?} in the local store is not a directory ({e}); symlinks are refused"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        // No component: the root itself (a fresh descriptor, like every other folder).
        match current {
            Some(dir) => Ok(Some(dir)),
            None => Ok(Some(rustix::io::dup(&*self.root_dir)?)),
        }
    }

    /// Opens the object of `key`: `flags` (plus no-follow and close-on-exec) on its file, which
    /// must be a regular file reached through no symlink. `Ok(None)`: no object under the key.
    fn open_object(&self, key: &str, flags: OFlags) -> io::Result<Option<Opened>> {
        let Some((dirs, name)) = split_key(key) else {
            return Ok(None);
        };
        let Some(dir) = self.folder(&dirs, false)? else {
            return Ok(None);
        };
        let fd =
            match rustix::fs::openat(&dir, name, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) if is_absent(e) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
        let file = File::from(fd);
        let meta = file.metadata()?;
        Ok(meta.is_file().then_some(Opened { file, meta }))
    }

    /// Opens the object of `key` for reading. `O_NONBLOCK`, so a FIFO planted under a key name
    /// cannot block the open (it is then refused as not a regular file).
    fn open_for_reading(&self, key: &str) -> io::Result<Opened> {
        self.open_object(key, OFlags::RDONLY | OFlags::NONBLOCK)?
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
}

/// Publishes the temp file at `temp` as `name` in `dir` unless that name exists: the kernel's
/// `renameat2(RENAME_NOREPLACE)`, or, where the file system lacks it, `linkat` (which fails on
/// an existing name) and then removing the temp name.
fn publish_noclobber(temp: &Path, dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    match rustix::fs::renameat_with(rustix::fs::CWD, temp, dir, name, RenameFlags::NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(Errno::NOSYS | Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    rustix::fs::linkat(rustix::fs::CWD, temp, dir, name, AtFlags::empty())?;
    let _ = rustix::fs::unlink(temp);
    Ok(())
}

fn meta_of(key: String, meta: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: meta.len(),
        last_modified: meta.modified().ok(),
        version_id: None,
        checksum_sha256: None,
    }
}

impl Store for LocalStore {
    fn bucket(&self) -> Option<&str> {
        None
    }

    fn location(&self, key: &ObjectKey) -> String {
        format!("file://{}", self.root.join(key.to_string()).display())
    }

    fn staging_dir(&self) -> Option<&Path> {
        Some(&self.staging)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, Error> {
        let (store, key) = (self.clone(), key.to_owned());
        // O_PATH: enough for fstat, needs no read permission, and opens nothing that could block.
        blocking(move || Ok(store.open_object(&key, OFlags::PATH)?.map(|o| meta_of(key, &o.meta)))).await
    }

    async fn put_if_absent(&self, key: &ObjectKey, staged: Staged) -> Result<PutOutcome, Error> {
        let (store, key) = (self.clone(), key.to_string());
        blocking(move || {
            let (dirs, name) = split_key(&key).ok_or_else(|| {
                io::Error::other(format!("{key:?} cannot be stored in the local store (reserved folder)"))
            })?;
            let file = match staged.data {
                StagedBytes::File(file) => file,
                StagedBytes::Memory(bytes) => {
                    let mut file = tempfile::Builder::new().prefix("tmp-").tempfile_in(&store.staging)?;
                    file.write_all(&bytes)?;
                    file
                }
            };
            // Temp files are created 0600; a stored package is as readable as any other file.
            file.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
            file.as_file().sync_all()?;
            let dir =
                store.folder(&dirs, true)?.ok_or_else(|| io::Error::other("the key's folder vanished"))?;
            // The temp file is removed when `temp` drops, unless it was published.
            let temp = file.into_temp_path();
            let outcome = match publish_noclobber(&temp, dir.as_fd(), name) {
                Ok(()) => {
                    let _ = temp.keep();
                    PutOutcome::Created { version_id: None }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => PutOutcome::AlreadyExists,
                Err(e) => return Err(e),
            };
            rustix::fs::fsync(&dir)?;
            Ok(outcome)
        })
        .await
    }

    async fn list(&self, prefix: &str, max: usize) -> Result<Vec<ObjectMeta>, Error> {
        let (dir, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let components: Vec<String> = dir.split_terminator('/').map(str::to_owned).collect();
        if components.iter().any(|c| c.is_empty() || c == "." || c == ".." || c == STAGING_DIR) {
            return Ok(Vec::new());
        }
        let (store, dir, name_prefix) = (self.clone(), dir.to_owned(), name_prefix.to_owned());
        blocking(move || {
            let mut out = Vec::new();
            let components: Vec<&str> = components.iter().map(String::as_str).collect();
            let Some(folder) = store.folder(&components, false)? else {
                return Ok(out);
            };
            for entry in rustix::fs::Dir::read_from(&folder)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().to_str() else {
                    continue;
                };
                if !name.starts_with(&name_prefix) || name == "." || name == ".." {
                    continue;
                }
                // Opened no-follow (O_PATH): a symlink is the link itself, not a file, so skipped.
                let fd = match rustix::fs::openat(
                    &folder,
                    name,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(e) if is_absent(e) => continue,
                    Err(e) => return Err(e.into()),
                };
                let meta = File::from(fd).metadata()?;
                if !meta.is_file() {
                    continue;
                }
                out.push(meta_of(format!("{dir}{name}"), &meta));
                if out.len() >= max {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn read_range(&self, key: &str, range: ByteRange) -> Result<Bytes, Error> {
        let (store, key) = (self.clone(), key.to_owned());
        let result = blocking(move || {
            let Opened { file, meta } = store.open_for_reading(&key)?;
            let len = meta.len();
            let (start, end) = match range {
                ByteRange::Tail(n) => (len.saturating_sub(n), len),
                ByteRange::Span { start, end } => (start.min(len), end.min(len)),
            };
            let mut buf = vec![0u8; usize::try_from(end.saturating_sub(start)).unwrap_or(0)];
            file.read_exact_at(&mut buf, start)?;
            Ok(Bytes::from(buf))
        })
        .await;
        not_found_as(result)
    }

    async fn get(&self, key: &str) -> Result<ObjectBody, Error> {
        let (store, key) = (self.clone(), key.to_owned());
        let Opened { file, meta } = not_found_as(blocking(move || store.open_for_reading(&key)).await)?;
        let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 * 1024);
        Ok(ObjectBody { size: meta.len(), stream: stream.boxed() })
    }

    async fn ready(&self) -> Result<(), Error> {
        let staging = self.staging.clone();
        blocking(move || {
            // Proves the directory exists and is writable.
            let probe = tempfile::NamedTempFile::new_in(&staging)?;
            let mut f = probe.reopen()?;
            let mut b = [0u8; 1];
            let _ = f.read(&mut b)?;
            Ok(())
        })
        .await
    }
}

fn not_found_as<T>(r: Result<T, Error>) -> Result<T, Error> {
    match r {
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound),
        other => other,
    }
}
