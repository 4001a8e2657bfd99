//! zip input: re-canonicalize an existing zip (built by another tool, or on Windows).
//!
//! Only names, the owner-exec bit and contents are taken from it. Names must be UTF-8 and use
//! `/` (a backslash is refused, not converted, since on Linux it is a legal name character).
//! The exec bit comes from Unix external attributes when the entry has them, else the file is
//! `0644`. Entries are decompressed with a cap on the total and on the ratio to the archive size
//! (zip bombs, including overlapping-entry bombs), and declared sizes and CRCs are verified.
//!
//! One parse, no differentials: a zip names each entry twice (central directory and local
//! header), and readers disagree on which one counts, so an entry whose two names differ is
//! refused rather than read by one of them. A directory entry must be empty, as in tar:
//! bytes hidden under a directory name are what another extractor would write somewhere.

use std::io::{self, Read, Seek};

use zip::result::ZipError;
use zip::{CompressionMethod, System, ZipArchive};

use super::Error;
use super::memory::{Kind, MemNamespace};
use crate::package::{Limits, Spool};

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
            ns.insert(&name, Kind::File { executable, data: &mut exact, size, upload_offset: None })?;
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
