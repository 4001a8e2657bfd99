//! Publishing, the write side of the packages service: input bytes in, canonical zip out.
//!
//! [`build`]: decode (`source`) → canonicalize and hash (`package`), synchronous; the CLI's `pack`.
//! [`Packages::publish`]: `build` in the blocking pool, then store exactly once; the API's
//! `POST /v1/functions/{function}/package`. No HTTP type appears here.

use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::flight::{FlightKey, Flights, Seat};
use super::index::Row;
use super::provenance::{GitProvenance, Provenance};
use super::{Error as PackagesError, Packages};
use crate::package::{
    self, CancelFlag, Limits, MEMORY_SPOOL_BYTES, PackOptions, Packed, Sha256Hex, SourceTree, is_storage_full,
};
use crate::source::git::{GitRequest, GitRevision, GitSource};
use crate::source::{self, Selection, SourceFormat};
use crate::store::key::{FunctionName, KeyPrefix, ObjectKey, StoreKey};
use crate::store::{self, ObjectMeta, PutOutcome, Staged, StagedBytes, Store};

/// Where the source tree comes from.
#[derive(Debug)]
pub enum Input {
    /// A local directory (CLI only: the service never reads its own disk on request).
    Directory(PathBuf),
    /// An archive (tar, tar.gz or zip, detected from its bytes), in memory or in a file.
    Archive(source::ArchiveBytes),
    /// A directory of a commit of a git remote, which the caller's [`GitSource`] must allow.
    Git(GitRequest),
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
            Self::Package(package::Error::Write(e)) if is_storage_full(e) => "insufficient_storage",
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

/// Decodes `input` and applies `selection`; a tar.gz's decompressed contents go to a spool that
/// stays in memory when small, else to an unlinked temp file in `spool_dir`, or, when that disk
/// is full, nowhere (see [`source::from_archive`]); other inputs need none. A git input is
/// fetched through `git`, which must allow its remote (`None`: git inputs are refused). `cancel`
/// stops the work at its next check.
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub fn decode(
    input: Input,
    selection: &Selection,
    limits: &Limits,
    git: Option<&GitSource>,
    spool_dir: Option<&Path>,
    cancel: &CancelFlag,
) -> Result<Decoded, Error> {
    Ok(match input {
        Input::Directory(dir) => Decoded {
            tree: source::from_directory(&dir, selection, limits, cancel)?,
            format: SourceFormat::Directory,
            git: None,
        },
        Input::Archive(bytes) => {
            let (format, tree) = source::from_archive(bytes, selection, limits, spool_dir, cancel)?;
            Decoded { tree, format, git: None }
        }
        Input::Git(request) => {
            let git = git.ok_or_else(|| source::Error::GitRemoteNotAllowed {
                reason: "git sources are not enabled".into(),
            })?;
            let (revision, tree) = source::from_git(git, &request, selection, limits, cancel)?;
            Decoded { tree, format: SourceFormat::Git, git: Some(revision) }
        }
    })
}

/// Decodes `input` (git inputs through `git`), applies `selection` and writes the canonical zip
/// into `out` (empty). `options.cancel` stops decoding and packing alike.
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub fn build<W: Write + Seek>(
    input: Input,
    selection: &Selection,
    limits: &Limits,
    git: Option<&GitSource>,
    options: &PackOptions,
    spool_dir: Option<&Path>,
    out: &mut W,
) -> Result<Built, Error> {
    let Decoded { tree, format, git } = decode(input, selection, limits, git, spool_dir, &options.cancel)?;
    let packed = package::pack(&tree, options, out)?;
    Ok(Built { packed, format, git })
}

/// Where a zip is written while it is built and hashed: memory up to [`MEMORY_SPOOL_BYTES`],
/// then a temp file in the temp directory (which a local store on the same file system renames
/// into place without a copy), and, when that file system is full, nowhere at all.
///
/// The last state is what lets a full disk still answer a re-post: `package::pack_into` hashes
/// the bytes on their way here, so the digest, and with it the key, is known whether or not the
/// bytes were kept. If the key exists, the package is answered without them; if not, the
/// request fails with `insufficient_storage` and the partial file is already gone.
struct StagingSink {
    dir: Option<PathBuf>,
    state: Staging,
}

enum Staging {
    Memory(Vec<u8>),
    File(std::fs::File),
    /// The file system was full: bytes are counted and hashed upstream, then dropped.
    Full,
}

impl StagingSink {
    fn new(dir: Option<PathBuf>) -> Self {
        Self { dir, state: Staging::Memory(Vec::new()) }
    }

