//! Untrusted input to [`SourceTree`]: tar, tar.gz, zip, a local directory, a git commit.
//!
//! Every input kind is reduced to a namespace (an archive's members in memory, a directory on
//! disk, the tree of a git commit) and walked by one function, [`walk::build_tree`], which applies the selection and the
//! symlink policy. That is why the same files with the same exec bits give the same package
//! whatever they arrived in. Every way an input can be bad has an [`Error`] variant with a
//! stable [`Error::code`]; nothing here panics on input, and nothing is left on disk.
//!
//! All functions run synchronously, so they must be called inside `spawn_blocking()` from async
//! code.

mod dir;
pub mod git;
mod memory;
pub mod select;
mod tar;
mod walk;
mod zip;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

pub use self::select::Selection;
use self::select::Selector;
use crate::package::{CancelFlag, Limits, PathError, SourceTree, Spool, SpoolWriter, is_storage_full};

/// The kinds of input, as detected from their bytes (never from a name or a `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// A POSIX, GNU or v7 tar archive.
    Tar,
    /// A gzip-compressed tar archive.
    TarGz,
    /// A zip archive.
    Zip,
    /// A local directory.
    Directory,
    /// The tree of a commit, read from git objects.
    Git,
}

impl SourceFormat {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tar => "tar",
            Self::TarGz => "tar.gz",
            Self::Zip => "zip",
            Self::Directory => "directory",
            Self::Git => "git",
        }
    }
}

