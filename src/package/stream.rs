//! Packing a tree whose contents are one stream that can only be read from its start: the tar
//! inside a tar.gz, when there was no disk to spool it to ([`Contents::Stream`]).
//!
//! The zip wants its entries in path order; the stream has them in its own order, and the only
//! way to a byte of it is to decompress everything before it. So the stream is read several
//! times, each time from its start, and nothing is written anywhere but to the zip:
//!
//! 1. **Measure.** One pass compresses every range once and keeps only the result's size: it
//!    decides each entry's method exactly as [`super::prepare`] does (deflate, stored when that
//!    does not make it smaller) and how many bytes the entry will hold once compressed. Deflate's
//!    output depends only on the bytes, not on the entry's name, so one measurement serves every
//!    entry on a range (hard links and copies of symlinked files share one).
//! 2. **Plan.** Consecutive entries in zip order are grouped into windows whose compressed bytes
//!    fit in the budget. A window holds at least one entry: a file that compresses to more than
//!    the budget is a window of its own, as the parallel packer holds one file over its budget.
//! 3. **Pack.** One pass per window decompresses the stream up to the last range the window
//!    needs and compresses only the window's entries (their methods are known: one read each),
//!    holds them, then appends them to the zip in order and drops them.
//!
//! The bytes are those of the other packers: same methods, same compressor, same order, and
//! every entry is checked against its measurement (a stream that gave other bytes on another
//! pass is an error, never a different zip). The cost is `2 + windows` reads of the stream (the
//! decoder's, the measure pass, one per window) and two deflates of every byte, on the calling
//! thread only: this path only runs when the disk is full, where a slower answer beats none.
//! Memory: the window (at most the budget in compressed bytes, or one entry), one deflate state,
//! one read buffer and, for a range that several entries of one window share, its raw bytes.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, Write};

use zip::ZipWriter;
use zip::write::{PreparedZipFile, ZipFileBuilder};

use super::canonical::{Method, entry_options, method_for};
use super::{CancelFlag, Content, Entry, Error, READ_BUFFER, SourceTree, StreamSource};

/// What a prepared entry holds besides its compressed bytes (name, options, bookkeeping),
/// counted against the budget with its path.
const ENTRY_OVERHEAD: u64 = 128;

/// The bytes of one or more entries: `size` bytes at `offset` of the stream.
#[derive(Debug)]
struct Range {
    offset: u64,
    size: u64,
    /// Indices of the tree's entries on this range, ascending.
    entries: Vec<usize>,
}

/// What the measure pass found out about a range.
#[derive(Debug, Clone, Copy)]
struct Measured {
    method: Method,
    /// Compressed bytes of one entry on the range, with that method.
    compressed: u64,
    /// CRC-32 of the range's bytes: a later pass must read the same.
    crc32: u32,
}

/// How a streamed pack went: what the tests check the design against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Passes {
    /// Times the stream was opened (read from its start).
    pub(super) reads: u64,
    /// Windows the entries were packed in.
    pub(super) windows: u64,
    /// Most compressed bytes held at once (entries of one window, with their overhead).
    pub(super) peak_held: u64,
}