    /// Moves to a temp file holding `parts`, or to [`Staging::Full`] if there is no room. The
    /// file is unlinked (it never has a name a crash could leave behind); a local store on its
    /// file system links it into place.
    fn spill(&self, parts: &[&[u8]]) -> io::Result<Staging> {
        let created = match &self.dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        };
        let mut file = match created {
            Ok(file) => file,
            Err(e) if is_storage_full(&e) => return Ok(Self::full()),
            Err(e) => return Err(e),
        };
        for part in parts {
            match file.write_all(part) {
                Ok(()) => {}
                Err(e) if is_storage_full(&e) => return Ok(Self::full()),
                Err(e) => return Err(e),
            }
        }
        Ok(Staging::File(file))
    }

    fn full() -> Staging {
        tracing::warn!(
            "temp storage is full: the zip is hashed but not kept, so only an existing key can be answered"
        );
        Staging::Full
    }

    /// The staged bytes, or `None` if the disk was full.
    fn finish(self) -> Option<StagedBytes> {
        match self.state {
            Staging::Memory(bytes) => Some(StagedBytes::Memory(bytes.into())),
            Staging::File(file) => Some(StagedBytes::File(file)),
            Staging::Full => None,
        }
    }
}

impl Write for StagingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // On an error the state stays `Full` and the temp file is dropped (unlinked).
        self.state = match std::mem::replace(&mut self.state, Staging::Full) {
            Staging::Memory(mut bytes) if bytes.len() + buf.len() <= MEMORY_SPOOL_BYTES => {
                bytes.extend_from_slice(buf);
                Staging::Memory(bytes)
            }
            Staging::Memory(bytes) => self.spill(&[&bytes, buf])?,
            Staging::File(mut file) => match file.write_all(buf) {
                Ok(()) => Staging::File(file),
                Err(e) if is_storage_full(&e) => Self::full(),
                Err(e) => return Err(e),
            },
            Staging::Full => Staging::Full,
        };
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One request to publish a package.
#[derive(Debug)]
pub struct PublishRequest {
    /// The Lambda function.
    pub function: FunctionName,
    /// The request's own prefix, after the operator's (only if the operator allows it; see
    /// [`PrefixPolicy`](super::PrefixPolicy)).
    pub prefix: Option<KeyPrefix>,
    /// Which files to package.
    pub selection: Selection,
    /// The source.
    pub input: Input,
    /// Compute everything, store nothing.
    pub dry_run: bool,
    /// SHA-256 of the archive as it was received (the HTTP layer hashes the upload while it
    /// arrives), for the package's provenance; `None` for git input.
    pub source_sha256: Option<Sha256Hex>,
    /// The name of the token that made the request, for the package's provenance.
    pub created_by: Option<String>,
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
    /// The bucket (`None` for a local store).
    pub bucket: Option<String>,
    /// `s3://…` or `file://…`: where the object is (or would be, on a dry run).
    pub location: String,
}

