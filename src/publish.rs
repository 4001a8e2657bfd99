//! The one use case shared by the HTTP API and the CLI: input bytes in, canonical zip out.
//!
//! [`build`]: decode (`source`) → canonicalize and hash (`package`), synchronous; the CLI's `pack`.
//! [`Publisher::publish`]: `build` in the blocking pool, then store exactly once; the API's
//! `POST /v1/functions/{function}/package`. No HTTP type appears here.

use std::collections::HashMap;
use std::io::{self, Read, Seek, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::blocking::{BlockingPool, PoolError};
use crate::package::{self, CancelFlag, Limits, MEMORY_SPOOL_BYTES, PackOptions, Packed, SourceTree};
use crate::source::git::{GitRequest, GitRevision, GitSource};
use crate::source::{self, Selection, SourceFormat};
use crate::store::key::{FunctionName, KeyError, KeyPrefix, ObjectKey};
use crate::store::{self, Backend, ObjectMeta, PutOutcome, Staged, StagedBytes, Store};

/// Where the source tree comes from.
#[derive(Debug)]
pub enum Input {
    /// A local directory (CLI only: the service never reads its own disk on request).
    Directory(PathBuf),
    /// An archive (tar, tar.gz or zip, detected from its bytes), in memory or in a file.
    Archive(source::ArchiveBytes),
    /// A directory of a commit of an allow-listed git remote.
    Git(GitInput),
}

/// A git request and the configured git sources that serve it.
#[derive(Debug, Clone)]
pub struct GitInput {
    /// The allowlist, mirror cache and fetch limits (shared by all requests).
    pub source: Arc<GitSource>,
    /// Remote, ref and sub-path.
    pub request: GitRequest,
}

/// Why a package could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is unusable.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// The zip could not be written.
    #[error(transparent)]
    Package(#[from] package::Error),
}

impl Error {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Source(e) => e.code(),
            Self::Package(package::Error::Cancelled) => "cancelled",
            Self::Package(package::Error::SourceChanged { .. }) => "source_changed",
            Self::Package(_) => "package_failed",
        }
    }
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// Digest, size and file count of the zip.
    pub packed: Packed,
    /// The detected input format.
    pub format: SourceFormat,
    /// For git input: the remote, the ref and the commit it resolved to.
    pub git: Option<GitRevision>,
}

/// A decoded input: the tree to pack and where it came from.
#[derive(Debug)]
pub struct Decoded {
    /// The files, in canonical order.
    pub tree: SourceTree,
    /// The detected input format.
    pub format: SourceFormat,
    /// For git input: the remote, the ref and the commit it resolved to.
    pub git: Option<GitRevision>,
}

/// Decodes `input` and applies `selection`; archive and git contents go to a spool that stays
/// in memory when small, else to an unlinked temp file in `spool_dir`.
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub fn decode(
    input: Input,
    selection: &Selection,
    limits: &Limits,
    spool_dir: Option<&Path>,
) -> Result<Decoded, Error> {
    Ok(match input {
        Input::Directory(dir) => Decoded {
            tree: source::from_directory(&dir, selection, limits)?,
            format: SourceFormat::Directory,
            git: None,
        },
        Input::Archive(bytes) => {
            let (format, tree) = source::from_archive(bytes, selection, limits, spool_dir)?;
            Decoded { tree, format, git: None }
        }
        Input::Git(git) => {
            let (revision, tree) = source::from_git(&git.source, &git.request, selection, limits, spool_dir)?;
            Decoded { tree, format: SourceFormat::Git, git: Some(revision) }
        }
    })
}

/// Decodes `input`, applies `selection` and writes the canonical zip into `out` (empty).
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub fn build<W: Read + Write + Seek>(
    input: Input,
    selection: &Selection,
    limits: &Limits,
    options: &PackOptions,
    spool_dir: Option<&Path>,
    out: &mut W,
) -> Result<Built, Error> {
    let Decoded { tree, format, git } = decode(input, selection, limits, spool_dir)?;
    let packed = package::pack(&tree, options, out)?;
    Ok(Built { packed, format, git })
}

