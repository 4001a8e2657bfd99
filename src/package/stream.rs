//! Packing a tree whose contents are one stream that can only be read from its start: the tar
//! inside a tar.gz, when there was no disk to spool it to ([`Contents::Stream`]).
//!
//! The zip wants its entries in path order; the stream has them in its own order, and the only
//! way to a byte of it is to decompress everything before it. So the stream is read several
//! times, each time from its start, and nothing is written anywhere but to the zip:
//!
//! 1. **Plan.** Consecutive entries in zip order are grouped into windows whose contents add up
//!    to at most the budget (the parallel packer's in-flight budget, 32 MiB). A file larger than
//!    the budget is a window of its own.
//! 2. **Read.** One pass per window decompresses the stream up to the last range the window
//!    needs and copies the window's ranges (each once, however many entries share it: hard
//!    links, copies of linked files) into one buffer, allocated once at its final size.
//! 3. **Pack.** The window is then an ordinary tree over that buffer ([`Contents::Spool`]), and
//!    the ordinary packer compresses and appends it: same code, same bytes. It runs on the
//!    calling thread (`pack.threads` does not apply here), because the window takes the place of
//!    the parallel packer's in-flight budget: on one thread the packer holds nothing but the
//!    entry it compresses. The buffer is dropped before the next pass.
//!
//! A file larger than the budget is not buffered: it is compressed straight from the stream, and
//! when deflate does not make it smaller (the store rule), read once more to be stored. It then
//! costs what it costs the ordinary packer, one compressed copy.
//!
//! Every range read is checked against the CRC-32 the decoder computed when it read the same
//! bytes, so a stream that gave other bytes on a later pass is an error, never another zip.
//!
//! The cost is one read of the stream per window (plus one per large stored file) besides the
//! decoder's, and every byte is deflated once, as always, on one thread. Memory: one window's
//! contents (at most the budget) and one entry being compressed, or one large file's compressed
//! copy: the ordinary packer's bound (its budget plus one file). Holding the windows' entries
//! *compressed* instead, in the stream's order until their turn, would need fewer passes for
//! compressible trees, but measured (`scripts/bench-memory`, tar.gz-full) it left the allocator's
//! heap fragmented by thousands of small long-lived buffers between short-lived deflate states:
//! 50 MiB of peak RSS for a 10 MB tree, 200 MiB for 250 MB, against the goal of 64 MiB plus the
//! largest file. One buffer per window keeps the allocation pattern of the ordinary packer.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, Write};
use std::num::NonZeroUsize;

use flate2::Crc;
use zip::ZipWriter;
use zip::write::PreparedZipFile;

use super::canonical::{Method, method_for};
use super::{
    CancelFlag, Content, Contents, Entry, Error, PackOptions, READ_BUFFER, SourceTree, Spool, StreamSource,
    compress_from,
};

/// The bytes of one or more entries: `size` bytes at `offset` of the stream.
#[derive(Debug)]
struct Range {
    offset: u64,
    size: u64,
    /// CRC-32 of the bytes, as the decoder read them.
    crc32: u32,
    /// Indices of the tree's entries on this range, ascending.
    entries: Vec<usize>,
}

/// How a streamed pack went: what the tests check the design against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Passes {
    /// Times the stream was opened (read from its start).
    pub(super) reads: u64,
    /// Windows the entries were packed in.
    pub(super) windows: u64,
    /// Most bytes of contents one window buffered (0 when every window was one large file).
    pub(super) largest_window: u64,
}

