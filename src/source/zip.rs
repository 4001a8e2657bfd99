//! zip input: re-canonicalize an existing zip (built by another tool, or on Windows).
//!
//! Only names, the owner-exec bit and contents are taken from it. Names must be UTF-8 and use
//! `/` (a backslash is refused, not converted, since on Linux it is a legal name character).
//! The exec bit comes from Unix external attributes when the entry has them, else the file is
//! `0644`. Entries are decompressed with a cap on the total and on the ratio to the archive size
//! (zip bombs, including overlapping-entry bombs), and declared sizes and CRCs are verified.
//!
//! Entries are not copied anywhere: the decoder reads each one (checking its size and CRC) and
//! records where its compressed bytes are, and the packer inflates the entries it keeps straight
//! from the upload ([`ZipBlobs`]), checking size and CRC again. Entries are independently
//! compressed and randomly accessible, so this needs no temp space at all, whatever the size
//! and whatever the room on the disk; the price is a second inflate of every kept entry, which
//! costs about what writing and reading a spool did (BENCHMARKS.md, "zip input").
//!
//! One parse, no differentials: a zip names each entry twice (central directory and local
//! header), and readers disagree on which one counts, so an entry whose two names differ is
//! refused rather than read by one of them. A directory entry must be empty, as in tar:
//! bytes hidden under a directory name are what another extractor would write somewhere.

use std::io::{self, BufReader, Read, Seek, SeekFrom};

use flate2::Crc;
use flate2::bufread::DeflateDecoder;
use zip::result::ZipError;
use zip::{CompressionMethod, System, ZipArchive};

use super::Error;
use super::memory::{Found, Kind, MemNamespace};
use crate::package::{BlobReader, BlobSource, Limits, Spool};

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

fn zip_error(e: ZipError) -> Error {
    match e {
        ZipError::Io(e) => super::read_error(&e),
        ZipError::UnsupportedArchive(msg) => Error::UnsupportedFormat(msg),
        other => Error::Corrupt(other.to_string()),
    }
}

/// Size of a local file header before its name (signature included).
const LOCAL_HEADER_LEN: usize = 30;

/// The name in the local header at `header_start` of `upload`.
fn local_name(upload: &Spool, header_start: u64) -> Result<Vec<u8>, Error> {
    let corrupt = || Error::Corrupt(format!("no local file header at offset {header_start}"));
    let mut fixed = [0u8; LOCAL_HEADER_LEN];
    read_exact_at(upload, &mut fixed, header_start)?.then_some(()).ok_or_else(corrupt)?;
    if fixed[..4] != [b'P', b'K', 3, 4] {
        return Err(corrupt());
    }
    let mut name = vec![0u8; usize::from(u16::from_le_bytes([fixed[26], fixed[27]]))];
    read_exact_at(upload, &mut name, header_start + LOCAL_HEADER_LEN as u64)?
        .then_some(())
        .ok_or_else(corrupt)?;
    Ok(name)
}

/// Fills `buf` from `offset`; `false` if the upload ends first.
fn read_exact_at(upload: &Spool, buf: &mut [u8], offset: u64) -> Result<bool, Error> {
    let mut done = 0;
    while done < buf.len() {
        match upload.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(e)),
        }
    }
    Ok(true)
}

