//! The canonical zip: one byte format for one tree, on every machine, from every input kind.
//!
//! This module is pure and synchronous: it knows nothing of HTTP, S3, tokio or git. Given a
//! [`SourceTree`] it writes the zip and hashes it as it is written.
//!
//! # Format v1
//!
//! | Rule | Value |
//! |---|---|
//! | Entries | regular files only; no directory entries (empty directories vanish); symlinks were materialized by `source` |
//! | Order | by the bytes of the full UTF-8 path (`B.txt` < `a-b/c` < `a.b` < `a/b`) |
//! | Paths | relative, `/`-separated, no `.`/`..`/empty components, no backslash or control characters, UTF-8 kept byte for byte (no normalization); UTF-8 flag (bit 11) set if and only if the name is not ASCII |
//! | Time | DOS 1980-01-01 00:00:00 on every entry |
//! | Mode | `0100755` if the source's owner-exec bit is set, else `0100644`; nothing else survives |
//! | Headers | no extra fields, no comments, no data descriptors; version made by = Unix; ZIP64 only when a size needs it |
//! | Compression | raw deflate, zlib-rs (pinned in `Cargo.lock`) at level [`canonical::DEFLATE_LEVEL`]; an entry is stored instead when deflate does not make it smaller |
//! | Content | never altered (no newline conversion) |
//! | Digest | SHA-256 of the zip file's bytes, in the order they are written |
//!
//! Entries are compressed in parallel, each independently of the others, and written in order,
//! so the bytes do not depend on the number of threads.
//!
//! # Hashing while writing
//!
//! The zip is written strictly front to back: every entry is compressed before its local header
//! is written (`add_prepared_file`), so the zip writer never needs to go back and patch a header.
//! The writer it is given ([`Digesting`]) proves that: it answers the zip writer's position
//! queries and refuses every other seek with an error, so a package whose bytes were patched
//! after they were hashed cannot be produced. The digest is therefore taken from the stream as
//! it is written, with no second pass over the file, and the output need not be readable (or
//! even kept: see `publish`, which keeps hashing when the disk is full). The one case that
//! would need a patch is an entry of 4 GiB or more (its ZIP64 local header); such a package
//! fails with an error, and cannot be a Lambda package anyway (250 MB unzipped).

pub mod cache;
pub mod canonical;
pub mod digest;
pub mod limits;
pub mod manifest;
mod stream;
pub mod tree;

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};

use sha2::{Digest as _, Sha256};
use zip::result::ZipError;
use zip::write::{PreparedZipFile, ZipFileBuilder};
use zip::{ZipArchive, ZipWriter};

pub use self::cache::{CacheStats, EntryCache};
pub use self::canonical::FORMAT_VERSION;
pub use self::digest::Sha256Hex;
pub use self::limits::Limits;
pub use self::tree::{
    BlobReader, BlobSource, Content, ContentReader, Contents, Entry, EntryPath, MEMORY_SPOOL_BYTES, Mode,
    PathError, SourceTree, Spool, SpoolReader, SpoolWriter, StreamSource, TreeError, TreeReader,
    is_storage_full,
};

use self::canonical::{Method, entry_options, method_for};

/// Uncompressed bytes that may be in flight between the compressing threads and the writer.
/// Together with one file larger than this, it bounds the packer's memory. A streamed tree
/// (`stream`) holds at most this many bytes of contents per window, with the same exception.
const IN_FLIGHT_BUDGET: u64 = 32 * 1024 * 1024;

/// Below this many bytes per extra thread, threads cost more than they save.
const BYTES_PER_THREAD: u64 = 512 * 1024;

/// Read buffer of each compressing thread.
const READ_BUFFER: usize = 128 * 1024;

/// With a cache, entries up to this size are read into memory once (to hash them, then to
/// compress them on a miss); larger ones are read again to be compressed. Each compressing
/// thread holds at most one such buffer.
const HOLD_BYTES: u64 = 4 * 1024 * 1024;