/// Why an input cannot be packaged. See [`Error::is_input_error`] for whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a tar, tar.gz or zip.
    #[error("unsupported input: {0}")]
    UnsupportedFormat(&'static str),
    /// Truncated, garbage or internally inconsistent archive.
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    /// A member name that is not a clean relative UTF-8 path.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The name, lossily decoded.
        path: String,
        /// What is wrong with it.
        reason: PathError,
    },
    /// A path longer than the limit.
    #[error("path {path:?} is longer than {max} bytes")]
    PathTooLong {
        /// The path (possibly shortened).
        path: String,
        /// The limit.
        max: u64,
    },
    /// A path with more components than the limit.
    #[error("path {path:?} has more than {max} components")]
    PathTooDeep {
        /// The path.
        path: String,
        /// The limit.
        max: u64,
    },
    /// A device, FIFO, socket or unknown member type.
    #[error("{path:?} is a {kind}, which a Lambda package cannot contain")]
    UnsupportedEntryType {
        /// The member.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// A sparse file (GNU or PAX).
    #[error("{path:?} is a sparse file, which is not supported")]
    SparseEntry {
        /// The member.
        path: String,
    },
    /// The same path twice.
    #[error("{path:?} appears more than once")]
    DuplicatePath {
        /// The path.
        path: String,
    },
    /// A path that is a file in one place and a directory in another.
    #[error("{path:?} is both a file and a directory")]
    PathConflict {
        /// The path.
        path: String,
    },
    /// A GNU long name or PAX header larger than the limit.
    #[error("an extended header is larger than {max} bytes")]
    HeaderTooLarge {
        /// The limit.
        max: u64,
    },
    /// More entries than the limit.
    #[error("more than {max} entries")]
    TooManyEntries {
        /// The limit.
        max: u64,
    },
    /// More unpacked bytes than the limit.
    #[error("more than {max} bytes unpacked")]
    UnpackedTooLarge {
        /// The limit.
        max: u64,
    },
    /// A received archive larger than the limit.
    #[error("the archive is larger than {max} bytes")]
    ArchiveTooLarge {
        /// The limit.
        max: u64,
    },
    /// Decompression ratio above the limit: a compression bomb.
    #[error("the input decompresses more than {max} times its size")]
    CompressionRatio {
        /// The limit.
        max: u64,
    },
    /// A kept symlink that is absolute or leaves the root.
    #[error("symlink {path:?} -> {target:?} points outside the input")]
    SymlinkEscapes {
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// A kept symlink whose target does not exist.
    #[error("symlink {path:?} -> {target:?} does not resolve inside the input")]
    SymlinkBroken {
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// A kept symlink that loops.
    #[error("symlink {path:?} -> {target:?} loops")]
    SymlinkLoop {
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// A tar hard link that does not name an earlier regular file.
    #[error("hard link {path:?} -> {target:?} does not name an earlier regular file")]
    InvalidHardLink {
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// The `path` option names nothing.
    #[error("path {path:?} does not exist in the input")]
    SubPathNotFound {
        /// The option.
        path: String,
    },
    /// The `path` option names a file.
    #[error("path {path:?} is not a directory")]
    SubPathNotDirectory {
        /// The option.
        path: String,
    },
    /// The selection keeps no file.
    #[error("the selection leaves no file to package")]
    EmptyPackage,
    /// An include/exclude pattern that does not parse.
    #[error("invalid pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// The parser's complaint.
        reason: String,
    },
    /// Another invalid selection option.
    #[error("invalid selection: {0}")]
    InvalidSelection(String),
    /// A zip entry compressed with something else than store or deflate.
    #[error("{path:?} uses compression method {method}; only store and deflate are supported")]
    UnsupportedCompression {
        /// The entry.
        path: String,
        /// The method.
        method: String,
    },
    /// An encrypted zip entry.
    #[error("{path:?} is encrypted")]
    EncryptedEntry {
        /// The entry.
        path: String,
    },
    /// A git submodule (gitlink) that the selection would keep: its files are in another
    /// repository, which is never fetched.
    #[error("{path:?} is a git submodule; submodules are not packaged")]
    SubmoduleNotSupported {
        /// The submodule's path in the repository.
        path: String,
    },
    /// The git remote is not one the configuration allows, or not a kind of URL that is ever
    /// allowed (ssh, `ext::`, credentials, options). The URL is not repeated: it may hold a secret.
    #[error("git remote not allowed: {reason}")]
    GitRemoteNotAllowed {
        /// Why.
        reason: String,
    },
    /// A git request whose repository URL or ref is malformed.
    #[error("invalid git request: {0}")]
    InvalidGitRequest(String),
    /// The branch, tag or commit does not exist in the remote.
    #[error("git ref {reference:?} was not found in {repo}")]
    GitRefNotFound {
        /// The remote, normalized.
        repo: String,
        /// The ref as requested.
        reference: String,
    },
    /// `git` failed to list or fetch from the remote (unreachable, not a repository, refused).
    #[error("fetching from {repo} failed: {detail}")]
    GitFetchFailed {
        /// The remote, normalized.
        repo: String,
        /// The end of git's error output.
        detail: String,
    },
    /// Fetching (including waiting for another fetch of the same remote) took too long.
    #[error("fetching from {repo} took longer than {secs} s")]
    GitFetchTimeout {
        /// The remote, normalized.
        repo: String,
        /// The limit, in seconds.
        secs: u64,
    },
    /// A fetch would add more than the limit to the remote's mirror.
    #[error("fetching from {repo} would add more than {max} bytes to its mirror")]
    GitRepoTooLarge {
        /// The remote, normalized.
        repo: String,
        /// The limit, in bytes.
        max: u64,
    },
    /// Reading objects from a fetched mirror failed: not the client's fault.
    #[error("reading git objects failed")]
    GitRead(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Resolving symlinks followed more links than the limit, counting every hop of every
    /// resolution over the whole walk: a symlink graph whose expansion is exponential in its
    /// size.
    #[error("resolving symlinks followed more than {max} links")]
    TooManySymlinks {
        /// The limit.
        max: u64,
    },
    /// The walk entered more directories than the limit, counting each entry through a link.
    #[error("the walk entered more than {max} directories (links included)")]
    TooManyDirectories {
        /// The limit.
        max: u64,
    },
    /// The walk took more steps (directory entries examined, path components resolved) than
    /// the limit.
    #[error("walking the input took more than {max} steps")]
    TooManyWalkSteps {
        /// The limit.
        max: u64,
    },
    /// The request went away (client gone, timeout, shutdown) and its work was stopped.
    #[error("the work was cancelled")]
    Cancelled,
    /// Temp storage (the spool of decompressed contents) is full: not the client's fault, and
    /// worth retrying later.
    #[error("no space left for temporary contents")]
    StorageFull(#[source] io::Error),
    /// Reading the input or writing temp storage failed: not the client's fault.
    #[error("I/O error while reading the input")]
    Io(#[source] io::Error),
}

impl Error {
    /// A stable, machine-readable code (the API's `error.code`, the CLI's `error[code]`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedFormat(_) => "unsupported_format",
            Self::Corrupt(_) => "corrupt_archive",
            Self::InvalidPath { .. } => "invalid_path",
            Self::PathTooLong { .. } => "path_too_long",
            Self::PathTooDeep { .. } => "path_too_deep",
            Self::UnsupportedEntryType { .. } => "unsupported_entry_type",
            Self::SparseEntry { .. } => "sparse_entry",
            Self::DuplicatePath { .. } => "duplicate_path",
            Self::PathConflict { .. } => "path_conflict",
            Self::HeaderTooLarge { .. } => "header_too_large",
            Self::TooManyEntries { .. } => "too_many_entries",
            Self::UnpackedTooLarge { .. } => "unpacked_too_large",
            Self::ArchiveTooLarge { .. } => "archive_too_large",
            Self::CompressionRatio { .. } => "compression_ratio_exceeded",
            Self::SymlinkEscapes { .. } => "symlink_escapes",
            Self::SymlinkBroken { .. } => "symlink_broken",
            Self::SymlinkLoop { .. } => "symlink_loop",
            Self::InvalidHardLink { .. } => "invalid_hardlink",
            Self::SubPathNotFound { .. } => "path_not_found",
            Self::SubPathNotDirectory { .. } => "path_not_directory",
            Self::EmptyPackage => "empty_package",
            Self::InvalidPattern { .. } => "invalid_pattern",
            Self::InvalidSelection(_) => "invalid_selection",
            Self::UnsupportedCompression { .. } => "unsupported_compression",
            Self::EncryptedEntry { .. } => "encrypted_entry",
            Self::SubmoduleNotSupported { .. } => "submodule_not_supported",
            Self::GitRemoteNotAllowed { .. } => "git_remote_not_allowed",
            Self::InvalidGitRequest(_) => "invalid_git_request",
            Self::GitRefNotFound { .. } => "git_ref_not_found",
            Self::GitFetchFailed { .. } => "git_fetch_failed",
            Self::GitFetchTimeout { .. } => "git_fetch_timeout",
            Self::GitRepoTooLarge { .. } => "git_repo_too_large",
            Self::GitRead(_) => "git_read_failed",
            Self::TooManySymlinks { .. } => "too_many_links",
            Self::TooManyDirectories { .. } => "too_many_directories",
            Self::TooManyWalkSteps { .. } => "too_many_walk_steps",
            Self::Cancelled => "cancelled",
            Self::StorageFull(_) => "insufficient_storage",
            Self::Io(_) => "io_error",
        }
    }

    /// An I/O error of this machine: [`Error::StorageFull`] when the disk is full, else
    /// [`Error::Io`].
    pub(crate) fn io(e: io::Error) -> Self {
        if is_storage_full(&e) { Self::StorageFull(e) } else { Self::Io(e) }
    }

    /// Whether the request is at fault (bad input, a refused remote, a missing ref), as opposed
    /// to this machine or the git remote (I/O, an unreachable or slow remote, a broken mirror).
    pub fn is_input_error(&self) -> bool {
        !matches!(
            self,
            Self::Io(_)
                | Self::StorageFull(_)
                | Self::Cancelled
                | Self::GitRead(_)
                | Self::GitFetchFailed { .. }
                | Self::GitFetchTimeout { .. }
        )
    }
}

/// Detects the input format from its first bytes (up to 512).
pub fn detect(head: &[u8]) -> Result<SourceFormat, Error> {
    match head {
        [] => Err(Error::UnsupportedFormat("the input is empty")),
        [0x1f, 0x8b, ..] => Ok(SourceFormat::TarGz),
        [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..] => Ok(SourceFormat::Zip),
        [b'B', b'Z', b'h', ..] => Err(Error::UnsupportedFormat("bzip2 input; send tar, tar.gz or zip")),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => {
            Err(Error::UnsupportedFormat("xz input; send tar, tar.gz or zip"))
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Err(Error::UnsupportedFormat("zstd input; send tar, tar.gz or zip")),
        _ if is_tar_header(head) => Ok(SourceFormat::Tar),
        _ => Err(Error::UnsupportedFormat("not a tar, tar.gz or zip archive")),
    }
}

/// A POSIX/GNU header says `ustar` at offset 257; a v7 header only has a valid checksum.
fn is_tar_header(head: &[u8]) -> bool {
    if head.len() < 512 || head[..512].iter().all(|b| *b == 0) {
        return false;
    }
    if &head[257..262] == b"ustar" {
        return true;
    }
    let field = &head[148..156];
    let digits: String = field.iter().map(|b| *b as char).filter(|c| c.is_digit(8)).collect();
    let Ok(stored) = u32::from_str_radix(&digits, 8) else { return false };
    let sum: u32 = head[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| if (148..156).contains(&i) { 32 } else { u32::from(*b) })
        .sum();
    sum == stored
}

/// An archive's bytes: in memory when small (see [`crate::package::MEMORY_SPOOL_BYTES`]), else a
/// file (an unlinked temp file for uploads).
#[derive(Debug)]
pub enum ArchiveBytes {
    /// The whole archive in memory.
    Memory(io::Cursor<Vec<u8>>),
    /// A file holding the archive.
    File(File),
}

impl ArchiveBytes {
    /// The bytes as a [`Spool`], read by offset from then on: decoders read it through their own
    /// readers, and a raw tar's files are packed straight from it (see [`from_archive`]).
    fn into_spool(self) -> Spool {
        match self {
            Self::Memory(c) => Spool::from_bytes(c.into_inner()),
            Self::File(f) => Spool::from_file(f),
        }
    }
}

impl From<File> for ArchiveBytes {
    fn from(file: File) -> Self {
        Self::File(file)
    }
}

impl From<Vec<u8>> for ArchiveBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Memory(io::Cursor::new(bytes))
    }
}

impl Read for ArchiveBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Memory(c) => c.read(buf),
            Self::File(f) => f.read(buf),
        }
    }
}