/// Reads every entry of a zip file (read through `reader`; `upload` is the same bytes, for the
/// local headers) into `ns`.
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub(crate) fn read(
    reader: impl Read + Seek,
    upload: &Spool,
    ns: &mut MemNamespace,
    limits: &Limits,
) -> Result<(), Error> {
    let archive_len = upload.len().map_err(Error::io)?;
    let mut archive = ZipArchive::new(reader).map_err(zip_error)?;
    if archive.has_duplicate_names() {
        return Err(Error::DuplicatePath { path: "(a name listed twice in the zip)".into() });
    }
    let mut unpacked = 0u64;
    for i in 0..archive.len() {
        ns.count_entry()?;
        let (name, unix_mode, is_dir) = {
            let raw = archive.by_index_raw(i).map_err(zip_error)?;
            let name = raw.name_raw().to_vec();
            let lossy = || String::from_utf8_lossy(raw.name_raw()).into_owned();
            if local_name(upload, raw.header_start())? != name {
                return Err(Error::Corrupt(format!(
                    "{:?}: the local header names the entry differently than the central directory",
                    lossy()
                )));
            }
            if raw.encrypted() {
                return Err(Error::EncryptedEntry { path: lossy() });
            }
            if !matches!(raw.compression(), CompressionMethod::Stored | CompressionMethod::Deflated) {
                return Err(Error::UnsupportedCompression {
                    path: lossy(),
                    method: format!("{:?}", raw.compression()),
                });
            }
            let unix_mode = match (raw.system(), raw.external_attributes() >> 16) {
                (System::Unix, mode) if mode != 0 => Some(mode),
                _ => None,
            };
            (name, unix_mode, raw.is_dir())
        };
        let lossy = || String::from_utf8_lossy(&name).into_owned();
        let file_type = unix_mode.map(|m| m & S_IFMT);
        match file_type {
            _ if file_type == Some(S_IFDIR) || is_dir => {
                // Decoded like a file (an empty deflate stream is two bytes), and must be empty.
                let mut entry = archive.by_index(i).map_err(zip_error)?;
                let mut probe = [0u8; 1];
                if entry.size() != 0 || super::read_input(&mut entry, &mut probe)? != 0 {
                    return Err(Error::Corrupt(format!("{:?}: a directory entry with data", lossy())));
                }
                drop(entry);
                ns.insert(&name, Kind::<io::Empty>::Dir)?;
                continue;
            }
            None | Some(0 | S_IFREG | S_IFLNK) => {}
            Some(_) => {
                return Err(Error::UnsupportedEntryType { path: lossy(), kind: "special file" });
            }
        }
        let mut entry = archive.by_index(i).map_err(zip_error)?;
        let size = entry.size();
        let blob = ZipBlob {
            data_start: entry
                .data_start()
                .ok_or_else(|| Error::Corrupt(format!("{:?}: no data offset", lossy())))?,
            compressed_size: entry.compressed_size(),
            deflated: entry.compression() == CompressionMethod::Deflated,
            crc32: entry.crc32(),
        };
        if unpacked.saturating_add(size) > limits.max_unpacked_bytes {
            return Err(Error::UnpackedTooLarge { max: limits.max_unpacked_bytes });
        }
        unpacked += size;
        if unpacked > limits.ratio_grace_bytes
            && unpacked > archive_len.saturating_mul(limits.max_compression_ratio)
        {
            return Err(Error::CompressionRatio { max: limits.max_compression_ratio });
        }
        if file_type == Some(S_IFLNK) {
            if size > limits.max_path_bytes {
                return Err(Error::PathTooLong { path: lossy(), max: limits.max_path_bytes });
            }
            let mut target = Vec::new();
            read_exact_size(&mut entry, size, &mut target)?;
            let target = String::from_utf8(target).map_err(|_| Error::InvalidPath {
                path: lossy(),
                reason: crate::package::PathError::NotUtf8,
            })?;
            ns.insert(&name, Kind::<io::Empty>::Symlink(target))?;
        } else {
            let executable = unix_mode.is_some_and(|m| m & 0o100 != 0);
            // The zip crate checks the CRC once the entry is read to its end; reading one byte
            // past the declared size proves the entry is not longer than it claims.
            let mut exact = ExactSize { inner: &mut entry, left: size, name: &name };
            ns.insert(
                &name,
                Kind::File { executable, data: &mut exact, size, found: Found::ZipEntry(blob) },
            )?;
            let mut probe = [0u8; 1];
            if super::read_input(&mut entry, &mut probe)? != 0 {
                return Err(Error::Corrupt(format!("{:?} is longer than its declared size", lossy())));
            }
        }
    }
    Ok(())
}

/// Yields exactly `left` bytes, or an error if the entry ends early.
struct ExactSize<'a, R> {
    inner: &'a mut R,
    left: u64,
    name: &'a [u8],
}

impl<R: Read> Read for ExactSize<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{:?} is shorter than its declared size", String::from_utf8_lossy(self.name)),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn read_exact_size(r: &mut impl Read, size: u64, out: &mut Vec<u8>) -> Result<(), Error> {
    let mut exact = ExactSize { inner: r, left: size, name: b"symlink" };
    exact.read_to_end(out).map_err(|e| super::read_error(&e))?;
    let mut probe = [0u8; 1];
    if super::read_input(r, &mut probe)? != 0 {
        return Err(Error::Corrupt("a symlink entry is longer than its declared size".into()));
    }
    Ok(())
}

/// Where a zip entry's bytes are in the upload, and what they must inflate to: what the packer
/// needs to read the entry again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ZipBlob {
    /// Offset of the entry's (compressed) data in the upload.
    data_start: u64,
    compressed_size: u64,
    /// Deflated; otherwise stored.
    deflated: bool,
    crc32: u32,
}

