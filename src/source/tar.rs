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

#[cfg(test)]
mod tests {
    //! The tar.gz decoded without a spool (a full disk): the same trees, the same bytes, the same
    //! guards and the same cancellation as with one.

    use std::io::Write as _;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use proptest::prelude::*;

    use super::*;
    use crate::package::{Contents, PackOptions, Sha256Hex, SourceTree, pack_with_budget};
    use crate::source::select::{Selection, Selector};
    use crate::source::{GzContents, SourceFormat, decode};

    /// One member of a test tar.
    #[derive(Debug, Clone)]
    enum M {
        File(String, Vec<u8>, bool),
        HardLink(String, String),
        Symlink(String, String),
    }

    fn tar_gz(members: &[M]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for m in members {
            let mut header = tar::Header::new_gnu();
            match m {
                M::File(path, data, exec) => {
                    header.set_size(data.len() as u64);
                    header.set_mode(if *exec { 0o755 } else { 0o644 });
                    header.set_cksum();
                    tar.append_data(&mut header, path, &data[..]).expect("tar in memory");
                }
                M::HardLink(path, target) => {
                    header.set_entry_type(EntryType::Link);
                    header.set_size(0);
                    tar.append_link(&mut header, path, target).expect("tar in memory");
                }
                M::Symlink(path, target) => {
                    header.set_entry_type(EntryType::Symlink);
                    header.set_size(0);
                    tar.append_link(&mut header, path, target).expect("tar in memory");
                }
            }
        }
        gzip(&tar.into_inner().expect("tar in memory"))
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(bytes).expect("gzip in memory");
        gz.finish().expect("gzip in memory")
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

    fn decoded(
        bytes: &[u8],
        gz: GzContents<'_>,
        selection: &Selection,
        limits: &Limits,
        cancel: &CancelFlag,
    ) -> Result<SourceTree, Error> {
        let selector = Selector::new(selection).expect("a valid selection");
        decode(&Spool::from_bytes(bytes.to_vec()), SourceFormat::TarGz, gz, &selector, limits, cancel)
    }

    fn sha256(tree: &SourceTree, budget: u64) -> Sha256Hex {
        let mut out = Vec::new();
        pack_with_budget(tree, &PackOptions::default(), budget, &mut out).expect("packs");
        Sha256Hex::of_bytes(&out)
    }

    /// Files of every kind of content, a hard link, a link to a file and one to a directory.
    fn mixed() -> Vec<u8> {
        tar_gz(&[
            M::File("pkg/z.py".into(), b"print('z')\n".repeat(2000), false),
            M::File("pkg/data/noise.bin".into(), noise(200_000, 1), false),
            M::File("pkg/run".into(), b"#!/bin/sh\n".to_vec(), true),
            M::File("pkg/empty".into(), Vec::new(), false),
            M::File("a.txt".into(), b"lorem ipsum ".repeat(30_000), false),
            M::HardLink("pkg/z2.py".into(), "pkg/z.py".into()),
            M::Symlink("pkg/link.bin".into(), "data/noise.bin".into()),
            M::Symlink("pkg/data2".into(), "data".into()),
        ])
    }

    #[test]
    fn without_a_spool_a_tar_gz_packs_to_the_same_bytes_in_any_number_of_windows() {
        let bytes = mixed();
        let cancel = CancelFlag::default();
        let spooled =
            decoded(&bytes, GzContents::Spool(None), &Selection::default(), &Limits::default(), &cancel)
                .expect("decodes");
        assert!(matches!(spooled.contents(), Contents::Spool(_)));
        let expected = sha256(&spooled, u64::MAX);
        let streamed =
            decoded(&bytes, GzContents::Stream, &Selection::default(), &Limits::default(), &cancel)
                .expect("decodes");
        assert!(matches!(streamed.contents(), Contents::Stream(_)), "nothing is spooled");
        assert_eq!(streamed.entries().len(), 8);
        for budget in [1, 10_000, 250_000, u64::MAX] {
            assert_eq!(sha256(&streamed, budget), expected, "budget {budget}");
        }
    }

    #[test]
    fn without_a_spool_the_gzip_bomb_guards_still_refuse_the_stream() {
        let zeros = tar_gz(&[M::File("zeros".into(), vec![0; 40 << 20], false)]);
        let cancel = CancelFlag::default();
        let limits = Limits::default();
        let bomb = decoded(&zeros, GzContents::Stream, &Selection::default(), &limits, &cancel);
        assert!(matches!(bomb, Err(Error::CompressionRatio { .. })), "{bomb:?}");
        let small = Limits { max_unpacked_bytes: 100_000, ..Limits::default() };
        let big = tar_gz(&[M::File("big".into(), noise(200_000, 2), false)]);
        let too_big = decoded(&big, GzContents::Stream, &Selection::default(), &small, &cancel);
        assert!(matches!(too_big, Err(Error::UnpackedTooLarge { .. })), "{too_big:?}");
        // Every pass of the packer reads through the same guard as the decoder.
        let stream = TarGzStream::new(Spool::from_bytes(zeros), &limits, &cancel);
        for _ in 0..2 {
            let e = stream.open().expect("opens").read_to_end(&mut Vec::new()).expect_err("the guard trips");
            assert!(matches!(super::super::read_error(&e), Error::CompressionRatio { .. }), "{e}");
        }
    }

    #[test]
    fn without_a_spool_a_cancelled_request_stops_decoding_and_every_later_pass() {
        let bytes = mixed();
        assert!(bytes.len() > 128 * 1024, "more than one buffer of compressed input");
        let cancel = CancelFlag::default();
        let streamed =
            decoded(&bytes, GzContents::Stream, &Selection::default(), &Limits::default(), &cancel)
                .expect("decodes");
        let Contents::Stream(stream) = streamed.contents() else { panic!("a streamed tree") };
        let mut reader = stream.open().expect("opens");
        reader.read_exact(&mut [0u8; 1024]).expect("reads while the request is there");
        cancel.cancel();
        // The compressed input is read 128 KiB at a time: what is buffered may still be
        // decompressed, the next read of the upload fails (the archive is larger than that).
        let e = reader.read_to_end(&mut Vec::new()).expect_err("a cancelled pass stops within a buffer");
        assert!(matches!(super::super::read_error(&e), Error::Cancelled), "{e}");
        let packed = pack_with_budget(
            &streamed,
            &PackOptions { cancel: cancel.clone(), ..PackOptions::default() },
            1,
            io::sink(),
        );
        assert!(matches!(packed, Err(crate::package::Error::Cancelled)), "{packed:?}");
        let again = decoded(&bytes, GzContents::Stream, &Selection::default(), &Limits::default(), &cancel);
        assert!(matches!(again, Err(Error::Cancelled)), "{again:?}");
    }

    /// A random tree as tar members, in a random order, with a hard link and a symlink.
    fn members() -> impl Strategy<Value = Vec<M>> {
        let file = (0usize..30_000, any::<bool>(), any::<bool>(), any::<u64>());
        (prop::collection::vec(file, 1..10), any::<prop::sample::Index>()).prop_flat_map(|(files, pick)| {
            let mut members: Vec<M> = files
                .iter()
                .enumerate()
                .map(|(i, &(len, text, exec, seed))| {
                    let data = if text { b"x = 1\n".repeat(len / 6) } else { noise(len, seed) };
                    M::File(format!("d{}/f{i}", i % 3), data, exec)
                })
                .collect();
            let target = match &members[pick.index(members.len())] {
                M::File(path, ..) => path.clone(),
                _ => unreachable!("only files so far"),
            };
            members.push(M::HardLink("hard".into(), target.clone()));
            members.push(M::Symlink("soft".into(), target));
            Just(members).prop_shuffle()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// With or without a spool, in any number of windows, a tar.gz gives the same package.
        #[test]
        fn any_tar_gz_packs_to_the_same_sha256_with_or_without_a_spool(
            members in members(),
            budget in prop_oneof![Just(1u64), 1u64..100_000, Just(u64::MAX)],
        ) {
            // A hard link must come after its target in a tar: those that do not are refused,
            // alike with and without a spool.
            let bytes = tar_gz(&members);
            let cancel = CancelFlag::default();
            let spooled = decoded(&bytes, GzContents::Spool(None), &Selection::default(), &Limits::default(), &cancel);
            let streamed = decoded(&bytes, GzContents::Stream, &Selection::default(), &Limits::default(), &cancel);
            match (spooled, streamed) {
                (Ok(spooled), Ok(streamed)) => prop_assert_eq!(sha256(&streamed, budget), sha256(&spooled, u64::MAX)),
                (Err(a), Err(b)) => prop_assert_eq!(a.code(), b.code()),
                (a, b) => prop_assert!(false, "{:?} vs {:?}", a.map(|_| ()), b.map(|_| ())),
            }
        }
    }
}