impl Seek for ArchiveBytes {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            Self::Memory(c) => c.seek(pos),
            Self::File(f) => f.seek(pos),
        }
    }
}

/// Decodes an archive (tar, tar.gz or zip, detected from its bytes) into a tree.
///
/// Contents are read where they are whenever they can be, so that most inputs need no temp
/// space at all:
///
/// - a raw tar's files are packed from the archive's own bytes, at the offsets where the tar
///   puts them;
/// - a zip's entries are inflated from the archive when they are packed (each is compressed
///   on its own and can be found by its offset);
/// - a tar.gz's files are only reachable by decompressing the stream in order, so they go to
///   a spool that stays in memory up to [`crate::package::MEMORY_SPOOL_BYTES`] and rolls over
///   to an unlinked temp file in `spool_dir` (or the system temp directory) beyond; it
///   disappears with the tree. When that disk is full, the archive is decoded again without a
///   spool: the tree then records each file's offset in the decompressed stream, and the packer
///   decompresses the archive again in passes, each compressing the next window of entries in
///   zip order (`package::stream`). Same bytes, no disk, bounded memory, more CPU time; the
///   only way a re-post of a stored tar.gz can be answered on a full disk.
///
/// `cancel` is checked before every read of the archive (so before every buffer decompressed or
/// copied, on every pass) and at every step of the walk.
pub fn from_archive(
    bytes: ArchiveBytes,
    selection: &Selection,
    limits: &Limits,
    spool_dir: Option<&Path>,
    cancel: &CancelFlag,
) -> Result<(SourceFormat, SourceTree), Error> {
    let selector = Selector::new(selection)?;
    let upload = bytes.into_spool();
    let len = upload.len().map_err(Error::io)?;
    if len > limits.max_archive_bytes {
        return Err(Error::ArchiveTooLarge { max: limits.max_archive_bytes });
    }
    let mut head = Vec::with_capacity(512);
    upload.reader().and_then(|r| r.take(512).read_to_end(&mut head)).map_err(Error::io)?;
    let format = detect(&head)?;
    // Only a tar.gz writes anything (its spool), so only a tar.gz can find the disk full here.
    let tree = match decode(&upload, format, GzContents::Spool(spool_dir), &selector, limits, cancel) {
        Err(Error::StorageFull(e)) if format == SourceFormat::TarGz => {
            tracing::warn!(
                error = %e,
                "no room to spool the tar.gz contents: packing them from the upload, in passes"
            );
            decode(&upload, format, GzContents::Stream, &selector, limits, cancel)?
        }
        other => other?,
    };
    Ok((format, tree))
}