/// Compresses the entries of `tree`, all [`Content::Streamed`] from `stream`, and appends them
/// to `zip` in canonical order, buffering at most `budget` bytes of contents at once (or none,
/// for a file larger than that).
pub(super) fn write_entries<W: Write + Seek>(
    tree: &SourceTree,
    stream: &dyn StreamSource,
    budget: u64,
    options: &PackOptions,
    zip: &mut ZipWriter<W>,
) -> Result<Passes, Error> {
    let cancel = &options.cancel;
    let entries = tree.entries();
    let (ranges, range_of) = ranges(entries)?;
    let source = Passing { stream, entries, ranges: &ranges, cancel };
    let mut passes = Passes { reads: 0, windows: 0, largest_window: 0 };
    let mut buf = vec![0u8; READ_BUFFER];
    // Each window's ranges, each once, in stream order (none for a large file's window).
    let plan: Vec<(std::ops::Range<usize>, Vec<usize>)> = windows(entries, budget)
        .into_iter()
        .map(|window| {
            if window.len() == 1 && entries[window.start].size > budget {
                return (window, Vec::new());
            }
            let mut wanted: Vec<usize> = window.clone().map(|i| range_of[i]).collect();
            wanted.sort_unstable();
            wanted.dedup();
            (window, wanted)
        })
        .collect();
    let size = |wanted: &[usize]| wanted.iter().map(|&r| ranges[r].size).sum::<u64>();
    passes.largest_window = plan.iter().map(|(_, wanted)| size(wanted)).max().unwrap_or(0);
    // One buffer for every window, allocated once: allocating and freeing one per window lets
    // glibc's malloc keep up to 64 MiB of freed heap (its mmap threshold rises to the size of a
    // freed large block), measured at 100 MiB of peak RSS instead of 58 MiB for a 250 MB tree.
    let mut contents = Vec::with_capacity(usize::try_from(passes.largest_window).unwrap_or(0));
    for (window, wanted) in plan {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        passes.windows += 1;
        if wanted.is_empty() {
            // A file larger than the budget, alone in its window.
            let i = window.start;
            passes.reads += write_large(&source, i, range_of[i], &mut buf, zip)?;
            continue;
        }
        contents.clear();
        let mut at = BTreeMap::new();
        passes.reads += source.pass(&wanted, &mut buf, |r, data, buf| {
            at.insert(r, contents.len() as u64);
            let crc = feed(data, &mut contents, buf, cancel, &entries[ranges[r].entries[0]])?;
            check_crc(&ranges[r], crc, &entries[ranges[r].entries[0]])
        })?;
        let window_entries = window
            .clone()
            .map(|i| Entry { content: Content::Spooled { offset: at[&range_of[i]] }, ..entries[i].clone() })
            .collect();
        let spool = Spool::from_bytes(std::mem::take(&mut contents));
        let window_tree = SourceTree::new(window_entries, Contents::Spool(spool))
            .map_err(|e| Error::Write(io::Error::other(e)))?;
        // One thread: the window already takes the place of the in-flight budget, and the
        // ordinary packer on one thread holds nothing but the entry it compresses.
        let sequential =
            PackOptions { threads: NonZeroUsize::MIN, cancel: cancel.clone(), cache: options.cache.clone() };
        super::write_entries(&window_tree, &sequential, budget, zip)?;
        if let Contents::Spool(spool) = window_tree.into_contents() {
            contents = spool.into_bytes().unwrap_or_default();
        }
    }
    Ok(passes)
}

/// Compresses entry `i` (on range `r`), a file larger than the budget, straight from the
/// stream, and reads it once more to store it when deflate does not make it smaller. Returns the
/// reads of the stream.
fn write_large<W: Write + Seek>(
    source: &Passing<'_>,
    i: usize,
    r: usize,
    buf: &mut [u8],
    zip: &mut ZipWriter<W>,
) -> Result<u64, Error> {
    let (entry, cancel) = (&source.entries[i], source.cancel);
    let compress = |method, buf: &mut [u8]| -> Result<(u64, PreparedZipFile), Error> {
        let mut file = None;
        let reads = source.pass(&[r], buf, |_, data, buf| {
            file = Some(compress_from(data, entry, method, buf, cancel)?);
            Ok(())
        })?;
        let file =
            file.ok_or_else(|| Error::Write(io::Error::other("a range of the stream was not read")))?;
        Ok((reads, file))
    };
    let (mut reads, mut file) = compress(Method::Deflate, buf)?;
    if method_for(file.uncompressed_size(), file.compressed_size()) == Method::Store {
        // Freed first, as the ordinary packer does: a large incompressible file is held once.
        drop(file);
        let (again, stored) = compress(Method::Store, buf)?;
        (reads, file) = (reads + again, stored);
    }
    check_crc(&source.ranges[r], file.crc32(), entry)?;
    zip.add_prepared_file(file)?;
    Ok(reads)
}