/// Why a package could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file's bytes could not be read.
    #[error("reading {path}")]
    Read {
        /// The entry.
        path: EntryPath,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file's size changed between listing it and packing it (directory input only).
    #[error("{path} changed while it was being packaged")]
    SourceChanged {
        /// The entry.
        path: EntryPath,
    },
    /// The zip could not be written.
    #[error("writing the zip")]
    Write(#[source] io::Error),
    /// The zip writer refused an entry.
    #[error("building the zip")]
    Zip(#[from] ZipError),
    /// The caller cancelled the work (for example, the request timed out).
    #[error("packaging was cancelled")]
    Cancelled,
}

/// A flag a caller sets to stop a request's blocking work (decoding, walking, fetching, packing)
/// at its next check.
///
/// One flag per request: the request sets it when it goes away (client gone, timeout), and a
/// flag made with [`CancelFlag::child`] also reads as cancelled once its parent is, which is how
/// a shutdown reaches every request in flight at once. Checking is one or two relaxed atomic
/// loads, cheap enough for every read of an input buffer.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag {
    own: Arc<AtomicBool>,
    parent: Option<Arc<AtomicBool>>,
}

impl CancelFlag {
    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.own.store(true, Ordering::Relaxed);
    }

    /// Whether [`CancelFlag::cancel`] was called on this flag or on its parent.
    pub fn is_cancelled(&self) -> bool {
        self.own.load(Ordering::Relaxed) || self.parent.as_ref().is_some_and(|p| p.load(Ordering::Relaxed))
    }

    /// A new flag that is cancelled by its own [`CancelFlag::cancel`] or by this flag's (one
    /// level: a child of the child does not see this flag).
    pub fn child(&self) -> Self {
        Self { own: Arc::default(), parent: Some(Arc::clone(&self.own)) }
    }
}

/// How to run the packer. None of this changes the bytes.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Most threads that compress at once.
    pub threads: NonZeroUsize,
    /// Checked before every entry and every buffer read from an entry.
    pub cancel: CancelFlag,
    /// Where compressed entries are looked up and kept ([`cache`]); `None`: every entry is
    /// deflated.
    pub cache: Option<EntryCache>,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            cancel: CancelFlag::default(),
            cache: None,
        }
    }
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// SHA-256 of the zip file.
    pub sha256: Sha256Hex,
    /// Size of the zip file in bytes.
    pub size: u64,
    /// Number of files in the zip.
    pub files: u64,
}

impl Packed {
    /// Base64 of the digest, as AWS Lambda reports it in `CodeSha256`.
    pub fn code_sha256(&self) -> String {
        self.sha256.to_base64()
    }
}

/// Writes the canonical zip of `tree` into `out`, which must be empty (a new temp file, or a
/// buffer in memory), and returns its digest, size and file count.
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub fn pack<W: Write + Seek>(tree: &SourceTree, options: &PackOptions, out: &mut W) -> Result<Packed, Error> {
    if out.seek(SeekFrom::End(0)).map_err(Error::Write)? != 0 {
        return Err(Error::Write(io::Error::new(io::ErrorKind::InvalidInput, "the output is not empty")));
    }
    pack_into(tree, options, out)
}

/// Writes the canonical zip of `tree` to `out`, front to back, hashing the bytes as they go out
/// (see the module documentation for why that digest is the digest of the file).
///
/// `out` sees only sequential writes, so it may be anything that takes bytes: a file, a buffer,
/// a pipe, a sink that keeps nothing. The digest and size are those of the bytes `out` accepted.
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub fn pack_into<W: Write>(tree: &SourceTree, options: &PackOptions, out: W) -> Result<Packed, Error> {
    pack_with_budget(tree, options, IN_FLIGHT_BUDGET, out)
}

/// [`pack_into`], with `budget` for the bytes a streamed tree's windows hold (the tests pack
/// small trees in many windows with it).
pub(crate) fn pack_with_budget<W: Write>(
    tree: &SourceTree,
    options: &PackOptions,
    budget: u64,
    out: W,
) -> Result<Packed, Error> {
    let mut zip = ZipWriter::new(Digesting::new(BufWriter::with_capacity(256 * 1024, out)));
    write_entries(tree, options, budget, &mut zip)?;
    let mut digesting = zip.finish()?;
    digesting.inner.flush().map_err(Error::Write)?;
    let sha256 = Sha256Hex::from_bytes(digesting.hasher.finalize().into());
    Ok(Packed { sha256, size: digesting.pos, files: tree.entries().len() as u64 })
}

/// The zip writer's output: hashes and counts every byte on its way to `inner`, and answers
/// position queries itself (so the zip writer's two `stream_position()` calls per entry do not
/// flush the buffer below).
///
/// It refuses every seek that would move: the output is append-only, so the current position is
/// also the end, and a seek to it is the only one that leaves the hashed stream equal to the
/// written file. A zip writer that tried to patch earlier bytes gets an error instead of a
/// digest of bytes that are not the file's.
struct Digesting<W> {
    inner: W,
    pos: u64,
    hasher: Sha256,
}

impl<W> Digesting<W> {
    /// Wraps an empty writer.
    fn new(inner: W) -> Self {
        Self { inner, pos: 0, hasher: Sha256::new() }
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Seek for Digesting<W> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match to {
            SeekFrom::Current(0) | SeekFrom::End(0) => Ok(self.pos),
            SeekFrom::Start(at) if at == self.pos => Ok(self.pos),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the canonical zip is written front to back; refused a seek to {to:?} at offset {}",
                    self.pos
                ),
            )),
        }
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos)
    }
}