/// Where [`decode`] leaves a tar.gz's decompressed contents (other archives leave theirs in the
/// upload, whatever this says).
#[derive(Debug, Clone, Copy)]
enum GzContents<'a> {
    /// Copied into a spool, which rolls over to a temp file in this directory.
    Spool(Option<&'a Path>),
    /// Left in the decompressed stream, read again in passes when packing.
    Stream,
}

/// Decodes the archive in `upload` and walks it.
fn decode(
    upload: &Spool,
    format: SourceFormat,
    gz: GzContents<'_>,
    selector: &Selector,
    limits: &Limits,
    cancel: &CancelFlag,
) -> Result<SourceTree, Error> {
    let reader = || upload.reader().map(|r| Cancellable { inner: r, cancel }).map_err(Error::io);
    let decoded = match (format, gz) {
        (SourceFormat::Tar, _) => {
            let mut ns = memory::MemNamespace::over_upload(limits, upload.clone());
            tar::read(io::BufReader::with_capacity(128 * 1024, reader()?), false, &mut ns, limits)
                .map(|()| ns)
        }
        (SourceFormat::TarGz, GzContents::Spool(spool_dir)) => {
            let mut ns = memory::MemNamespace::new(limits, spool_dir)?;
            tar::read(reader()?, true, &mut ns, limits).map(|()| ns)
        }
        (SourceFormat::TarGz, GzContents::Stream) => {
            let stream = tar::TarGzStream::new(upload.clone(), limits, cancel);
            let mut ns = memory::MemNamespace::over_stream(limits, Arc::new(stream));
            tar::read(reader()?, true, &mut ns, limits).map(|()| ns)
        }
        (SourceFormat::Zip, _) => {
            let mut ns = memory::MemNamespace::over_zip(limits, upload.clone());
            zip::read(reader()?, upload, &mut ns, limits).map(|()| ns)
        }
        (SourceFormat::Directory | SourceFormat::Git, _) => {
            return Err(Error::UnsupportedFormat("not an archive"));
        }
    };
    // A cancelled read surfaces through the decoders' own error types; whatever they made of
    // it, the answer is that the work was cancelled.
    let ns = match decoded {
        Err(_) if cancel.is_cancelled() => return Err(Error::Cancelled),
        other => other?,
    };
    walk::build_tree(ns, selector, limits, cancel)
}

