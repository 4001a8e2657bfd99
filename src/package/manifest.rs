//! Reading a package's central directory: the manifest (path, mode, size, CRC-32 of every entry).
//!
//! Split into two steps that work on byte slices, so a store can fetch only the bytes it needs
//! (the tail of the object, then the central directory) with ranged reads instead of a full
//! download: [`locate`] reads the end-of-central-directory records, [`parse`] reads the entries.
//! The parser also exposes the raw header fields (time, flags, extra-field length, version made
//! by) so tests can guard every rule of the format.

use std::io::{self, Read, Seek, SeekFrom};

use serde::Serialize;

/// Bytes at the end of a package that always contain the end-of-central-directory records:
/// the ZIP64 record (56), its locator (20) and the classic record (22), with no comment.
pub const TAIL_BYTES: u64 = 56 + 20 + 22;

/// Most central-directory bytes [`read`] accepts, so a corrupt size cannot force a huge read.
pub const MAX_CENTRAL_DIRECTORY_BYTES: u64 = 64 * 1024 * 1024;

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;

/// The data is not a package this module can read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not a zip written without a comment, or truncated.
    #[error("no end-of-central-directory record: {0}")]
    Malformed(&'static str),
    /// Reading failed.
    #[error("reading the package")]
    Io(#[from] io::Error),
}

/// Where the central directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CentralDirectory {
    /// Offset of the first central header.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Number of entries.
    pub entries: u64,
}