/// Compresses entries (in parallel when it pays) and appends them to `zip` in canonical order.
fn write_entries<W: Write + Seek>(
    tree: &SourceTree,
    options: &PackOptions,
    stream_budget: u64,
    zip: &mut ZipWriter<W>,
) -> Result<(), Error> {
    if let Contents::Stream(stream) = tree.contents() {
        let passes = stream::write_entries(tree, stream.as_ref(), stream_budget, options, zip)?;
        tracing::info!(
            stream.reads = passes.reads,
            stream.windows = passes.windows,
            stream.largest_window_bytes = passes.largest_window,
            "packed a streamed tree in passes over its stream"
        );
        return Ok(());
    }
    let entries = tree.entries();
    let useful = usize::try_from(tree.total_bytes() / BYTES_PER_THREAD).unwrap_or(usize::MAX);
    let threads = options.threads.get().min(entries.len()).min(useful.max(1));
    if threads <= 1 {
        let mut work = Work::new(options);
        let mut reader = tree.reader();
        for entry in entries {
            if options.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            prepare(&mut reader, entry, &mut work)?.append_to(entry, zip)?;
        }
        return Ok(());
    }
    parallel::write_entries(tree, threads, options, zip)
}

/// One compressing thread's buffers and settings.
struct Work<'o> {
    buf: Vec<u8>,
    /// An entry's content, read once to be hashed ([`HOLD_BYTES`]).
    held: Vec<u8>,
    cancel: &'o CancelFlag,
    cache: Option<&'o EntryCache>,
}

impl<'o> Work<'o> {
    fn new(options: &'o PackOptions) -> Self {
        Self {
            buf: vec![0u8; READ_BUFFER],
            held: Vec::new(),
            cancel: &options.cancel,
            cache: options.cache.as_ref(),
        }
    }
}

/// An entry ready to be appended.
enum Prepared {
    /// Compressed (or stored) here.
    Built(PreparedZipFile),
    /// A one-entry zip holding the entry's compressed bytes (from the cache, or compressed here
    /// and kept in the cache), copied raw into the package.
    Raw(Vec<u8>),
}

impl Prepared {
    fn append_to<W: Write + Seek>(self, entry: &Entry, zip: &mut ZipWriter<W>) -> Result<(), Error> {
        match self {
            Self::Built(file) => zip.add_prepared_file(file)?,
            Self::Raw(bytes) => {
                let mut one = ZipArchive::new(io::Cursor::new(bytes))?;
                let file = one.by_index_raw(0)?;
                zip.raw_copy_file_rename(file, entry.path.as_str())?;
            }
        }
        Ok(())
    }
}

/// Compresses one entry on its own, choosing deflate or store by [`method_for`], through the
/// cache when there is one and the entry is not too small for it.
fn prepare(reader: &mut TreeReader<'_>, entry: &Entry, work: &mut Work<'_>) -> Result<Prepared, Error> {
    match work.cache {
        Some(cache) if cache.applies(entry.size) => prepare_cached(reader, entry, cache, work),
        _ => Ok(Prepared::Built(prepare_uncached(reader, entry, &mut work.buf, work.cancel)?)),
    }
}

/// [`prepare`] through the cache: hashes the content (SHA-256 and CRC-32), uses a valid cache
/// entry, or compresses and keeps the result.
fn prepare_cached(
    reader: &mut TreeReader<'_>,
    entry: &Entry,
    cache: &EntryCache,
    work: &mut Work<'_>,
) -> Result<Prepared, Error> {
    let cancel = work.cancel;
    let hold = entry.size <= HOLD_BYTES;
    work.held.clear();
    let content = reader.open(entry).map_err(|source| Error::Read { path: entry.path.clone(), source })?;
    let id = identify(content, entry, hold.then_some(&mut work.held), &mut work.buf, cancel)?;
    let mut buf = std::mem::take(&mut work.buf);
    let held = hold.then_some(&work.held[..]);
    let result = (|| {
        match cache.get(&id, raw::DATA_OFFSET) {
            Some(cached) if cached.method == Method::Deflate => {
                return Ok(Prepared::Raw(raw::one_entry_zip(cached.bytes, &id, entry.mode)));
            }
            Some(_) => {
                let stored =
                    compress_from(Again::open(held, reader, entry)?, entry, Method::Store, &mut buf, cancel)?;
                return Ok(Prepared::Built(check_id(stored, &id, entry)?));
            }
            None => {}
        }
        let deflated = check_id(
            compress_from(Again::open(held, reader, entry)?, entry, Method::Deflate, &mut buf, cancel)?,
            &id,
            entry,
        )?;
        if method_for(deflated.uncompressed_size(), deflated.compressed_size()) == Method::Store {
            drop(deflated);
            cache.put(&id, Method::Store, &[]);
            let stored =
                compress_from(Again::open(held, reader, entry)?, entry, Method::Store, &mut buf, cancel)?;
            return Ok(Prepared::Built(check_id(stored, &id, entry)?));
        }
        let compressed = usize::try_from(deflated.compressed_size()).unwrap_or(usize::MAX);
        let mut one = ZipWriter::new(io::Cursor::new(Vec::with_capacity(compressed + 256)));
        one.add_prepared_file(deflated)?;
        let bytes = one.finish()?.into_inner();
        cache.put(&id, Method::Deflate, raw::data_of(&bytes, compressed)?);
        Ok(Prepared::Raw(bytes))
    })();
    work.buf = buf;
    result
}

