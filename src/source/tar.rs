//! tar and tar.gz input.
//!
//! The `tar` crate (>= 0.4.46, never `tokio-tar`) reads headers in raw mode: GNU long names and
//! PAX extended headers are read here, with a size cap, instead of by the crate, which would
//! buffer any size. The decompressed stream is capped (gzip bombs) and must end with tar's
//! end-of-archive marker followed only by zero padding, so a truncated upload is an error, never
//! a smaller package. The gzip stream is read as `gzip -d` reads it: members one after another,
//! then nothing but zero padding.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use flate2::bufread::GzDecoder;
use tar::{Archive, EntryType, PaxExtensions};

use super::memory::{Found, Kind, MemNamespace};
use super::{Cancellable, Error};
use crate::package::{CancelFlag, Limits, Spool, StreamSource};

/// A limit crossed inside a reader, carried through `io::Error` and the tar crate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamLimit {
    #[error("more than {max} bytes unpacked")]
    Unpacked { max: u64 },
    #[error("compression ratio above {max}")]
    Ratio { max: u64 },
}

/// Counts the bytes read from the compressed input.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Decodes gzip members one after another (`cat a.gz b.gz`), as gzip(1) does, and accepts zero
/// bytes after the last member: tape and block padding, which `gzip -d` ignores too ("trailing
/// zero bytes ignored"). Anything else after a member that does not start another member is an
/// error, so two readers cannot see two different archives in one upload.
struct GzMembers<R: BufRead> {
    current: Option<GzDecoder<R>>,
}

impl<R: BufRead> GzMembers<R> {
    fn new(input: R) -> Self {
        Self { current: Some(GzDecoder::new(input)) }
    }
}

impl<R: BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(member) = &mut self.current else { return Ok(0) };
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This member is complete (trailer checked): see what follows it.
            let Some(member) = self.current.take() else { return Ok(0) };
            let mut input = member.into_inner();
            match input.fill_buf()?.first() {
                None => return Ok(0),
                Some(0x1f) => self.current = Some(GzDecoder::new(input)),
                Some(_) => loop {
                    let rest = input.fill_buf()?;
                    if rest.is_empty() {
                        return Ok(0);
                    }
                    if rest.iter().any(|b| *b != 0) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "data after the last gzip member that is not zero padding",
                        ));
                    }
                    let n = rest.len();
                    input.consume(n);
                },
            }
        }
    }
}

/// Caps the decompressed stream and its ratio to the compressed input, and remembers the last
/// block read so the end-of-archive marker can be checked.
struct Guard<R> {
    inner: R,
    produced: u64,
    max: u64,
    consumed: Rc<Cell<u64>>,
    max_ratio: u64,
    limits: Limits,
    last: [u8; 512],
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.produced += n as u64;
        if self.produced > self.max {
            return Err(io::Error::other(StreamLimit::Unpacked { max: self.limits.max_unpacked_bytes }));
        }
        if self.produced > self.limits.ratio_grace_bytes
            && self.produced > self.consumed.get().saturating_mul(self.max_ratio)
        {
            return Err(io::Error::other(StreamLimit::Ratio { max: self.max_ratio }));
        }
        if n >= 512 {
            self.last.copy_from_slice(&buf[n - 512..n]);
        } else {
            self.last.copy_within(n.., 0);
            self.last[512 - n..].copy_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// The tar stream of `input`: decompressed (members one after another, as `gzip -d` reads them)
/// when `gzip`, capped at `max_unpacked_bytes` plus the headers' allowance, and, when
/// decompressed, held to `max_compression_ratio` against the compressed bytes read. Every read
/// of a tar stream goes through this guard: the decoder's, and each pass of a streamed pack.
fn guarded<'a>(input: impl Read + 'a, gzip: bool, limits: &Limits) -> Guard<Box<dyn Read + 'a>> {
    let consumed = Rc::new(Cell::new(0));
    let counted = Counted { inner: input, count: Rc::clone(&consumed) };
    let stream: Box<dyn Read + 'a> = if gzip {
        Box::new(GzMembers::new(BufReader::with_capacity(128 * 1024, counted)))
    } else {
        Box::new(counted)
    };
    Guard {
        inner: stream,
        produced: 0,
        max: limits.max_unpacked_bytes.saturating_add(limits.header_allowance()),
        consumed,
        max_ratio: if gzip { limits.max_compression_ratio } else { u64::MAX },
        limits: *limits,
        last: [0xff; 512],
    }
}