/// Sets a cancellation flag when dropped: a request that goes away (client disconnect, the
/// request timeout, a shutdown that drops it) stops its blocking work at the next check instead
/// of finishing for nobody, and so frees its worker.
struct CancelOnDrop(CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Packages {
    /// Builds the package and stores it under its content-addressed key exactly once.
    ///
    /// HEAD first: an existing object with the same size (and checksum, when the store keeps
    /// one) means `AlreadyExisted`; different bytes are a [`KeyConflict`](PackagesError::KeyConflict). Absent:
    /// a conditional put; losing that race to another replica is `AlreadyExisted` after the
    /// same verification.
    ///
    /// Identical concurrent archive requests share one build (see `flight`): the first
    /// publishes, the others answer with its package as a re-post would.
    #[tracing::instrument(skip_all, fields(function = %request.function, dry_run = request.dry_run))]
    pub async fn publish(&self, request: PublishRequest) -> Result<Published, PackagesError> {
        let prefix = self.settings.prefixes.resolve(request.prefix.as_ref())?;
        let Some(key) = FlightKey::of(&request, &prefix) else {
            return self.publish_alone(request, prefix).await;
        };
        loop {
            match self.flights.board(&key) {
                Seat::Alone => return self.publish_alone(request, prefix).await,
                Seat::Leader(pilot) => return pilot.land(self.publish_alone(request, prefix).await),
                Seat::Follower(leader) => {
                    if let Some(result) = Flights::wait(leader).await {
                        return result;
                    }
                    tracing::debug!("the request this one waited for failed or went away: boarding again");
                }
            }
        }
    }

    /// [`publish`](Self::publish), for this request alone, under the resolved `prefix`.
    async fn publish_alone(
        &self,
        request: PublishRequest,
        prefix: KeyPrefix,
    ) -> Result<Published, PackagesError> {
        let PublishRequest { function, prefix: _, selection, input, dry_run, source_sha256, created_by } =
            request;
        if let Input::Git(git) = &input {
            // Refused before the queue: no worker or network is used for a request that
            // cannot be served.
            self.check_git(git)?;
        }
        let cancel = self.in_flight_work.child();
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let staging_dir = self.settings.temp_dir.clone();
        let (limits, spool_dir) = (self.settings.limits, self.settings.temp_dir.clone());
        let git_source = matches!(input, Input::Git(_)).then(|| Arc::clone(&self.git));
        let git_path = match &input {
            Input::Git(request) => request.path.clone(),
            _ => None,
        };
        let options =
            PackOptions { threads: self.settings.threads, cancel, cache: self.settings.cache.clone() };
        let started = std::time::Instant::now();
        let flights = Arc::clone(&self.flights);
        let (data, built) = self
            .pool
            .run(move || -> Result<_, PackagesError> {
                let Decoded { tree, format, git } = decode(
                    input,
                    &selection,
                    &limits,
                    git_source.as_deref(),
                    spool_dir.as_deref(),
                    &options.cancel,
                )?;
                flights.count_pack(format.as_str());
                // A dry run keeps no byte; otherwise small zips stay in memory (no temp file
                // unless a local store keeps it) and a full disk keeps none.
                let (data, packed) = if dry_run {
                    (None, package::pack_into(&tree, &options, io::sink()).map_err(Error::from)?)
                } else {
                    let mut sink = StagingSink::new(staging_dir);
                    let packed = package::pack_into(&tree, &options, &mut sink).map_err(Error::from)?;
                    (sink.finish(), packed)
                };
                Ok((data, Built { packed, format, git }))
            })
            .await??;
        let format = built.format.as_str();
        metrics::histogram!("pack_duration_seconds", "format" => format)
            .record(started.elapsed().as_secs_f64());
        if let Some(cache) = &self.settings.cache {
            record_cache_metrics(cache.stats());
        }
        let key = ObjectKey::package(&prefix, &function, built.packed.sha256);
        let store_key = StoreKey::from(&key);
        let (bucket, location) = self.locate(&key);
        let published = |outcome, version_id| Published {
            key: key.clone(),
            packed: built.packed.clone(),
            format: built.format,
            outcome,
            version_id,
            git: built.git.clone(),
            bucket: bucket.clone(),
            location: location.clone(),
        };

        let lock = self.key_lock(&key);
        let _held = lock.lock().await;
        if let Some(meta) = self.store.head(&store_key).await? {
            verify(&key, &meta, &built.packed)?;
            if dry_run {
                return Ok(published(Outcome::DryRun { exists: true }, meta.version_id));
            }
            metrics::counter!("packages_deduplicated_total").increment(1);
            self.repair(&key, &meta, &built.packed).await;
            return Ok(published(Outcome::AlreadyExisted, meta.version_id));
        }
        if dry_run {
            return Ok(published(Outcome::DryRun { exists: false }, None));
        }
        let Some(data) = data else {
            return Err(PackagesError::InsufficientStorage { size: built.packed.size });
        };
        let git = built.git.as_ref().map(|g| GitProvenance {
            repo: g.repo.clone(),
            reference: g.reference.clone(),
            commit: g.commit.clone(),
            path: git_path.clone(),
        });
        let source_sha256 = source_sha256.filter(|_| git.is_none());
        let provenance = Provenance::new(built.format.as_str(), source_sha256, git, created_by);
        let staged = Staged {
            data,
            size: built.packed.size,
            sha256: built.packed.sha256,
            metadata: provenance.to_metadata(),
        };
        // The index's cutover exists before this version stores its first package, so that no
        // package it stores is taken for one stored before the index (see `index`).
        self.cutover().await?;
        match self.store.put_if_absent(&store_key, staged).await? {
            PutOutcome::Created { version_id } => {
                metrics::counter!("packages_created_total").increment(1);
                metrics::counter!("package_bytes_total").increment(built.packed.size);
                let row = Row::new(&key, &built.packed, &provenance, version_id.clone());
                self.index_created(&key, row).await;
                Ok(published(Outcome::Created, version_id))
            }
            PutOutcome::AlreadyExists => {
                // Another replica won the race: make sure it stored the same bytes.
                let meta = self.store.head(&store_key).await?.ok_or_else(|| {
                    store::Error::Backend("the object vanished after a conditional put lost".into())
                })?;
                verify(&key, &meta, &built.packed)?;
                metrics::counter!("packages_deduplicated_total").increment(1);
                self.repair(&key, &meta, &built.packed).await;
                Ok(published(Outcome::AlreadyExisted, meta.version_id))
            }
        }
    }
}

/// The compressed-entry cache's counters, as Prometheus counters (set to the cache's own totals:
/// packs running at once each report them, and a counter only ever moves up).
fn record_cache_metrics(stats: package::CacheStats) {
    metrics::counter!("pack_cache_hits_total").absolute(stats.hits);
    metrics::counter!("pack_cache_misses_total").absolute(stats.misses);
    metrics::counter!("pack_cache_hit_bytes_total").absolute(stats.hit_bytes);
    metrics::counter!("pack_cache_written_bytes_total").absolute(stats.written_bytes);
    metrics::counter!("pack_cache_write_errors_total").absolute(stats.write_errors);
    metrics::counter!("pack_cache_rejected_total").absolute(stats.rejected);
    metrics::counter!("pack_cache_evictions_total").absolute(stats.evicted);
}

/// An existing object counts as "this package" only if its size, and its checksum when the
/// store keeps a full-object one, are ours.
fn verify(key: &ObjectKey, meta: &ObjectMeta, packed: &Packed) -> Result<(), PackagesError> {
    if !holds(meta, packed) {
        return Err(PackagesError::KeyConflict {
            key: key.clone(),
            stored_size: meta.size,
            size: packed.size,
        });
    }
    Ok(())
}

/// Whether `meta` describes the zip `packed`: the same size, and the same full-object checksum
/// when the store keeps one (a multipart checksum, `…-N`, is not the file's digest).
pub(super) fn holds(meta: &ObjectMeta, packed: &Packed) -> bool {
    let checksum_differs =
        meta.checksum_sha256.as_deref().is_some_and(|c| !c.contains('-') && c != packed.code_sha256());
    meta.size == packed.size && !checksum_differs
}