/// Compresses the entries of `tree`, all [`Content::Streamed`] from `stream`, and appends them
/// to `zip` in canonical order, holding at most `budget` compressed bytes (or one entry) at once.
pub(super) fn write_entries<W: Write + Seek>(
    tree: &SourceTree,
    stream: &dyn StreamSource,
    budget: u64,
    cancel: &CancelFlag,
    zip: &mut ZipWriter<W>,
) -> Result<Passes, Error> {
    let entries = tree.entries();
    let (ranges, range_of) = ranges(entries)?;
    let mut passes = Passes { reads: 0, windows: 0, peak_held: 0 };
    let mut buf = vec![0u8; READ_BUFFER];

    let mut measured = vec![Measured { method: Method::Store, compressed: 0, crc32: 0 }; ranges.len()];
    let all: Vec<usize> = (0..ranges.len()).collect();
    passes.reads += pass(stream, entries, &ranges, &all, &mut buf, cancel, |r, data, buf| {
        let range = &ranges[r];
        // `method_for(0, _)` is always `Store`: nothing to measure.
        if range.size == 0 {
            return Ok(());
        }
        let first = &entries[range.entries[0]];
        let mut builder =
            ZipFileBuilder::new(first.path.as_str(), entry_options(first.mode, Method::Deflate))?;
        feed(data, &mut [&mut builder], buf, cancel, first)?;
        let deflated = builder.finish()?;
        let (method, compressed) = match method_for(deflated.uncompressed_size(), deflated.compressed_size())
        {
            Method::Deflate => (Method::Deflate, deflated.compressed_size()),
            Method::Store => (Method::Store, range.size),
        };
        measured[r] = Measured { method, compressed, crc32: deflated.crc32() };
        Ok(())
    })?;

    let cost =
        |i: usize| measured[range_of[i]].compressed + entries[i].path.as_str().len() as u64 + ENTRY_OVERHEAD;
    for window in windows(entries.len(), budget, cost) {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        passes.windows += 1;
        passes.peak_held = passes.peak_held.max(window.clone().map(cost).sum());
        let mut wanted: Vec<usize> = window.clone().map(|i| range_of[i]).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut prepared: Vec<Option<PreparedZipFile>> = window.clone().map(|_| None).collect();
        passes.reads += pass(stream, entries, &ranges, &wanted, &mut buf, cancel, |r, data, buf| {
            let range = &ranges[r];
            let here: Vec<usize> = range.entries.iter().copied().filter(|i| window.contains(i)).collect();
            let Measured { method, compressed, crc32 } = measured[r];
            let build = |i: usize, data: &mut dyn Read, buf: &mut [u8]| -> Result<PreparedZipFile, Error> {
                let entry = &entries[i];
                let mut builder =
                    ZipFileBuilder::new(entry.path.as_str(), entry_options(entry.mode, method))?;
                feed(data, &mut [&mut builder], buf, cancel, entry)?;
                let file = builder.finish()?;
                if file.uncompressed_size() != range.size
                    || file.compressed_size() != compressed
                    || file.crc32() != crc32
                {
                    return Err(Error::Read {
                        path: entry.path.clone(),
                        source: io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the stream gave other bytes than on the pass that measured them",
                        ),
                    });
                }
                Ok(file)
            };
            if let [i] = here[..] {
                prepared[i - window.start] = Some(build(i, data, buf)?);
                return Ok(());
            }
            // Several entries of this window share the range (hard links, copies of a linked
            // file): its raw bytes are read once and compressed once per entry.
            let mut raw = Vec::with_capacity(usize::try_from(range.size).unwrap_or(0));
            feed(data, &mut [&mut raw], buf, cancel, &entries[here[0]])?;
            for i in here {
                prepared[i - window.start] = Some(build(i, &mut &raw[..], buf)?);
            }
            Ok(())
        })?;
        for file in prepared {
            let file = file.ok_or_else(|| {
                Error::Write(io::Error::other("a window's entry was not read from the stream"))
            })?;
            zip.add_prepared_file(file)?;
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
        }
    }
    Ok(passes)
}