/// One entry of a package, as its central header describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestEntry {
    /// Path in the zip (lossy UTF-8 for foreign zips).
    pub path: String,
    /// Unix mode from the external attributes, e.g. `0o100644`.
    pub mode: u32,
    /// Uncompressed size.
    pub size: u64,
    /// CRC-32 of the uncompressed bytes.
    pub crc32: u32,
    /// Compressed size.
    #[serde(skip)]
    pub compressed_size: u64,
    /// 0 stored, 8 deflate.
    #[serde(skip)]
    pub method: u16,
    /// General purpose flags.
    #[serde(skip)]
    pub flags: u16,
    /// DOS time field.
    #[serde(skip)]
    pub dos_time: u16,
    /// DOS date field.
    #[serde(skip)]
    pub dos_date: u16,
    /// Version made by (high byte: host system, 3 = Unix).
    #[serde(skip)]
    pub version_made_by: u16,
    /// Length of the extra field.
    #[serde(skip)]
    pub extra_len: u16,
    /// Length of the entry comment.
    #[serde(skip)]
    pub comment_len: u16,
    /// Internal attributes.
    #[serde(skip)]
    pub internal_attributes: u16,
    /// Offset of the local header.
    #[serde(skip)]
    pub local_header_offset: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Finds the central directory from the last bytes of a package (`tail`, at most
/// [`TAIL_BYTES`] needed) and the package's total length.
pub fn locate(tail: &[u8], file_len: u64) -> Result<CentralDirectory, ManifestError> {
    if tail.len() < 22 {
        return Err(ManifestError::Malformed("shorter than 22 bytes"));
    }
    let eocd = &tail[tail.len() - 22..];
    if u32_at(eocd, 0) != EOCD_SIG {
        return Err(ManifestError::Malformed("not at the end of the file"));
    }
    let mut cd = CentralDirectory {
        offset: u64::from(u32_at(eocd, 16)),
        size: u64::from(u32_at(eocd, 12)),
        entries: u64::from(u16_at(eocd, 10)),
    };
    let zip64 = cd.offset == 0xFFFF_FFFF || cd.size == 0xFFFF_FFFF || cd.entries == 0xFFFF;
    if zip64 {
        if tail.len() < 22 + 20 + 56 {
            return Err(ManifestError::Malformed("ZIP64 records not in the tail"));
        }
        let locator = &tail[tail.len() - 42..tail.len() - 22];
        let record = &tail[tail.len() - 98..tail.len() - 42];
        if u32_at(locator, 0) != ZIP64_LOCATOR_SIG || u32_at(record, 0) != ZIP64_EOCD_SIG {
            return Err(ManifestError::Malformed("bad ZIP64 records"));
        }
        cd = CentralDirectory {
            entries: u64_at(record, 32),
            size: u64_at(record, 40),
            offset: u64_at(record, 48),
        };
    }
    if cd.offset.checked_add(cd.size).is_none_or(|end| end > file_len) {
        return Err(ManifestError::Malformed("central directory outside the file"));
    }
    Ok(cd)
}

/// Parses the central directory bytes located by [`locate`].
pub fn parse(bytes: &[u8], expected_entries: u64) -> Result<Vec<ManifestEntry>, ManifestError> {
    let mut out = Vec::with_capacity(usize::try_from(expected_entries.min(1 << 20)).unwrap_or(0));
    let mut at = 0usize;
    while at < bytes.len() {
        let h = bytes.get(at..at + 46).ok_or(ManifestError::Malformed("truncated header"))?;
        if u32_at(h, 0) != CENTRAL_SIG {
            return Err(ManifestError::Malformed("bad central header signature"));
        }
        let name_len = usize::from(u16_at(h, 28));
        let extra_len = u16_at(h, 30);
        let comment_len = u16_at(h, 32);
        let end = at + 46 + name_len + usize::from(extra_len) + usize::from(comment_len);
        let name =
            bytes.get(at + 46..at + 46 + name_len).ok_or(ManifestError::Malformed("truncated name"))?;
        let extra = bytes
            .get(at + 46 + name_len..at + 46 + name_len + usize::from(extra_len))
            .ok_or(ManifestError::Malformed("truncated extra field"))?;
        let mut size = u64::from(u32_at(h, 24));
        let mut compressed_size = u64::from(u32_at(h, 20));
        let mut local_header_offset = u64::from(u32_at(h, 42));
        apply_zip64_extra(extra, &mut size, &mut compressed_size, &mut local_header_offset)?;
        out.push(ManifestEntry {
            path: String::from_utf8_lossy(name).into_owned(),
            mode: u32_at(h, 38) >> 16,
            size,
            crc32: u32_at(h, 16),
            compressed_size,
            method: u16_at(h, 10),
            flags: u16_at(h, 8),
            dos_time: u16_at(h, 12),
            dos_date: u16_at(h, 14),
            version_made_by: u16_at(h, 4),
            extra_len,
            comment_len,
            internal_attributes: u16_at(h, 36),
            local_header_offset,
        });
        at = end;
    }
    if out.len() as u64 != expected_entries {
        return Err(ManifestError::Malformed("entry count does not match"));
    }
    Ok(out)
}

/// Replaces saturated 32-bit fields with their ZIP64 extra-field values, in the spec's order.
fn apply_zip64_extra(
    mut extra: &[u8],
    size: &mut u64,
    compressed: &mut u64,
    offset: &mut u64,
) -> Result<(), ManifestError> {
    while extra.len() >= 4 {
        let id = u16_at(extra, 0);
        let len = usize::from(u16_at(extra, 2));
        let data = extra.get(4..4 + len).ok_or(ManifestError::Malformed("truncated extra field"))?;
        if id == 0x0001 {
            let mut at = 0;
            for field in [size, compressed, offset] {
                if *field == 0xFFFF_FFFF {
                    let v = data.get(at..at + 8).ok_or(ManifestError::Malformed("short ZIP64 field"))?;
                    *field = u64_at(v, 0);
                    at += 8;
                }
            }
            return Ok(());
        }
        extra = &extra[4 + len..];
    }
    Ok(())
}

/// Reads the manifest of a package from a seekable reader (a local file).
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub fn read<R: Read + Seek>(mut r: R) -> Result<Vec<ManifestEntry>, ManifestError> {
    let len = r.seek(SeekFrom::End(0))?;
    let tail_len = TAIL_BYTES.min(len);
    r.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; usize::try_from(tail_len).unwrap_or(0)];
    r.read_exact(&mut tail)?;
    let cd = locate(&tail, len)?;
    if cd.size > MAX_CENTRAL_DIRECTORY_BYTES {
        return Err(ManifestError::Malformed("central directory too large"));
    }
    r.seek(SeekFrom::Start(cd.offset))?;
    let mut bytes = vec![0u8; usize::try_from(cd.size).unwrap_or(0)];
    r.read_exact(&mut bytes)?;
    parse(&bytes, cd.entries)
}
