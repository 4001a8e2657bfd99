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

    let mut measured = vec![Measured { method: Method::Store, compressed: 0 }; ranges.len()];
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
        measured[r] = match method_for(deflated.uncompressed_size(), deflated.compressed_size()) {
            Method::Deflate => Measured { method: Method::Deflate, compressed: deflated.compressed_size() },
            Method::Store => Measured { method: Method::Store, compressed: range.size },
        };
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
            let Measured { method, compressed } = measured[r];
            let build = |i: usize, data: &mut dyn Read, buf: &mut [u8]| -> Result<PreparedZipFile, Error> {
                let entry = &entries[i];
                let mut builder =
                    ZipFileBuilder::new(entry.path.as_str(), entry_options(entry.mode, method))?;
                feed(data, &mut [&mut builder], buf, cancel, entry)?;
                let file = builder.finish()?;
                if file.uncompressed_size() != range.size || file.compressed_size() != compressed {
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