/// Reads a local directory into a tree, without following symlinks out of it.
pub fn from_directory(
    dir: &Path,
    selection: &Selection,
    limits: &Limits,
    cancel: &CancelFlag,
) -> Result<SourceTree, Error> {
    let selector = Selector::new(selection)?;
    let root = dir
        .canonicalize()
        .map_err(|e| Error::io(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))))?;
    walk::build_tree(dir::DirNamespace::new(root), &selector, limits, cancel)
}

/// Fetches `request.repo` into its mirror (see [`git::GitSource`]), resolves `request.reference`
/// to a commit and reads the tree the selection asks for from the commit's git objects.
///
/// `request.path`, when given, is the selection's sub-path (giving both is an error). Blobs of
/// kept files are not copied anywhere: the packer reads them from the mirror, so a git source
/// needs no temp space beyond what fetching adds to the mirror. The selection is checked before
/// any network I/O.
///
/// `cancel` is polled while waiting for the remote's lock and for `git` (a cancelled fetch kills
/// git's whole process group, as its timeout does) and checked at every step of the walk.
///
/// Runs synchronously (it waits for `git` and reads files), so it must be called inside
/// `spawn_blocking()` from async code.
pub fn from_git(
    source: &git::GitSource,
    request: &git::GitRequest,
    selection: &Selection,
    limits: &Limits,
    cancel: &CancelFlag,
) -> Result<(git::GitRevision, SourceTree), Error> {
    let selection = match (&request.path, &selection.path) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidGitRequest(
                "give the sub-path once, as git.path or as the selection's path".into(),
            ));
        }
        (Some(path), None) => &Selection { path: Some(path.clone()), ..selection.clone() },
        (None, _) => selection,
    };
    let selector = Selector::new(selection)?;
    let fetched = source.fetch(request, cancel)?;
    let ns = git::GitNamespace::open(&fetched, limits)?;
    let tree = walk::build_tree(ns, &selector, limits, cancel)?;
    Ok((fetched.revision(request), tree))
}

