//! The canonical zip: one byte format for one tree, on every machine, from every input kind.
//!
//! This module is pure and synchronous: it knows nothing of HTTP, S3, tokio or git. Given a
//! [`SourceTree`] it writes the zip and hashes the finished file.
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
//! | Digest | SHA-256 of the finished zip file, hashed after it is complete |
//!
//! Entries are compressed in parallel, each independently of the others, and written in order,
//! so the bytes do not depend on the number of threads.

pub mod canonical;
pub mod digest;
pub mod limits;
pub mod manifest;
pub mod tree;

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};

use zip::ZipWriter;
use zip::result::ZipError;
use zip::write::{PreparedZipFile, ZipFileBuilder};

pub use self::canonical::FORMAT_VERSION;
pub use self::digest::Sha256Hex;
pub use self::limits::Limits;
pub use self::tree::{
    Content, Entry, EntryPath, MEMORY_SPOOL_BYTES, Mode, PathError, SourceTree, Spool, SpoolWriter, TreeError,
};

use self::canonical::{Method, entry_options, method_for};

/// Uncompressed bytes that may be in flight between the compressing threads and the writer.
/// Together with one file larger than this, it bounds the packer's memory.
const IN_FLIGHT_BUDGET: u64 = 32 * 1024 * 1024;

/// Below this many bytes per extra thread, threads cost more than they save.
const BYTES_PER_THREAD: u64 = 512 * 1024;

/// Read buffer of each compressing thread.
const READ_BUFFER: usize = 128 * 1024;

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

/// A flag a caller sets to stop packaging between two entries.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`CancelFlag::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// How to run the packer. None of this changes the bytes.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Most threads that compress at once.
    pub threads: NonZeroUsize,
    /// Checked between entries.
    pub cancel: CancelFlag,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            cancel: CancelFlag::default(),
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
/// buffer in memory), then hashes the finished bytes.
///
/// The digest is computed by reading the output back after the zip is complete, never from the
/// writer's stream: a zip writer may seek back to patch headers, and the key must name the bytes
/// that are actually stored.
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub fn pack<W: Read + Write + Seek>(
    tree: &SourceTree,
    options: &PackOptions,
    out: &mut W,
) -> Result<Packed, Error> {
    if out.seek(SeekFrom::End(0)).map_err(Error::Write)? != 0 {
        return Err(Error::Write(io::Error::new(io::ErrorKind::InvalidInput, "the output is not empty")));
    }
    {
        let mut zip = ZipWriter::new(Positioned::new(BufWriter::with_capacity(256 * 1024, &mut *out)));
        write_entries(tree, options, &mut zip)?;
        let mut inner = zip.finish()?.inner;
        inner.flush().map_err(Error::Write)?;
    }
    out.seek(SeekFrom::Start(0)).map_err(Error::Write)?;
    let sha256 = Sha256Hex::of_reader(&mut *out).map_err(Error::Write)?;
    let size = out.stream_position().map_err(Error::Write)?;
    Ok(Packed { sha256, size, files: tree.entries().len() as u64 })
}

/// A buffered writer that knows its position, so the zip writer's frequent `stream_position()`
/// calls (two per entry) do not flush the buffer; real seeks still go through.
struct Positioned<W> {
    inner: W,
    pos: u64,
}

impl<W> Positioned<W> {
    /// Wraps a writer positioned at offset 0.
    fn new(inner: W) -> Self {
        Self { inner, pos: 0 }
    }
}

impl<W: Write> Write for Positioned<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Seek> Seek for Positioned<W> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        if to == SeekFrom::Current(0) {
            return Ok(self.pos);
        }
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos)
    }
}

/// Compresses entries (in parallel when it pays) and appends them to `zip` in canonical order.
fn write_entries<W: Write + Seek>(
    tree: &SourceTree,
    options: &PackOptions,
    zip: &mut ZipWriter<W>,
) -> Result<(), Error> {
    let entries = tree.entries();
    let useful = usize::try_from(tree.total_bytes() / BYTES_PER_THREAD).unwrap_or(usize::MAX);
    let threads = options.threads.get().min(entries.len()).min(useful.max(1));
    if threads <= 1 {
        let mut buf = vec![0u8; READ_BUFFER];
        for entry in entries {
            if options.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            zip.add_prepared_file(prepare(tree, entry, &mut buf)?)?;
        }
        return Ok(());
    }
    parallel::write_entries(tree, threads, &options.cancel, zip)
}

/// Compresses one entry on its own, choosing deflate or store by [`method_for`].
fn prepare(tree: &SourceTree, entry: &Entry, buf: &mut [u8]) -> Result<PreparedZipFile, Error> {
    let deflated = compress(tree, entry, Method::Deflate, buf)?;
    match method_for(deflated.uncompressed_size(), deflated.compressed_size()) {
        Method::Deflate => Ok(deflated),
        Method::Store => {
            // Free the deflated copy first: for a large incompressible file (a model, a wheel)
            // holding both would double the packer's peak memory (BENCHMARKS.md, memory).
            drop(deflated);
            compress(tree, entry, Method::Store, buf)
        }
    }
}

fn compress(
    tree: &SourceTree,
    entry: &Entry,
    method: Method,
    buf: &mut [u8],
) -> Result<PreparedZipFile, Error> {
    let read_err = |source| Error::Read { path: entry.path.clone(), source };
    let mut builder = ZipFileBuilder::new(entry.path.as_str(), entry_options(entry.mode, method))?;
    let mut reader = tree.open(entry).map_err(read_err)?;
    let mut total = 0u64;
    loop {
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
        cancel: &CancelFlag,
        zip: &mut ZipWriter<W>,
    ) -> Result<(), Error> {
        let entries = tree.entries();
        let gate = Gate {
            state: Mutex::new(GateState { next: 0, written: 0, in_flight: 0, stop: false }),
            wake: Condvar::new(),
        };
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<(usize, Result<PreparedZipFile, Error>)>();
            for _ in 0..threads {
                let tx = tx.clone();
                let gate = &gate;
                scope.spawn(move || {
                    let mut buf = vec![0u8; READ_BUFFER];
                    while let Some(i) = gate.admit(entries, cancel) {
                        let result = prepare(tree, &entries[i], &mut buf);
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
        rx: &mpsc::Receiver<(usize, Result<PreparedZipFile, Error>)>,
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
            zip.add_prepared_file(prepared)?;
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
    fn packing_refuses_an_output_that_is_not_empty() {
        let mut out = io::Cursor::new(b"stale bytes".to_vec());
        let err = pack(&tree(), &PackOptions::default(), &mut out).expect_err("must not append to old bytes");
        assert!(matches!(err, Error::Write(e) if e.kind() == io::ErrorKind::InvalidInput));
        assert_eq!(out.into_inner(), b"stale bytes", "the output is left untouched");
    }
}