/// An upper bound of the zip size of `tree`: its bytes (an entry is never larger than its file,
/// since it is stored when deflate does not shrink it) plus the largest headers per entry
/// (local and central, each with the path; ZIP64 fields) and the end records.
fn zip_size_bound(tree: &SourceTree) -> u64 {
    let headers: u64 = tree.entries().iter().map(|e| 2 * e.path.as_str().len() as u64 + 150).sum();
    tree.total_bytes() + headers + 200
}

/// Why publishing a package failed (building it, or storing it).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Building failed.
    #[error(transparent)]
    Build(#[from] Error),
    /// No worker was free, or the work panicked.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The key already holds different bytes: never reported as success.
    #[error("{key} already exists with different content ({stored_size} bytes stored, {size} bytes built)")]
    KeyConflict {
        /// The key.
        key: String,
        /// Size of the stored object.
        stored_size: u64,
        /// Size of the package just built.
        size: u64,
    },
    /// Operator and request prefixes do not form a valid prefix.
    #[error("invalid key prefix: {0}")]
    Prefix(#[from] KeyError),
    /// The temp file for the zip could not be created.
    #[error("creating a staging file")]
    Staging(#[source] std::io::Error),
}

/// One request to publish a package.
#[derive(Debug)]
pub struct PublishRequest {
    /// The Lambda function.
    pub function: FunctionName,
    /// The request's own prefix, after the operator's (only if the operator allows it).
    pub prefix: Option<KeyPrefix>,
    /// Which files to package.
    pub selection: Selection,
    /// The source.
    pub input: Input,
    /// Compute everything, store nothing.
    pub dry_run: bool,
}

/// What happened to the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This call stored it.
    Created,
    /// It was already stored, with the same bytes.
    AlreadyExisted,
    /// Dry run: nothing stored; whether the key exists.
    DryRun {
        /// The key exists (with the same bytes).
        exists: bool,
    },
}

/// A published (or dry-run) package.
#[derive(Debug, Clone)]
pub struct Published {
    /// Its key.
    pub key: ObjectKey,
    /// Digest, size, file count.
    pub packed: Packed,
    /// The detected input format.
    pub format: SourceFormat,
    /// What this call did.
    pub outcome: Outcome,
    /// The S3 version id, on versioned buckets.
    pub version_id: Option<String>,
    /// For git input: the remote, the ref and the commit it resolved to.
    pub git: Option<GitRevision>,
}

/// Turns uploads into stored packages: build in the blocking pool, then store exactly once.
#[derive(Debug)]
pub struct Publisher {
    store: Backend,
    pool: BlockingPool,
    limits: Limits,
    threads: NonZeroUsize,
    prefix: KeyPrefix,
    temp_dir: Option<PathBuf>,
    /// One lock per key being stored, so concurrent requests for one key in this replica
    /// upload once: the others wait, then find the object with HEAD.
    inflight: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Sets a cancellation flag when dropped: a request that goes away (client disconnect,
/// timeout) stops its blocking work at the next entry instead of finishing for nobody.
struct CancelOnDrop(CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Publisher {
    /// A publisher over `store`.
    pub fn new(
        store: Backend,
        pool: BlockingPool,
        limits: Limits,
        threads: NonZeroUsize,
        prefix: KeyPrefix,
        temp_dir: Option<PathBuf>,
    ) -> Self {
        Self { store, pool, limits, threads, prefix, temp_dir, inflight: Mutex::new(HashMap::new()) }
    }

    /// The store.
    pub fn store(&self) -> &Backend {
        &self.store
    }

    /// The operator's key prefix.
    pub fn prefix(&self) -> &KeyPrefix {
        &self.prefix
    }

    /// The limits applied to every request.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The directory for request temp files (uploads, spools).
    pub fn temp_dir(&self) -> Option<&Path> {
        self.temp_dir.as_deref()
    }

    /// The blocking pool.
    pub fn pool(&self) -> &BlockingPool {
        &self.pool
    }

    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Builds the package and stores it under its content-addressed key exactly once.
    ///
    /// HEAD first: an existing object with the same size (and checksum, when the store keeps
    /// one) means `AlreadyExisted`; different bytes are a [`PublishError::KeyConflict`]. Absent:
    /// a conditional put; losing that race to another replica is `AlreadyExisted` after the
    /// same verification.
    #[tracing::instrument(skip_all, fields(function = %request.function, dry_run = request.dry_run))]
    pub async fn publish(&self, request: PublishRequest) -> Result<Published, PublishError> {
        let PublishRequest { function, prefix, selection, input, dry_run } = request;
        let prefix = match &prefix {
            Some(p) => self.prefix.join(p)?,
            None => self.prefix.clone(),
        };
        let cancel = CancelFlag::default();
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let staging_dir = self.store.staging_dir().map(Path::to_owned).or_else(|| self.temp_dir.clone());
        let (limits, spool_dir) = (self.limits, self.temp_dir.clone());
        let options = PackOptions { threads: self.threads, cancel };
        let started = std::time::Instant::now();
        let (data, built) = self
            .pool
            .run(move || -> Result<_, PublishError> {
                let Decoded { tree, format, git } = decode(input, &selection, &limits, spool_dir.as_deref())?;
                // Small packages are built in memory: no temp file unless a local store keeps it.
                let (data, packed) = if zip_size_bound(&tree) <= MEMORY_SPOOL_BYTES as u64 {
                    let mut out = io::Cursor::new(Vec::new());
                    let packed = package::pack(&tree, &options, &mut out).map_err(Error::from)?;
                    (StagedBytes::Memory(out.into_inner().into()), packed)
                } else {
                    let mut file = match &staging_dir {
                        Some(dir) => tempfile::Builder::new().prefix("tmp-").tempfile_in(dir),
                        None => tempfile::Builder::new().prefix("lambda-packager-").tempfile(),
                    }
                    .map_err(PublishError::Staging)?;
                    let packed = package::pack(&tree, &options, file.as_file_mut()).map_err(Error::from)?;
                    (StagedBytes::File(file), packed)
                };
                Ok((data, Built { packed, format, git }))
            })
            .await??;
        let format = built.format.as_str();
        metrics::histogram!("pack_duration_seconds", "format" => format)
            .record(started.elapsed().as_secs_f64());
        let key = ObjectKey::package(&prefix, &function, built.packed.sha256);
        let key_text = key.to_string();
        let published = |outcome, version_id| Published {
            key: key.clone(),
            packed: built.packed.clone(),
            format: built.format,
            outcome,
            version_id,
            git: built.git.clone(),
        };

        let lock = self.key_lock(&key_text);
        let _held = lock.lock().await;
        if let Some(meta) = self.store.head(&key_text).await? {
            verify(&meta, &built.packed)?;
            if dry_run {
                return Ok(published(Outcome::DryRun { exists: true }, meta.version_id));
            }
            metrics::counter!("packages_deduplicated_total").increment(1);
            return Ok(published(Outcome::AlreadyExisted, meta.version_id));
        }
        if dry_run {
            return Ok(published(Outcome::DryRun { exists: false }, None));
        }
        let staged = Staged { data, size: built.packed.size, sha256: built.packed.sha256 };
        match self.store.put_if_absent(&key, staged).await? {
            PutOutcome::Created { version_id } => {
                metrics::counter!("packages_created_total").increment(1);
                metrics::counter!("package_bytes_total").increment(built.packed.size);
                Ok(published(Outcome::Created, version_id))
            }
            PutOutcome::AlreadyExists => {
                // Another replica won the race: make sure it stored the same bytes.
                let meta = self.store.head(&key_text).await?.ok_or_else(|| {
                    store::Error::Backend("the object vanished after a conditional put lost".into())
                })?;
                verify(&meta, &built.packed)?;
                metrics::counter!("packages_deduplicated_total").increment(1);
                Ok(published(Outcome::AlreadyExisted, meta.version_id))
            }
        }
    }
}

/// An existing object counts as "this package" only if its size, and its checksum when the
/// store keeps a full-object one, are ours.
fn verify(meta: &ObjectMeta, packed: &Packed) -> Result<(), PublishError> {
    let checksum_differs =
        meta.checksum_sha256.as_deref().is_some_and(|c| !c.contains('-') && c != packed.code_sha256());
    if meta.size != packed.size || checksum_differs {
        return Err(PublishError::KeyConflict {
            key: meta.key.clone(),
            stored_size: meta.size,
            size: packed.size,
        });
    }
    Ok(())
}