/// An entry's content read a second time: from memory, or from where it is.
enum Again<'a> {
    Held(&'a [u8]),
    Reopened(ContentReader),
}

impl<'a> Again<'a> {
    fn open(held: Option<&'a [u8]>, reader: &mut TreeReader<'_>, entry: &Entry) -> Result<Self, Error> {
        match held {
            Some(held) => Ok(Self::Held(held)),
            None => reader
                .open(entry)
                .map(Self::Reopened)
                .map_err(|source| Error::Read { path: entry.path.clone(), source }),
        }
    }
}

impl Read for Again<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Held(held) => held.read(buf),
            Self::Reopened(content) => content.read(buf),
        }
    }
}

/// Reads `content` (the bytes of `entry`) to its end, hashing it, into `held` if given.
fn identify(
    mut content: impl Read,
    entry: &Entry,
    mut held: Option<&mut Vec<u8>>,
    buf: &mut [u8],
    cancel: &CancelFlag,
) -> Result<cache::ContentId, Error> {
    let mut sha = Sha256::new();
    let mut crc = flate2::Crc::new();
    let mut total = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let n = match content.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(Error::Read { path: entry.path.clone(), source }),
        };
        total += n as u64;
        if total > entry.size {
            return Err(Error::SourceChanged { path: entry.path.clone() });
        }
        sha.update(&buf[..n]);
        crc.update(&buf[..n]);
        if let Some(held) = held.as_mut() {
            held.extend_from_slice(&buf[..n]);
        }
    }
    if total != entry.size {
        return Err(Error::SourceChanged { path: entry.path.clone() });
    }
    Ok(cache::ContentId {
        sha256: Sha256Hex::from_bytes(sha.finalize().into()),
        size: total,
        crc32: crc.sum(),
    })
}

/// A second read of a file must give the bytes that were hashed: otherwise the file changed
/// while it was being packaged, and neither reading may reach the cache or the package.
fn check_id(file: PreparedZipFile, id: &cache::ContentId, entry: &Entry) -> Result<PreparedZipFile, Error> {
    if file.crc32() != id.crc32 || file.uncompressed_size() != id.size {
        return Err(Error::SourceChanged { path: entry.path.clone() });
    }
    Ok(file)
}

/// Compresses one entry on its own, choosing deflate or store by [`method_for`].
fn prepare_uncached(
    reader: &mut TreeReader<'_>,
    entry: &Entry,
    buf: &mut [u8],
    cancel: &CancelFlag,
) -> Result<PreparedZipFile, Error> {
    let deflated = compress(reader, entry, Method::Deflate, buf, cancel)?;
    match method_for(deflated.uncompressed_size(), deflated.compressed_size()) {
        Method::Deflate => Ok(deflated),
        Method::Store => {
            // Free the deflated copy first: for a large incompressible file (a model, a wheel)
            // holding both would double the packer's peak memory (BENCHMARKS.md, memory).
            drop(deflated);
            compress(reader, entry, Method::Store, buf, cancel)
        }
    }
}

fn compress(
    reader: &mut TreeReader<'_>,
    entry: &Entry,
    method: Method,
    buf: &mut [u8],
    cancel: &CancelFlag,
) -> Result<PreparedZipFile, Error> {
    let content = reader.open(entry).map_err(|source| Error::Read { path: entry.path.clone(), source })?;
    compress_from(content, entry, method, buf, cancel)
}

/// Compresses `content`, the bytes of `entry`, with `method`.
fn compress_from(
    mut reader: impl Read,
    entry: &Entry,
    method: Method,
    buf: &mut [u8],
    cancel: &CancelFlag,
) -> Result<PreparedZipFile, Error> {
    let read_err = |source| Error::Read { path: entry.path.clone(), source };
    let mut builder = ZipFileBuilder::new(entry.path.as_str(), entry_options(entry.mode, method))?;
    let mut total = 0u64;
    loop {
        // Between two buffers too, so one large file does not outlive its request by seconds.
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        total += n as u64;
        if total > entry.size {
            return Err(Error::SourceChanged { path: entry.path.clone() });
        }
        builder.write_all(&buf[..n]).map_err(Error::Write)?;
    }
    if total != entry.size {
        return Err(Error::SourceChanged { path: entry.path.clone() });
    }
    Ok(builder.finish()?)
}

