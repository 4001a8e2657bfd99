//! The local-directory backend: the embedded default, and a single-replica deployment option.
//!
//! Zips are built in `<root>/.staging/` (same file system as their final place), fsynced, then
//! published with a no-clobber rename (`renameat2(RENAME_NOREPLACE)`, or link + unlink where that
//! is missing), and the directory is fsynced. "Already exists" means someone else stored the
//! key first. A reader therefore never sees a partial file under a final name, and a crash
//! leaves at most a temp file in `.staging/`, which the startup sweep removes. One directory
//! serves one process: the sweep would remove a second process's uploads in progress.

use std::fs::{self, File};
use std::io::{self, Read, Write as _};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;

use super::key::ObjectKey;
use super::{ByteRange, Error, ObjectBody, ObjectMeta, PutOutcome, Staged, StagedBytes, Store};

/// Name of the staging directory under the root.
pub const STAGING_DIR: &str = ".staging";

/// A directory of packages.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    staging: PathBuf,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io(io::Error::other(e)))?.map_err(Error::Io)
}

impl LocalStore {
    /// Opens (creating if needed) the store at `root` and sweeps stale temp files. Returns the
    /// store and how many temp files the sweep removed.
    ///
    /// Runs synchronously: call it at startup, before serving.
    pub fn open(root: &Path) -> io::Result<(Self, usize)> {
        fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let staging = root.join(STAGING_DIR);
        fs::create_dir_all(&staging)?;
        let mut swept = 0;
        for entry in fs::read_dir(&staging)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                swept += 1;
            }
        }
        Ok((Self { root, staging }, swept))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a key, if the key is a valid package key (so no key can name a path outside
    /// the root).
    fn path_of(&self, key: &str) -> Option<PathBuf> {
        key.parse::<ObjectKey>().ok().map(|_| self.root.join(key))
    }
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
        let Some(path) = self.path_of(key) else {
            return Ok(None);
        };
        let key = key.to_owned();
        blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(meta_of(key, &m))),
            Ok(_) => Ok(None),
            // A file where the key's folder would be: no object under the key either.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn put_if_absent(&self, key: &ObjectKey, staged: Staged) -> Result<PutOutcome, Error> {
        let target = self.root.join(key.to_string());
        let staging = self.staging.clone();
        blocking(move || {
            let file = match staged.data {
                StagedBytes::File(file) => file,
                StagedBytes::Memory(bytes) => {
                    let mut file = tempfile::Builder::new().prefix("tmp-").tempfile_in(&staging)?;
                    file.write_all(&bytes)?;
                    file
                }
            };
            // Temp files are created 0600; a stored package is as readable as any other file.
            file.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
            file.as_file().sync_all()?;
            let dir = target.parent().map(Path::to_owned).unwrap_or_default();
            fs::create_dir_all(&dir)?;
            let outcome = match file.persist_noclobber(&target) {
                Ok(_) => PutOutcome::Created { version_id: None },
                Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => PutOutcome::AlreadyExists,
                Err(e) => return Err(e.error),
            };
            File::open(&dir)?.sync_all()?;
            Ok(outcome)
        })
        .await
    }

    async fn list(&self, prefix: &str, max: usize) -> Result<Vec<ObjectMeta>, Error> {
        let (dir, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        if dir.split('/').any(|c| c == "..") {
            return Ok(Vec::new());
        }
        let (dir, name_prefix, root) = (dir.to_owned(), name_prefix.to_owned(), self.root.join(dir));
        blocking(move || {
            let mut out = Vec::new();
            let entries = match fs::read_dir(&root) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if !name.starts_with(&name_prefix) || !entry.file_type()?.is_file() {
                    continue;
                }
                out.push(meta_of(format!("{dir}{name}"), &entry.metadata()?));
                if out.len() >= max {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn read_range(&self, key: &str, range: ByteRange) -> Result<Bytes, Error> {
        let path = self.path_of(key).ok_or(Error::NotFound)?;
        let result = blocking(move || {
            let file = File::open(&path)?;
            let len = file.metadata()?.len();
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
        let path = self.path_of(key).ok_or(Error::NotFound)?;
        let (file, size) = not_found_as(
            blocking(move || {
                let file = File::open(&path)?;
                let size = file.metadata()?.len();
                Ok((file, size))
            })
            .await,
        )?;
        let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 * 1024);
        Ok(ObjectBody { size, stream: stream.boxed() })
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