/// The decompressed tar stream of a tar.gz upload, as a [`StreamSource`]: what a namespace
/// [`over_stream`](MemNamespace::over_stream) leaves its files in when there is no disk for a
/// spool. Every [`open`](StreamSource::open) decompresses the upload again from its start,
/// under the decoder's own guard (size and ratio caps) and the request's cancel flag.
#[derive(Debug)]
pub(crate) struct TarGzStream {
    upload: Spool,
    limits: Limits,
    cancel: CancelFlag,
}

impl TarGzStream {
    pub(crate) fn new(upload: Spool, limits: &Limits, cancel: &CancelFlag) -> Self {
        Self { upload, limits: *limits, cancel: cancel.clone() }
    }
}

impl StreamSource for TarGzStream {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        let input = Cancellable { inner: self.upload.reader()?, cancel: &self.cancel };
        Ok(Box::new(guarded(input, true, &self.limits)))
    }
}

/// Reads a tar stream, gzip-compressed or not, into `ns`. A file's offset is its position in
/// the tar stream: in the upload for a raw tar, in the decompressed stream for a tar.gz.
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub(crate) fn read(
    input: impl Read,
    gzip: bool,
    ns: &mut MemNamespace,
    limits: &Limits,
) -> Result<(), Error> {
    let mut guard = guarded(input, gzip, limits);
    read_members(&mut guard, ns, limits)?;
    // The tar crate stops at the first zero block, so the last block read must be that marker.
    if guard.produced % 512 != 0 || guard.last.iter().any(|b| *b != 0) {
        return Err(Error::Corrupt("the archive ends without an end-of-archive marker".into()));
    }
    // Whatever follows must be zero padding; reading it also verifies the gzip trailers.
    let mut rest = [0u8; 64 * 1024];
    loop {
        let n = super::read_input(&mut guard, &mut rest)?;
        if n == 0 {
            return Ok(());
        }
        if rest[..n].iter().any(|b| *b != 0) {
            return Err(Error::Corrupt("data after the end-of-archive marker".into()));
        }
    }
}

/// Metadata that extension members carry for the next real member.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
}