/// One-entry zips: how compressed bytes that were not compressed by this zip writer (a cache
/// entry) or that must also be kept (for the cache) reach the package.
///
/// The zip writer takes compressed bytes only from a zip it reads ([`ZipWriter::raw_copy_file_rename`]):
/// a [`PreparedZipFile`] does not give its bytes back, nor can one be made from bytes. So a
/// freshly compressed entry is written to a one-entry zip in memory (whose data is then kept in
/// the cache), and a cached entry's bytes are framed as one here; either is copied raw into the
/// package, under the entry's name. The copy writes the headers from the entry's method, sizes,
/// CRC, time, mode and name exactly as `add_prepared_file` does: the tests pack the same trees
/// with and without a cache and compare the digests.
mod raw {
    use super::{Mode, ZipError, cache::ContentId, canonical};

    const LOCAL_HEADER: usize = 30;
    /// The one-entry zip's name: the package's entry gets its real name when copied.
    const NAME: &[u8] = b"x";
    /// Where the compressed bytes start in a one-entry zip framed here.
    pub(super) const DATA_OFFSET: usize = LOCAL_HEADER + NAME.len();

    /// DOS date of 1980-01-01 ([`canonical::FIXED_TIMESTAMP`]); the time is 00:00:00.
    const DOS_DATE: u16 = (1 << 5) | 1;

    /// Frames `bytes` (the compressed bytes after [`DATA_OFFSET`] zero bytes) as a one-entry
    /// zip of a deflated file with `id`'s CRC and length and `mode`.
    pub(super) fn one_entry_zip(mut bytes: Vec<u8>, id: &ContentId, mode: Mode) -> Vec<u8> {
        debug_assert_eq!(canonical::FIXED_TIMESTAMP.datepart(), DOS_DATE);
        let compressed = (bytes.len() - DATA_OFFSET) as u32;
        // Sizes fit: the cache takes entries under 4 GiB only.
        let size = id.size as u32;
        let mut local = Vec::with_capacity(DATA_OFFSET);
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&20u16.to_le_bytes()); // version needed: deflate
        local.extend_from_slice(&0u16.to_le_bytes()); // flags
        local.extend_from_slice(&8u16.to_le_bytes()); // deflate
        local.extend_from_slice(&0u16.to_le_bytes()); // time
        local.extend_from_slice(&DOS_DATE.to_le_bytes());
        local.extend_from_slice(&id.crc32.to_le_bytes());
        local.extend_from_slice(&compressed.to_le_bytes());
        local.extend_from_slice(&size.to_le_bytes());
        local.extend_from_slice(&(NAME.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes()); // extra
        local.extend_from_slice(NAME);
        bytes[..DATA_OFFSET].copy_from_slice(&local);
        let central_at = bytes.len() as u32;
        let mut central = Vec::with_capacity(46 + NAME.len() + 22);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes()); // made by: Unix
        central.extend_from_slice(&local[4..30]);
        central.extend_from_slice(&0u16.to_le_bytes()); // comment
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&(mode.unix_mode() << 16).to_le_bytes());
        central.extend_from_slice(&0u32.to_le_bytes()); // local header offset
        central.extend_from_slice(NAME);
        let central_len = central.len() as u32;
        central.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        central.extend_from_slice(&[0; 4]); // disks
        central.extend_from_slice(&1u16.to_le_bytes());
        central.extend_from_slice(&1u16.to_le_bytes());
        central.extend_from_slice(&central_len.to_le_bytes());
        central.extend_from_slice(&central_at.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes()); // comment
        bytes.extend_from_slice(&central);
        bytes
    }

    /// The `compressed` bytes of the entry of a one-entry zip written by the zip writer.
    pub(super) fn data_of(zip: &[u8], compressed: usize) -> Result<&[u8], ZipError> {
        let u16_at = |at: usize| zip.get(at..at + 2).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])));
        let start = match (u16_at(26), u16_at(28)) {
            (Some(name), Some(extra)) => LOCAL_HEADER + name + extra,
            _ => return Err(ZipError::InvalidArchive("a one-entry zip without a local header".into())),
        };
        zip.get(start..start + compressed)
            .ok_or_else(|| ZipError::InvalidArchive("a one-entry zip shorter than its entry".into()))
    }
}