/// The tree's ranges in stream order, and the range of each entry.
fn ranges(entries: &[Entry]) -> Result<(Vec<Range>, Vec<usize>), Error> {
    let mut by_offset: BTreeMap<u64, Range> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let Content::Streamed { offset, crc32 } = entry.content else {
            return Err(Error::Read {
                path: entry.path.clone(),
                source: io::Error::other("an entry of a streamed tree that is not in the stream"),
            });
        };
        let range =
            by_offset.entry(offset).or_insert(Range { offset, size: entry.size, crc32, entries: Vec::new() });
        if range.size != entry.size || range.crc32 != crc32 {
            return Err(Error::Read {
                path: entry.path.clone(),
                source: io::Error::other("two entries with different bytes at one offset of the stream"),
            });
        }
        range.entries.push(i);
    }
    let ranges: Vec<Range> = by_offset.into_values().collect();
    for pair in ranges.windows(2) {
        if pair[0].offset + pair[0].size > pair[1].offset {
            return Err(Error::Read {
                path: entries[pair[1].entries[0]].path.clone(),
                source: io::Error::other("two ranges of the stream overlap"),
            });
        }
    }
    let mut range_of = vec![0; entries.len()];
    for (r, range) in ranges.iter().enumerate() {
        for &i in &range.entries {
            range_of[i] = r;
        }
    }
    Ok((ranges, range_of))
}

/// Consecutive runs of the entries whose sizes add up to at most `budget`; a run whose first
/// entry alone is larger holds only that entry.
fn windows(entries: &[Entry], budget: u64) -> Vec<std::ops::Range<usize>> {
    let mut windows = Vec::new();
    let (mut start, mut held) = (0, 0u64);
    for (i, entry) in entries.iter().enumerate() {
        if i > start && held.saturating_add(entry.size) > budget {
            windows.push(start..i);
            (start, held) = (i, 0);
        }
        held = held.saturating_add(entry.size);
    }
    if start < entries.len() {
        windows.push(start..entries.len());
    }
    windows
}

fn check_crc(range: &Range, crc32: u32, entry: &Entry) -> Result<(), Error> {
    if crc32 != range.crc32 {
        return Err(Error::Read {
            path: entry.path.clone(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                "the stream gave other bytes than the decoder read",
            ),
        });
    }
    Ok(())
}

/// A streamed tree's stream, entries and ranges, read in passes.
struct Passing<'a> {
    stream: &'a dyn StreamSource,
    entries: &'a [Entry],
    ranges: &'a [Range],
    cancel: &'a CancelFlag,
}

impl Passing<'_> {
    /// Reads the stream once, from its start, up to the end of the last of `wanted` (range
    /// indices, ascending): skips to each of them and hands `visit` a reader of exactly its
    /// bytes (which `visit` must read to the end). Returns how many times the stream was opened
    /// (0 when every wanted range is empty).
    fn pass(
        &self,
        wanted: &[usize],
        buf: &mut [u8],
        mut visit: impl FnMut(usize, &mut dyn Read, &mut [u8]) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let cancel = self.cancel;
        let mut input: Option<(Box<dyn Read + '_>, u64)> = None;
        for &r in wanted {
            let range = &self.ranges[r];
            let first = &self.entries[range.entries[0]];
            let read_err = |source: io::Error| {
                if cancel.is_cancelled() {
                    Error::Cancelled
                } else {
                    Error::Read { path: first.path.clone(), source }
                }
            };
            if range.size == 0 {
                visit(r, &mut io::empty(), buf)?;
                continue;
            }
            let (reader, pos) = match &mut input {
                Some(open) => open,
                None => input.insert((self.stream.open().map_err(read_err)?, 0)),
            };
            while *pos < range.offset {
                if cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                let want = buf.len().min(usize::try_from(range.offset - *pos).unwrap_or(usize::MAX));
                match reader.read(&mut buf[..want]) {
                    Ok(0) => return Err(read_err(io::ErrorKind::UnexpectedEof.into())),
                    Ok(n) => *pos += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(read_err(e)),
                }
            }
            let mut data = Exactly { inner: reader, left: range.size };
            visit(r, &mut data, buf).map_err(|e| match e {
                Error::Read { .. } if cancel.is_cancelled() => Error::Cancelled,
                other => other,
            })?;
            if data.left != 0 {
                return Err(Error::Write(io::Error::other("a range of the stream was not read to its end")));
            }
            *pos += range.size;
        }
        Ok(u64::from(input.is_some()))
    }
}