/// Reads the members of a tar stream.
fn read_members(stream: &mut impl Read, ns: &mut MemNamespace, limits: &Limits) -> Result<(), Error> {
    let mut archive = Archive::new(stream);
    let entries = archive.entries().map_err(|e| super::read_error(&e))?.raw(true);
    let mut pending = Pending::default();
    for entry in entries {
        let mut entry = entry.map_err(|e| super::read_error(&e))?;
        ns.count_entry()?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let size = header.entry_size().map_err(|e| super::read_error(&e))?;
        match kind {
            EntryType::GNULongName => {
                pending.path = Some(trim_nul(read_extension(&mut entry, size, limits)?));
                continue;
            }
            EntryType::GNULongLink => {
                pending.link = Some(trim_nul(read_extension(&mut entry, size, limits)?));
                continue;
            }
            EntryType::XHeader => {
                let data = read_extension(&mut entry, size, limits)?;
                apply_pax(&data, &mut pending)?;
                continue;
            }
            EntryType::XGlobalHeader => {
                // git archive writes one (`comment=<commit>`); keys that would change the
                // meaning of every member are refused instead of silently applied or ignored.
                let data = read_extension(&mut entry, size, limits)?;
                let mut global = Pending::default();
                apply_pax(&data, &mut global)?;
                if global.path.is_some() || global.link.is_some() || global.size.is_some() {
                    return Err(Error::UnsupportedFormat("a PAX global header sets path, linkpath or size"));
                }
                continue;
            }
            _ => {}
        }
        let current = std::mem::take(&mut pending);
        let path = match current.path {
            Some(p) => p,
            None => header.path_bytes().into_owned(),
        };
        if let Some(pax_size) = current.size {
            // Raw mode skips data by the header's size; a PAX size that disagrees would make
            // this reader and others see different members.
            if pax_size != size {
                return Err(Error::Corrupt("a PAX size disagrees with its header".into()));
            }
        }
        let lossy = || String::from_utf8_lossy(&path).into_owned();
        if !matches!(kind, EntryType::Regular | EntryType::Continuous) && size != 0 {
            if kind == EntryType::GNUSparse {
                return Err(Error::SparseEntry { path: lossy() });
            }
            if !matches!(kind, EntryType::Directory | EntryType::Symlink | EntryType::Link) {
                return Err(Error::UnsupportedEntryType { path: lossy(), kind: type_name(kind) });
            }
            return Err(Error::Corrupt(format!("{:?}: a {} member with data", lossy(), type_name(kind))));
        }
        let link = || -> Result<Vec<u8>, Error> {
            current
                .link
                .clone()
                .or_else(|| header.link_name_bytes().map(|b| b.into_owned()))
                .ok_or_else(|| Error::Corrupt(format!("{:?}: a link without a target", lossy())))
        };
        match kind {
            // An old (v7) tar marks directories only with a trailing slash.
            EntryType::Regular | EntryType::Continuous if path.ends_with(b"/") && size == 0 => {
                ns.insert(&path, Kind::<io::Empty>::Dir)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let executable = header.mode().map_err(|e| super::read_error(&e))? & 0o100 != 0;
                let found = Found::TarOffset(entry.raw_file_position());
                ns.insert(&path, Kind::File { executable, data: &mut entry, size, found })?;
            }
            EntryType::Directory => ns.insert(&path, Kind::<io::Empty>::Dir)?,
            EntryType::Symlink => {
                let target = String::from_utf8(link()?).map_err(|_| Error::InvalidPath {
                    path: lossy(),
                    reason: crate::package::PathError::NotUtf8,
                })?;
                ns.insert(&path, Kind::<io::Empty>::Symlink(target))?;
            }
            EntryType::Link => ns.insert(&path, Kind::<io::Empty>::HardLink(link()?))?,
            EntryType::GNUSparse => return Err(Error::SparseEntry { path: lossy() }),
            other => {
                return Err(Error::UnsupportedEntryType { path: lossy(), kind: type_name(other) });
            }
        }
    }
    if pending.path.is_some() || pending.link.is_some() || pending.size.is_some() {
        return Err(Error::Corrupt("an extended header is not followed by a member".into()));
    }
    Ok(())
}

fn type_name(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "FIFO",
        EntryType::Directory => "directory",
        EntryType::Symlink => "symlink",
        EntryType::Link => "hard link",
        EntryType::GNUSparse => "sparse file",
        _ => "member of an unknown type",
    }
}

fn read_extension(entry: &mut impl Read, size: u64, limits: &Limits) -> Result<Vec<u8>, Error> {
    if size > limits.max_header_bytes {
        return Err(Error::HeaderTooLarge { max: limits.max_header_bytes });
    }
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry.take(size).read_to_end(&mut data).map_err(|e| super::read_error(&e))?;
    if data.len() as u64 != size {
        return Err(Error::Corrupt("an extended header is truncated".into()));
    }
    Ok(data)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn apply_pax(data: &[u8], pending: &mut Pending) -> Result<(), Error> {
    for ext in PaxExtensions::new(data) {
        let ext = ext.map_err(|_| Error::Corrupt("a malformed PAX extended header".into()))?;
        let key = ext.key().map_err(|_| Error::Corrupt("a PAX key is not UTF-8".into()))?;
        match key {
            "path" => pending.path = Some(ext.value_bytes().to_vec()),
            "linkpath" => pending.link = Some(ext.value_bytes().to_vec()),
            "size" => {
                let size = ext
                    .value()
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| Error::Corrupt("a PAX size is not a number".into()))?;
                pending.size = Some(size);
            }
            k if k.starts_with("GNU.sparse.") => {
                let path = pending.path.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                return Err(Error::SparseEntry { path: path.into_owned() });
            }
            // Times, owners, xattrs: metadata the package does not carry.
            _ => {}
        }
    }
    Ok(())
}