/// The parallel pipeline: N threads compress entries, the calling thread writes them in order.
mod parallel {
    use super::*;

    /// Admission of entries into the pipeline, strictly in index order, so that the entry the
    /// writer waits for is always admitted (no deadlock). The budget bounds the entries *behind*
    /// the one the writer waits for: memory stays within the budget plus one file, and a large
    /// file being compressed does not stop the other threads from working on the next ones.
    struct Gate {
        state: Mutex<GateState>,
        wake: Condvar,
    }

    struct GateState {
        /// Entries admitted so far (the next one to admit).
        next: usize,
        /// Entries written so far (the one the writer waits for).
        written: usize,
        /// Uncompressed bytes of admitted, unwritten entries.
        in_flight: u64,
        stop: bool,
    }

    impl Gate {
        /// Takes the next entry once the budget allows it; `None` when there is nothing left.
        fn admit(&self, entries: &[Entry], cancel: &CancelFlag) -> Option<usize> {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if s.stop || s.next >= entries.len() || cancel.is_cancelled() {
                    return None;
                }
                let cost = entries[s.next].size;
                let behind_writer =
                    if s.next > s.written { s.in_flight - entries[s.written].size } else { 0 };
                if s.next == s.written || behind_writer.saturating_add(cost) <= IN_FLIGHT_BUDGET {
                    s.in_flight += cost;
                    s.next += 1;
                    return Some(s.next - 1);
                }
                s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        }

        /// The writer has written the entry it was waiting for.
        fn release(&self, cost: u64) {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.in_flight -= cost;
            s.written += 1;
            self.wake.notify_all();
        }

        fn stop(&self) {
            self.state.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
            self.wake.notify_all();
        }
    }