/// The tree's ranges in stream order, and the range of each entry.
fn ranges(entries: &[Entry]) -> Result<(Vec<Range>, Vec<usize>), Error> {
    let mut by_offset: BTreeMap<u64, Range> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let Content::Streamed { offset } = entry.content else {
            return Err(Error::Read {
                path: entry.path.clone(),
                source: io::Error::other("an entry of a streamed tree that is not in the stream"),
            });
        };
        let range =
            by_offset.entry(offset).or_insert(Range { offset, size: entry.size, entries: Vec::new() });
        if range.size != entry.size {
            return Err(Error::Read {
                path: entry.path.clone(),
                source: io::Error::other("two entries of different sizes at one offset of the stream"),
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

/// Consecutive runs of `0..count` whose costs add up to at most `budget`; a run whose first
/// entry alone costs more holds only that entry.
fn windows(count: usize, budget: u64, cost: impl Fn(usize) -> u64) -> Vec<std::ops::Range<usize>> {
    let mut windows = Vec::new();
    let (mut start, mut held) = (0, 0u64);
    for i in 0..count {
        let c = cost(i);
        if i > start && held.saturating_add(c) > budget {
            windows.push(start..i);
            (start, held) = (i, 0);
        }
        held = held.saturating_add(c);
    }
    if start < count {
        windows.push(start..count);
    }
    windows
}

/// Reads the stream once, from its start, up to the end of the last of `wanted` (range indices,
/// ascending): skips to each of them and hands `visit` a reader of exactly its bytes (which
/// `visit` must read to the end). Returns how many times the stream was opened (0 when every
/// wanted range is empty).
fn pass(
    stream: &dyn StreamSource,
    entries: &[Entry],
    ranges: &[Range],
    wanted: &[usize],
    buf: &mut [u8],
    cancel: &CancelFlag,
    mut visit: impl FnMut(usize, &mut dyn Read, &mut [u8]) -> Result<(), Error>,
) -> Result<u64, Error> {
    let mut input: Option<(Box<dyn Read + '_>, u64)> = None;
    for &r in wanted {
        let range = &ranges[r];
        let first = &entries[range.entries[0]];
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
            None => input.insert((stream.open().map_err(read_err)?, 0)),
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
            Error::Read { source, .. } if cancel.is_cancelled() => {
                drop(source);
                Error::Cancelled
            }
            other => other,
        })?;
        if data.left != 0 {
            return Err(Error::Write(io::Error::other("a range of the stream was not read to its end")));
        }
        *pos += range.size;
    }
    Ok(u64::from(input.is_some()))
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

/// Copies all of `data` into every sink, checking `cancel` before every buffer.
fn feed(
    data: &mut dyn Read,
    sinks: &mut [&mut dyn Write],
    buf: &mut [u8],
    cancel: &CancelFlag,
    entry: &Entry,
) -> Result<(), Error> {
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let n = match data.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(Error::Read { path: entry.path.clone(), source }),
        };
        for sink in sinks.iter_mut() {
            sink.write_all(&buf[..n]).map_err(Error::Write)?;
        }
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
            content: Content::Streamed { offset: offsets[i] },
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
        let passes = write_entries(tree, stream.as_ref(), budget, cancel, &mut zip)?;
        Ok((zip.finish().expect("finishes").into_inner(), passes))
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
    fn windows_hold_at_most_the_budget_or_one_entry_and_each_costs_one_read() {
        let entries = mixed().0.entries().len() as u64;
        // Everything in one window: the measure pass and one packing pass.
        let (tree, _, stream) = mixed();
        let (_, all) = pack_streamed(&tree, u64::MAX, &CancelFlag::default()).expect("packs");
        assert_eq!((all.reads, all.windows), (2, 1));
        assert_eq!(stream.opens.load(Ordering::Relaxed), all.reads, "every read is counted");
        // A budget below every entry: one entry per window, and the empty file's reads nothing.
        let (tree, _, stream) = mixed();
        let (_, one) = pack_streamed(&tree, 1, &CancelFlag::default()).expect("packs");
        assert_eq!(one.windows, entries);
        assert_eq!(one.reads, 1 + (entries - 1), "the measure pass, then one read per non-empty window");
        assert_eq!(stream.opens.load(Ordering::Relaxed), one.reads, "every read is counted");
        let largest = one.peak_held;
        assert!(
            (300_000..310_000).contains(&largest),
            "the noise file is stored, and the largest: {largest}"
        );
        // In between, a window holds at most the budget, unless it is one entry.
        for budget in [50_000, 200_000, 400_000] {
            let (_, passes) = pack_streamed(&mixed().0, budget, &CancelFlag::default()).expect("packs");
            assert!(passes.peak_held <= budget.max(largest), "{budget}: {passes:?}");
            assert!(passes.windows > 1 && passes.windows < entries, "{budget}: {passes:?}");
        }
    }

    #[test]
    fn a_cancelled_streamed_pack_reads_nothing_and_writes_no_entry() {
        let (tree, _, stream) = mixed();
        let cancel = CancelFlag::default();
        cancel.cancel();
        let mut zip = ZipWriter::new(io::Cursor::new(Vec::new()));
        let result = write_entries(&tree, stream.as_ref(), 1, &cancel, &mut zip);
        assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        assert_eq!(*stream.read.lock().expect("lock"), 0, "no byte of the stream was read");
        let out = zip.finish().expect("finishes").into_inner();
        assert!(!out.windows(4).any(|w| w == b"PK\x03\x04"), "no entry reached the output");
    }

    #[test]
    fn cancelling_during_a_pass_stops_it_within_a_buffer() {
        let files: Vec<File> =
            (0..8).map(|i| (format!("f{i}"), Mode::Regular, noise(200_000, i + 1))).collect();
        let order: Vec<usize> = (0..8).rev().collect();
        let (bytes, offsets) = layout(&files, &order);
        let total = bytes.len() as u64;
        let mut stream = MemStream::new(bytes);
        // Inside the first window's pass (the measure pass reads the whole stream first).
        stream.cancel_after = total + 3 * 200_000;
        let cancel = stream.cancel.clone();
        let (tree, _, stream) = streamed(&files, &offsets, &[], stream);
        let result = pack_streamed(&tree, 1, &cancel);
        assert!(matches!(result, Err(Error::Cancelled)), "{:?}", result.map(|r| r.1));
        let read = *stream.read.lock().expect("lock");
        assert!(
            read <= total + 3 * 200_000 + READ_BUFFER as u64,
            "read {read} bytes, cancelled at {}",
            total + 600_000
        );
    }

    #[test]
    fn a_stream_that_gives_other_bytes_on_a_later_pass_is_an_error_not_another_zip() {
        // Stored noise: other bytes have the same compressed size, only the CRC tells them apart.
        let stored: Vec<File> = vec![("noise.bin".into(), Mode::Regular, noise(100_000, 5))];
        for (files, order, links) in [mixed_parts(), (stored, vec![0], Vec::new())] {
            let (bytes, offsets) = layout(&files, &order);
            let mut stream = MemStream::new(bytes);
            stream.change_on = 2;
            let (tree, _, _) = streamed(&files, &offsets, &links, stream);
            match pack_streamed(&tree, u64::MAX, &CancelFlag::default()) {
                Err(Error::Read { source, .. }) => assert_eq!(source.kind(), io::ErrorKind::InvalidData),
                other => panic!("{:?}", other.map(|r| r.1)),
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
        let result =
            write_entries(&spooled, &MemStream::new(Vec::new()), u64::MAX, &CancelFlag::default(), &mut zip);
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