/// The input's reader, which refuses to read once the request is cancelled: every decoder reads
/// through it, so decompression and copies stop within one buffer.
struct Cancellable<'a, R> {
    inner: R,
    cancel: &'a CancelFlag,
}

/// The error a [`Cancellable`] reader fails with, told apart by [`read_error`].
#[derive(Debug, thiserror::Error)]
#[error("the request was cancelled")]
struct CancelledRead;

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(io::Error::other(CancelledRead));
        }
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for Cancellable<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

/// Maps an error raised while reading an input stream: a limit crossed inside a reader keeps
/// its meaning, as does a cancellation; anything else means the archive is unreadable.
fn read_error(e: &io::Error) -> Error {
    if let Some(limit) = e.get_ref().and_then(|inner| inner.downcast_ref::<tar::StreamLimit>()) {
        return match *limit {
            tar::StreamLimit::Unpacked { max } => Error::UnpackedTooLarge { max },
            tar::StreamLimit::Ratio { max } => Error::CompressionRatio { max },
        };
    }
    if e.get_ref().is_some_and(|inner| inner.is::<CancelledRead>()) {
        return Error::Cancelled;
    }
    Error::Corrupt(e.to_string())
}

/// Reads once from an input stream, retrying interruptions.
fn read_input(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, Error> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(&e)),
        }
    }
}