    pub(super) fn write_entries<W: Write + Seek>(
        tree: &SourceTree,
        threads: usize,
        options: &PackOptions,
        zip: &mut ZipWriter<W>,
    ) -> Result<(), Error> {
        let cancel = &options.cancel;
        let entries = tree.entries();
        let gate = Gate {
            state: Mutex::new(GateState { next: 0, written: 0, in_flight: 0, stop: false }),
            wake: Condvar::new(),
        };
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<(usize, Result<Prepared, Error>)>();
            for _ in 0..threads {
                let tx = tx.clone();
                let gate = &gate;
                scope.spawn(move || {
                    let mut work = Work::new(options);
                    let mut reader = tree.reader();
                    while let Some(i) = gate.admit(entries, cancel) {
                        let result = prepare(&mut reader, &entries[i], &mut work);
                        if tx.send((i, result)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let result = write_in_order(entries, &gate, &rx, cancel, zip);
            if result.is_err() {
                gate.stop();
            }
            result
        })
    }

    fn write_in_order<W: Write + Seek>(
        entries: &[Entry],
        gate: &Gate,
        rx: &mpsc::Receiver<(usize, Result<Prepared, Error>)>,
        cancel: &CancelFlag,
        zip: &mut ZipWriter<W>,
    ) -> Result<(), Error> {
        let mut ready = BTreeMap::new();
        for (expected, entry) in entries.iter().enumerate() {
            let prepared = loop {
                if let Some(p) = ready.remove(&expected) {
                    break p;
                }
                // All senders gone before every entry arrived means the work was cancelled.
                let (i, result) = rx.recv().map_err(|_| Error::Cancelled)?;
                ready.insert(i, result?);
            };
            prepared.append_to(entry, zip)?;
            gate.release(entry.size);
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> SourceTree {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        SourceTree::from_memory([
            ("a.py", Mode::Regular, &b"print('hello')\n".repeat(100)[..]),
            ("bin/run", Mode::Executable, b"#!/bin/sh\nexec python3 a.py\n"),
            ("empty", Mode::Regular, b""),
            ("noise.bin", Mode::Regular, &big[..]),
        ])
        .expect("valid tree")
    }

    #[test]
    fn packing_into_memory_or_into_a_file_gives_the_same_bytes() {
        let tree = tree();
        let mut memory = io::Cursor::new(Vec::new());
        let in_memory = pack(&tree, &PackOptions::default(), &mut memory).expect("packs into memory");
        let mut file = tempfile::tempfile().expect("temp file");
        let in_file = pack(&tree, &PackOptions::default(), &mut file).expect("packs into a file");
        let mut file_bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).expect("rewind");
        file.read_to_end(&mut file_bytes).expect("read back");
        assert_eq!(in_memory, in_file);
        assert_eq!(memory.into_inner(), file_bytes);
        assert_eq!(in_file.sha256, Sha256Hex::of_bytes(&file_bytes));
    }

    #[test]
    fn the_digest_taken_while_writing_is_the_digest_of_the_written_bytes() {
        // A plain Vec cannot seek: whatever the zip writer did, it did front to back.
        let mut streamed = Vec::new();
        let packed = pack_into(&tree(), &PackOptions::default(), &mut streamed).expect("packs into a Vec");
        assert_eq!(packed.sha256, Sha256Hex::of_bytes(&streamed));
        assert_eq!(packed.size, streamed.len() as u64);
        let mut file = tempfile::tempfile().expect("temp file");
        assert_eq!(pack(&tree(), &PackOptions::default(), &mut file).expect("packs into a file"), packed);
        let mut back = Vec::new();
        file.seek(SeekFrom::Start(0)).expect("rewind");
        file.read_to_end(&mut back).expect("read back");
        assert_eq!(back, streamed, "a seekable output gets the very same bytes");
    }

    #[test]
    fn the_digesting_writer_refuses_every_seek_that_would_move() {
        let mut w = Digesting::new(Vec::new());
        w.write_all(b"0123456789").expect("write");
        // The position, the end (the output is append-only) and here: the seeks that do not move.
        for to in [SeekFrom::Current(0), SeekFrom::End(0), SeekFrom::Start(10)] {
            assert_eq!(w.seek(to).expect("a seek that does not move"), 10, "{to:?}");
        }
        for to in [SeekFrom::Start(4), SeekFrom::Current(-1), SeekFrom::End(-2), SeekFrom::Start(11)] {
            let e = w.seek(to).expect_err("a moving seek");
            assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{to:?}");
        }
        assert_eq!(w.pos, 10);
        assert_eq!(Sha256Hex::from_bytes(w.hasher.finalize().into()), Sha256Hex::of_bytes(b"0123456789"));
    }

    #[test]
    fn a_child_flag_is_cancelled_by_its_parent_but_not_the_other_way() {
        let parent = CancelFlag::default();
        let (a, b) = (parent.child(), parent.child());
        a.cancel();
        assert!(a.is_cancelled() && !b.is_cancelled() && !parent.is_cancelled());
        parent.cancel();
        assert!(b.is_cancelled());
    }

    #[test]
    fn a_cancelled_pack_stops_before_writing_an_entry() {
        let options = PackOptions { cancel: CancelFlag::default(), ..PackOptions::default() };
        options.cancel.cancel();
        let mut out = Vec::new();
        assert!(matches!(pack_into(&tree(), &options, &mut out), Err(Error::Cancelled)));
        // (The abandoned zip writer still writes an empty directory when dropped.)
        assert!(!out.windows(4).any(|w| w == b"PK\x03\x04"), "no entry reached the output");
    }

    fn cached(cache: &EntryCache, threads: usize) -> PackOptions {
        PackOptions {
            threads: NonZeroUsize::new(threads).expect("nonzero"),
            cancel: CancelFlag::default(),
            cache: Some(cache.clone()),
        }
    }

    fn packed_bytes(tree: &SourceTree, options: &PackOptions) -> Vec<u8> {
        let mut out = Vec::new();
        let packed = pack_into(tree, options, &mut out).expect("packs");
        assert_eq!(packed.sha256, Sha256Hex::of_bytes(&out));
        out
    }

    /// Contents the cache takes (4 KiB and more: text, noise, runs) and contents it skips.
    fn content() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            (4096usize..40_000).prop_map(|n| b"def f(x):\n    return x + 1\n".repeat(n / 26 + 1)),
            (4096usize..20_000, any::<u64>()).prop_map(|(n, seed)| noise(n, seed)),
            (4096usize..9000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        ]
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn tree_of(files: &[(String, Vec<u8>, bool)]) -> SourceTree {
        SourceTree::from_memory(
            files
                .iter()
                .map(|(p, c, x)| (p.as_str(), if *x { Mode::Executable } else { Mode::Regular }, &c[..])),
        )
        .expect("valid tree")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Cold, warm and partly warm caches (some entries cached by an earlier pack of another
        /// tree), on one thread or several: the bytes are those of a pack without the cache.
        #[test]
        fn a_cache_never_changes_the_bytes(
            files in proptest::collection::btree_map("[a-c]{1,3}(/[a-c]{1,2})?\\.py", (content(), proptest::bool::ANY), 1..10),
            keep in proptest::collection::vec(proptest::bool::ANY, 10),
            threads in 1usize..4,
        ) {
            let files: Vec<(String, Vec<u8>, bool)> = files.into_iter().map(|(p, (c, x))| (p, c, x)).collect();
            let Ok(tree) = SourceTree::from_memory(
                files.iter().map(|(p, c, x)| (p.as_str(), if *x { Mode::Executable } else { Mode::Regular }, &c[..])),
            ) else { return Ok(()) };
            let plain = packed_bytes(&tree, &PackOptions { threads: NonZeroUsize::new(threads).expect("nonzero"), ..PackOptions::default() });
            let dir = tempfile::tempdir().expect("temp dir");
            let cache = EntryCache::open(dir.path(), cache::DEFAULT_MAX_BYTES).expect("cache");
            // Partly warm: a tree of some of the same contents under other names and modes.
            let some: Vec<(String, Vec<u8>, bool)> = files.iter().zip(&keep).filter(|(_, k)| **k)
                .enumerate().map(|(i, ((_, c, x), _))| (format!("other{i}"), c.clone(), !x)).collect();
            if !some.is_empty() {
                packed_bytes(&tree_of(&some), &cached(&cache, 1));
            }
            let before = cache.stats();
            proptest::prop_assert_eq!(&packed_bytes(&tree, &cached(&cache, threads)), &plain, "partly warm");
            let after = cache.stats();
            let cacheable = files.iter().filter(|(_, c, _)| cache.applies(c.len() as u64)).count() as u64;
            proptest::prop_assert_eq!(after.hits + after.misses - before.hits - before.misses, cacheable);
            proptest::prop_assert_eq!(&packed_bytes(&tree, &cached(&cache, threads)), &plain, "warm");
            proptest::prop_assert_eq!(cache.stats().hits - after.hits, cacheable, "a warm pack hits every entry it can");
        }
    }

    #[test]
    fn a_cached_entry_is_copied_with_its_own_name_mode_and_method() {
        let text = b"import os\n".repeat(2000);
        let tree = SourceTree::from_memory([
            ("caf\u{e9}/a.py", Mode::Executable, &text[..]),
            ("noise", Mode::Regular, &noise(10_000, 7)[..]),
            ("tiny", Mode::Regular, b"x"),
        ])
        .expect("valid tree");
        let plain = packed_bytes(&tree, &PackOptions::default());
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = EntryCache::open(dir.path(), cache::DEFAULT_MAX_BYTES).expect("cache");
        assert_eq!(packed_bytes(&tree, &cached(&cache, 1)), plain, "cold");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.writes), (0, 2, 2), "the tiny file skips the cache");
        assert_eq!(packed_bytes(&tree, &cached(&cache, 2)), plain, "warm");
        assert_eq!(cache.stats().hits, 2);
        assert_eq!(cache.stats().hit_bytes, 20_000 + 10_000);
    }

    /// A blob source whose object changes after its first read (same size, one byte differs).
    #[derive(Debug)]
    struct Changing {
        bytes: Vec<u8>,
        opened: std::sync::atomic::AtomicUsize,
    }

    impl BlobSource for Changing {
        fn reader(&self) -> io::Result<Box<dyn BlobReader + '_>> {
            Ok(Box::new(self))
        }
    }

    impl BlobReader for &Changing {
        fn open(&mut self, _id: u64, _size: u64) -> io::Result<Box<dyn Read>> {
            let mut bytes = self.bytes.clone();
            if self.opened.fetch_add(1, Ordering::Relaxed) > 0 {
                bytes[5] ^= 1;
            }
            Ok(Box::new(io::Cursor::new(bytes)))
        }
    }

    #[test]
    fn a_file_that_changes_between_its_two_reads_fails_and_reaches_neither_cache_nor_package() {
        // Larger than HOLD_BYTES: hashed on a first read, compressed on a second.
        let bytes = b"0123456789abcdef".repeat(300_000);
        let source = Changing { bytes: bytes.clone(), opened: Default::default() };
        let entry = Entry {
            path: EntryPath::new("big").expect("path"),
            mode: Mode::Regular,
            size: bytes.len() as u64,
            content: Content::Blob { id: 0 },
        };
        let tree = SourceTree::new(vec![entry], Contents::Blobs(Arc::new(source))).expect("tree");
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = EntryCache::open(dir.path(), cache::DEFAULT_MAX_BYTES).expect("cache");
        let err = pack_into(&tree, &cached(&cache, 1), io::sink()).expect_err("the content changed");
        assert!(matches!(err, Error::SourceChanged { .. }), "{err:?}");
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.writes), (1, 0), "nothing reached the cache");
        assert!(!cache.entry_path(&Sha256Hex::of_bytes(&bytes)).exists());
    }

    #[test]
    fn packing_refuses_an_output_that_is_not_empty() {
        let mut out = io::Cursor::new(b"stale bytes".to_vec());
        let err = pack(&tree(), &PackOptions::default(), &mut out).expect_err("must not append to old bytes");
        assert!(matches!(err, Error::Write(e) if e.kind() == io::ErrorKind::InvalidInput));
        assert_eq!(out.into_inner(), b"stale bytes", "the output is left untouched");
    }
}