/// The kept entries of a zip upload, inflated from it at packing time: blob `id` is the `id`th
/// file the decoder found. Nothing here is shared state but the upload, which is read by offset,
/// so every packing thread reads on its own.
#[derive(Debug)]
pub(crate) struct ZipBlobs {
    upload: Spool,
    blobs: Vec<ZipBlob>,
}

impl ZipBlobs {
    pub(crate) fn new(upload: Spool, blobs: Vec<ZipBlob>) -> Self {
        Self { upload, blobs }
    }
}

impl BlobSource for ZipBlobs {
    fn reader(&self) -> io::Result<Box<dyn BlobReader + '_>> {
        Ok(Box::new(self))
    }
}

impl BlobReader for &ZipBlobs {
    fn open(&mut self, id: u64, size: u64) -> io::Result<Box<dyn Read>> {
        let blob = usize::try_from(id).ok().and_then(|i| self.blobs.get(i)).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no zip entry {id} in this upload"))
        })?;
        let mut raw = self.upload.reader()?;
        raw.seek(SeekFrom::Start(blob.data_start))?;
        let raw = raw.take(blob.compressed_size);
        let data: Box<dyn Read> = if blob.deflated {
            Box::new(DeflateDecoder::new(BufReader::with_capacity(64 * 1024, raw)))
        } else {
            Box::new(raw)
        };
        Ok(Box::new(Checked { inner: data, left: size, crc: Crc::new(), expected: blob.crc32 }))
    }
}

/// A zip entry's bytes, checked as they are read: exactly `left` more of them, with the CRC the
/// archive declares. A mismatch is an error on the read that would have completed the entry.
struct Checked<R> {
    inner: R,
    left: u64,
    crc: Crc,
    expected: u32,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a zip entry is shorter than its size"));
        }
        self.crc.update(&buf[..n]);
        self.left -= n as u64;
        if self.left == 0 {
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a zip entry is longer than its size",
                ));
            }
            if self.crc.sum() != self.expected {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "a zip entry fails its CRC check"));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write as _};

    use super::*;

    /// A zip with one stored and one deflated entry, and where each entry's data is.
    fn zip_and_blobs() -> (Vec<u8>, Vec<ZipBlob>, Vec<Vec<u8>>) {
        let contents = vec![b"stored bytes, as they are".to_vec(), b"deflated text ".repeat(1000)];
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (i, (data, method)) in
            contents.iter().zip([CompressionMethod::Stored, CompressionMethod::Deflated]).enumerate()
        {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(method)
                .last_modified_time(zip::DateTime::default());
            writer.start_file(format!("f{i}"), options).expect("zip in memory");
            writer.write_all(data).expect("zip in memory");
        }
        let bytes = writer.finish().expect("zip in memory").into_inner();
        let mut archive = ZipArchive::new(Cursor::new(&bytes)).expect("a zip");
        let blobs = (0..2)
            .map(|i| {
                let entry = archive.by_index(i).expect("an entry");
                ZipBlob {
                    data_start: entry.data_start().expect("read its local header"),
                    compressed_size: entry.compressed_size(),
                    deflated: entry.compression() == CompressionMethod::Deflated,
                    crc32: entry.crc32(),
                }
            })
            .collect();
        (bytes, blobs, contents)
    }

    fn read(blobs: &ZipBlobs, id: u64, size: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        blobs.reader()?.open(id, size)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn zip_entries_are_inflated_from_the_upload_with_their_size_and_crc_checked() {
        let (bytes, blobs, contents) = zip_and_blobs();
        let upload = Spool::from_bytes(bytes);
        let good = ZipBlobs::new(upload.clone(), blobs.clone());
        for (id, data) in contents.iter().enumerate() {
            assert_eq!(&read(&good, id as u64, data.len() as u64).expect("reads back"), data);
        }
        for (id, data) in contents.iter().enumerate() {
            let len = data.len() as u64;
            let kind = |r: io::Result<Vec<u8>>| r.expect_err("refused").kind();
            assert_eq!(
                kind(read(&good, id as u64, len + 1)),
                io::ErrorKind::UnexpectedEof,
                "entry {id} too short"
            );
            assert_eq!(
                kind(read(&good, id as u64, len - 1)),
                io::ErrorKind::InvalidData,
                "entry {id} too long"
            );
            let mut bad_crc = blobs.clone();
            bad_crc[id].crc32 ^= 1;
            let bad = ZipBlobs::new(upload.clone(), bad_crc);
            assert_eq!(kind(read(&bad, id as u64, len)), io::ErrorKind::InvalidData, "entry {id} CRC");
        }
        assert_eq!(read(&good, 2, 0).expect_err("no such entry").kind(), io::ErrorKind::NotFound);
    }
}