/// Reads exactly `expected` bytes of an input stream and drops them: a member whose bytes stay
/// where they are, but whose length must be proven (a truncated archive is an error). With
/// `crc`, returns their CRC-32 (else 0): what a later read of the same bytes is checked against.
fn skip_exactly(r: &mut impl Read, expected: u64, crc: bool) -> Result<u32, Error> {
    let mut buf = vec![0u8; usize::try_from(expected.clamp(1, 64 * 1024)).unwrap_or(1)];
    let mut total = 0u64;
    let mut sum = crc.then(flate2::Crc::new);
    loop {
        let n = read_input(r, &mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(sum) = &mut sum {
            sum.update(&buf[..n]);
        }
        total += n as u64;
    }
    if total != expected {
        return Err(Error::Corrupt(format!("a member is truncated ({total} of {expected} bytes)")));
    }
    Ok(sum.map_or(0, |s| s.sum()))
}

/// Copies exactly `expected` bytes of an input stream into the spool; returns their offset.
fn copy_into(spool: &mut SpoolWriter, r: &mut impl Read, expected: u64) -> Result<u64, Error> {
    let mut buf = vec![0u8; usize::try_from(expected.clamp(1, 64 * 1024)).unwrap_or(1)];
    let mut offset = None;
    let mut total = 0u64;
    loop {
        let n = read_input(r, &mut buf)?;
        if n == 0 {
            break;
        }
        let at = spool.append_bytes(&buf[..n]).map_err(Error::io)?;
        offset.get_or_insert(at);
        total += n as u64;
    }
    if total != expected {
        return Err(Error::Corrupt(format!("a member is truncated ({total} of {expected} bytes)")));
    }
    Ok(offset.unwrap_or_else(|| spool.len()))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::{Cursor, Write as _};
    use std::rc::Rc;

    use super::*;

    /// Counts the bytes a decoder reads, and cancels `cancel` once `after` bytes were read.
    struct Counting<R> {
        inner: R,
        read: Rc<Cell<u64>>,
        after: u64,
        cancel: CancelFlag,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.read.get() + n as u64);
            if self.read.get() >= self.after {
                self.cancel.cancel();
            }
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Counting<R> {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    /// 16 MiB of incompressible file data in each format.
    fn archives() -> [(SourceFormat, Vec<u8>); 3] {
        let data = noise(16 << 20);
        let mut tar = ::tar::Builder::new(Vec::new());
        let mut header = ::tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "big.bin", &data[..]).expect("tar in memory");
        let tar = tar.into_inner().expect("tar in memory");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip in memory");
        let gz = gz.finish().expect("gzip in memory");
        let mut zip = ::zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = ::zip::write::SimpleFileOptions::default()
            .compression_method(::zip::CompressionMethod::Deflated)
            .last_modified_time(::zip::DateTime::default());
        zip.start_file("big.bin", options).expect("zip in memory");
        zip.write_all(&data).expect("zip in memory");
        let zip = zip.finish().expect("zip in memory").into_inner();
        [(SourceFormat::Tar, tar), (SourceFormat::TarGz, gz), (SourceFormat::Zip, zip)]
    }

    /// Decodes `bytes` the way [`from_archive`] does (through a [`Cancellable`] reader), with a
    /// counting reader below it; returns the result and the bytes read.
    fn decode(
        format: SourceFormat,
        bytes: &[u8],
        after: u64,
        cancel: &CancelFlag,
    ) -> (Result<(), Error>, u64) {
        let limits = Limits::default();
        let read = Rc::new(Cell::new(0));
        let counting = Counting {
            inner: Cursor::new(bytes.to_vec()),
            read: Rc::clone(&read),
            after,
            cancel: cancel.clone(),
        };
        let input = Cancellable { inner: counting, cancel };
        // The namespaces `from_archive` uses (a tar.gz's first attempt: a spool).
        let upload = Spool::from_bytes(bytes.to_vec());
        let result = match format {
            SourceFormat::Tar => {
                let mut ns = memory::MemNamespace::over_upload(&limits, upload);
                tar::read(io::BufReader::with_capacity(128 * 1024, input), false, &mut ns, &limits)
            }
            SourceFormat::TarGz => {
                let mut ns = memory::MemNamespace::new(&limits, None).expect("spool");
                tar::read(input, true, &mut ns, &limits)
            }
            _ => {
                let mut ns = memory::MemNamespace::over_zip(&limits, upload.clone());
                zip::read(input, &upload, &mut ns, &limits)
            }
        };
        (result, read.get())
    }

    #[test]
    fn a_cancelled_request_reads_no_byte_of_its_archive() {
        for (format, bytes) in archives() {
            let cancel = CancelFlag::default();
            cancel.cancel();
            let (result, read) = decode(format, &bytes, u64::MAX, &cancel);
            assert!(matches!(result, Err(Error::Cancelled)), "{format:?}: {result:?}");
            assert_eq!(read, 0, "{format:?}");
        }
    }

    #[test]
    fn cancelling_a_decode_stops_it_within_a_buffer_of_input() {
        for (format, bytes) in archives() {
            let (uncancelled, read_all) = decode(format, &bytes, u64::MAX, &CancelFlag::default());
            assert!(uncancelled.is_ok(), "{format:?}: {uncancelled:?}");
            let cancel = CancelFlag::default();
            let (result, read) = decode(format, &bytes, 1 << 20, &cancel);
            assert!(matches!(result, Err(Error::Cancelled)), "{format:?}: {result:?}");
            // One buffered read past the cancelling one, at most (decoders read 128 KiB or less).
            assert!(read <= (1 << 20) + 256 * 1024, "{format:?}: read {read} of {read_all} bytes");
            assert!(read_all >= 16 << 20, "{format:?}: the whole archive is read when not cancelled");
        }
    }

    #[test]
    fn a_full_disk_is_its_own_error() {
        let full = Error::io(io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!((full.code(), full.is_input_error()), ("insufficient_storage", false));
        let other = Error::io(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(other.code(), "io_error");
    }
}