/// Exactly `left` bytes of the stream: ends there, and fails if the stream ends first.
struct Exactly<'a, R: ?Sized> {
    inner: &'a mut R,
    left: u64,
}

impl<R: Read + ?Sized> Read for Exactly<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ends inside a file"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Appends all of `data` to `out`, checking `cancel` before every buffer; returns its CRC-32.
fn feed(
    data: &mut dyn Read,
    out: &mut Vec<u8>,
    buf: &mut [u8],
    cancel: &CancelFlag,
    entry: &Entry,
) -> Result<u32, Error> {
    let mut crc = Crc::new();
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let n = match data.read(buf) {
            Ok(0) => return Ok(crc.sum()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(Error::Read { path: entry.path.clone(), source }),
        };
        crc.update(&buf[..n]);
        out.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use proptest::prelude::*;

    use super::*;
    use crate::package::{Contents, EntryPath, Mode, PackOptions, Sha256Hex, pack_into, pack_with_budget};

    /// A stream in memory: `bytes`, opened afresh every time. It counts its opens and the bytes
    /// read, cancels `cancel` once `cancel_after` bytes were read in all, and gives other bytes
    /// from its `change_on`th open on (1-based; 0: never).
    #[derive(Debug)]
    struct MemStream {
        bytes: Vec<u8>,
        opens: AtomicU64,
        read: Mutex<u64>,
        cancel: CancelFlag,
        cancel_after: u64,
        change_on: u64,
    }

    impl MemStream {
        fn new(bytes: Vec<u8>) -> Self {
            Self {
                bytes,
                opens: AtomicU64::new(0),
                read: Mutex::new(0),
                cancel: CancelFlag::default(),
                cancel_after: u64::MAX,
                change_on: 0,
            }
        }
    }

    struct MemReader<'a> {
        stream: &'a MemStream,
        pos: usize,
        flip: bool,
    }

    impl Read for MemReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.stream.bytes.len() - self.pos).min(4096);
            buf[..n].copy_from_slice(&self.stream.bytes[self.pos..self.pos + n]);
            if self.flip && n > 0 {
                buf[0] ^= 0xff;
            }
            self.pos += n;
            let mut read = self.stream.read.lock().expect("lock");
            *read += n as u64;
            if *read >= self.stream.cancel_after {
                self.stream.cancel.cancel();
            }
            Ok(n)
        }
    }

    impl StreamSource for MemStream {
        fn open(&self) -> io::Result<Box<dyn Read + '_>> {
            let opens = self.opens.fetch_add(1, Ordering::Relaxed) + 1;
            let flip = self.change_on != 0 && opens >= self.change_on;
            Ok(Box::new(MemReader { stream: self, pos: 0, flip }))
        }
    }

    /// A file of a test tree: path, mode, bytes.
    type File = (String, Mode, Vec<u8>);

    /// The stream of `files` in `order`, with 37 bytes of junk before each (as tar headers
    /// would be) and zero padding at the end; and each file's offset in it.
    fn layout(files: &[File], order: &[usize]) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        let mut offsets = vec![0; files.len()];
        for &i in order {
            bytes.extend_from_slice(&[0xa5; 37]);
            offsets[i] = bytes.len() as u64;
            bytes.extend_from_slice(&files[i].2);
        }
        bytes.extend_from_slice(&[0u8; 1024]);
        (bytes, offsets)
    }

    /// `files` at `offsets` of `stream` as a streamed tree, plus `links` (a path, and the file
    /// whose bytes it shares, as a hard link does); and the same tree from memory.
    fn streamed(
        files: &[File],
        offsets: &[u64],
        links: &[(String, usize)],
        stream: MemStream,
    ) -> (SourceTree, SourceTree, Arc<MemStream>) {
        let stream = Arc::new(stream);
        let entry = |path: &str, mode: Mode, i: usize| Entry {
            path: EntryPath::new(path).expect("a valid path"),
            mode,
            size: files[i].2.len() as u64,
            content: Content::Streamed { offset: offsets[i], crc32: crc32(&files[i].2) },
        };
        let mut entries: Vec<Entry> =
            files.iter().enumerate().map(|(i, (p, m, _))| entry(p, *m, i)).collect();
        entries.extend(links.iter().map(|(p, i)| entry(p, files[*i].1, *i)));
        let tree = SourceTree::new(entries, Contents::Stream(Arc::clone(&stream) as Arc<dyn StreamSource>))
            .expect("a valid tree");
        let mut memory: Vec<(&str, Mode, &[u8])> =
            files.iter().map(|(p, m, b)| (p.as_str(), *m, &b[..])).collect();
        memory.extend(links.iter().map(|(p, i)| (p.as_str(), files[*i].1, &files[*i].2[..])));
        (tree, SourceTree::from_memory(memory).expect("a valid tree"), stream)
    }

    fn trees(
        files: &[File],
        order: &[usize],
        links: &[(String, usize)],
    ) -> (SourceTree, SourceTree, Arc<MemStream>) {
        let (bytes, offsets) = layout(files, order);
        streamed(files, &offsets, links, MemStream::new(bytes))
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = Crc::new();
        crc.update(bytes);
        crc.sum()
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    /// Text, noise, an empty file, a big text file and two hard links, in a stream order that is
    /// not the zip's.
    fn mixed_parts() -> (Vec<File>, Vec<usize>, Vec<(String, usize)>) {
        let files: Vec<File> = vec![
            ("z/last.py".into(), Mode::Regular, b"print('z')\n".repeat(3000)),
            ("a/noise.bin".into(), Mode::Regular, noise(300_000, 7)),
            ("empty".into(), Mode::Regular, Vec::new()),
            ("bin/run".into(), Mode::Executable, b"#!/bin/sh\nexec true\n".to_vec()),
            ("m/big.txt".into(), Mode::Regular, b"lorem ipsum dolor sit amet ".repeat(40_000)),
            ("b.py".into(), Mode::Regular, noise(5000, 3)),
        ];
        (files, vec![4, 0, 2, 5, 1, 3], vec![("hard/link.py".into(), 0), ("c/also-noise".into(), 1)])
    }

    fn mixed() -> (SourceTree, SourceTree, Arc<MemStream>) {
        let (files, order, links) = mixed_parts();
        trees(&files, &order, &links)
    }

    fn pack_streamed(
        tree: &SourceTree,
        budget: u64,
        cancel: &CancelFlag,
    ) -> Result<(Vec<u8>, Passes), Error> {
        let Contents::Stream(stream) = tree.contents() else { panic!("a streamed tree") };
        let mut zip = ZipWriter::new(io::Cursor::new(Vec::new()));
        let options = PackOptions { cancel: cancel.clone(), ..PackOptions::default() };
        let passes = write_entries(tree, stream.as_ref(), budget, &options, &mut zip)?;
        Ok((zip.finish().expect("finishes").into_inner(), passes))
    }

    /// Entries of a zip that are stored although they are not empty.
    fn stored_files(zip: &[u8]) -> u64 {
        let mut archive = zip::ZipArchive::new(io::Cursor::new(zip)).expect("a zip");
        (0..archive.len())
            .filter(|&i| {
                let entry = archive.by_index_raw(i).expect("an entry");
                entry.size() > 0 && entry.compression() == zip::CompressionMethod::Stored
            })
            .count() as u64
    }

    fn reference(tree: &SourceTree) -> Vec<u8> {
        let mut out = Vec::new();
        pack_into(tree, &PackOptions::default(), &mut out).expect("packs");
        out
    }

    #[test]
    fn a_streamed_tree_packs_to_the_bytes_of_the_same_tree_in_memory_whatever_the_budget() {
        let (tree, memory, _) = mixed();
        let expected = Sha256Hex::of_bytes(&reference(&memory));
        for budget in [0, 1, 4096, 100_000, 1 << 20, u64::MAX] {
            let mut out = Vec::new();
            pack_with_budget(&tree, &PackOptions::default(), budget, &mut out).expect("packs");
            assert_eq!(Sha256Hex::of_bytes(&out), expected, "budget {budget}");
        }
    }

    #[test]
    fn a_streamed_tree_packs_through_the_cache_to_the_same_bytes() {
        let (tree, memory, _) = mixed();
        let expected = Sha256Hex::of_bytes(&reference(&memory));
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = crate::package::EntryCache::open(dir.path(), crate::package::cache::DEFAULT_MAX_BYTES)
            .expect("cache");
        let options = PackOptions { cache: Some(cache.clone()), ..PackOptions::default() };
        // Windows smaller than the big file: it is compressed straight from the stream, without
        // the cache; the others go through it.
        for (round, budget) in [(0, 100_000), (1, 100_000), (2, u64::MAX)] {
            let mut out = Vec::new();
            pack_with_budget(&tree, &options, budget, &mut out).expect("packs");
            assert_eq!(Sha256Hex::of_bytes(&out), expected, "round {round}");
        }
        // Rounds 0 and 1: b.py and z/last.py (hard/link.py, its link, first) go through the
        // cache; the three files over the budget do not. Round 2: all six.
        let stats = cache.stats();
        assert_eq!(
            (stats.misses, stats.writes),
            (4, 4),
            "b.py, hard/link.py, then a/noise.bin and m/big.txt"
        );
        assert_eq!(stats.hits, 1 + 3 + 4);
    }

    #[test]
    fn each_window_buffers_at_most_the_budget_and_costs_one_read() {
        let (tree, memory, stream) = mixed();
        let entries = tree.entries();
        // Everything in one window: one read.
        let (_, all) = pack_streamed(&tree, u64::MAX, &CancelFlag::default()).expect("packs");
        assert_eq!((all.reads, all.windows), (1, 1));
        assert_eq!(stream.opens.load(Ordering::Relaxed), 1, "every read is counted");
        let distinct: u64 = entries.iter().map(|e| e.size).sum::<u64>() - 33_000 - 300_000;
        assert_eq!(all.largest_window, distinct, "a range two entries share is buffered once");
        // Between: every window buffers at most the budget, or is one larger file, unbuffered.
        for budget in [50_000, 400_000, 1_100_000] {
            let (_, passes) = pack_streamed(&mixed().0, budget, &CancelFlag::default()).expect("packs");
            assert!(passes.largest_window <= budget, "{budget}: {passes:?}");
            assert!(passes.windows > 1 && passes.windows < entries.len() as u64, "{budget}: {passes:?}");
        }
        // A budget below every file: each is compressed straight from the stream, one read, and
        // read once more if it is stored; the empty file reads nothing.
        let (tree, _, stream) = mixed();
        let (_, one) = pack_streamed(&tree, 1, &CancelFlag::default()).expect("packs");
        let nonempty = entries.iter().filter(|e| e.size > 0).count() as u64;
        assert_eq!(one.windows, entries.len() as u64);
        assert_eq!(one.reads, nonempty + stored_files(&reference(&memory)), "{one:?}");
        assert_eq!(stream.opens.load(Ordering::Relaxed), one.reads, "every read is counted");
        assert_eq!(one.largest_window, 0, "nothing was buffered");
    }

    #[test]
    fn a_cancelled_streamed_pack_reads_nothing_and_writes_no_entry() {
        let (tree, _, stream) = mixed();
        let cancel = CancelFlag::default();
        cancel.cancel();
        let result = pack_streamed(&tree, 1, &cancel);
        assert!(matches!(result, Err(Error::Cancelled)), "{:?}", result.map(|r| r.1));
        assert_eq!(*stream.read.lock().expect("lock"), 0, "no byte of the stream was read");
    }

    #[test]
    fn cancelling_during_a_pass_stops_it_within_a_buffer() {
        let files: Vec<File> =
            (0..8).map(|i| (format!("f{i}"), Mode::Regular, noise(200_000, i + 1))).collect();
        // f0, the first in zip order, is the last in the stream: the first pass skips the rest.
        let order: Vec<usize> = (0..8).rev().collect();
        let (bytes, offsets) = layout(&files, &order);
        for budget in [1, u64::MAX] {
            let mut stream = MemStream::new(bytes.clone());
            stream.cancel_after = 3 * 200_000;
            let cancel = stream.cancel.clone();
            let (tree, _, stream) = streamed(&files, &offsets, &[], stream);
            let result = pack_streamed(&tree, budget, &cancel);
            assert!(matches!(result, Err(Error::Cancelled)), "{budget}: {:?}", result.map(|r| r.1));
            let read = *stream.read.lock().expect("lock");
            assert!(read <= 3 * 200_000 + 4096, "{budget}: read {read} bytes, cancelled at 600,000");
        }
    }

    #[test]
    fn a_stream_that_gives_other_bytes_than_the_decoder_read_is_an_error_not_another_zip() {
        // Stored noise: other bytes have the same compressed size, only the CRC tells them apart.
        let stored: Vec<File> = vec![("noise.bin".into(), Mode::Regular, noise(100_000, 5))];
        for (files, order, links) in [mixed_parts(), (stored, vec![0], Vec::new())] {
            for budget in [1, u64::MAX] {
                let (bytes, offsets) = layout(&files, &order);
                let mut stream = MemStream::new(bytes);
                stream.change_on = 1;
                let (tree, _, _) = streamed(&files, &offsets, &links, stream);
                match pack_streamed(&tree, budget, &CancelFlag::default()) {
                    Err(Error::Read { source, .. }) => assert_eq!(source.kind(), io::ErrorKind::InvalidData),
                    other => panic!("{budget}: {:?}", other.map(|r| r.1)),
                }
            }
        }
    }

    #[test]
    fn a_stream_that_ends_inside_a_file_is_an_error() {
        let files: Vec<File> = vec![("a".into(), Mode::Regular, b"0123456789".to_vec())];
        let (tree, _, _) = streamed(&files, &[0], &[], MemStream::new(b"012345".to_vec()));
        match pack_streamed(&tree, u64::MAX, &CancelFlag::default()) {
            Err(Error::Read { source, .. }) => assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("{:?}", other.map(|r| r.1)),
        }
    }

    #[test]
    fn overlapping_ranges_and_entries_outside_the_stream_are_refused() {
        let files: Vec<File> = vec![
            ("a".into(), Mode::Regular, b"0123456789".to_vec()),
            ("b".into(), Mode::Regular, b"xyz".to_vec()),
        ];
        let (tree, _, _) = streamed(&files, &[0, 5], &[], MemStream::new(b"0123456789".to_vec()));
        assert!(matches!(pack_streamed(&tree, u64::MAX, &CancelFlag::default()), Err(Error::Read { .. })));
        let spooled = SourceTree::from_memory([("a", Mode::Regular, &b"x"[..])]).expect("a valid tree");
        let mut zip = ZipWriter::new(io::Cursor::new(Vec::new()));
        let stream = MemStream::new(Vec::new());
        let result = write_entries(&spooled, &stream, u64::MAX, &PackOptions::default(), &mut zip);
        assert!(matches!(result, Err(Error::Read { .. })), "{result:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Any tree, in any stream order, with a hard link, in windows of any budget, packs to
        /// the bytes of the same tree packed from memory.
        #[test]
        fn any_streamed_tree_packs_like_the_same_tree_in_memory(
            files in prop::collection::vec((0usize..20_000, any::<bool>(), any::<bool>()), 1..12),
            order in any::<u64>(),
            budget in prop_oneof![Just(1u64), 1u64..50_000, Just(u64::MAX)],
        ) {
            let files: Vec<File> = files
                .iter()
                .enumerate()
                .map(|(i, &(len, text, exec))| {
                    let bytes = if text { b"def f(): return 1\n".repeat(len / 18 + 1)[..len].to_vec() } else { noise(len, i as u64 + 1) };
                    (format!("d{}/f{i}", i % 3), if exec { Mode::Executable } else { Mode::Regular }, bytes)
                })
                .collect();
            let mut shuffled: Vec<usize> = (0..files.len()).collect();
            let mut x = order | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                shuffled.swap(i, usize::try_from(x % (i as u64 + 1)).expect("small"));
            }
            let links = vec![("link".to_owned(), shuffled[0])];
            let (tree, memory, _) = trees(&files, &shuffled, &links);
            let mut out = Vec::new();
            pack_with_budget(&tree, &PackOptions::default(), budget, &mut out).expect("packs");
            prop_assert_eq!(Sha256Hex::of_bytes(&out), Sha256Hex::of_bytes(&reference(&memory)));
        }
    }
}
