//! The namespace of an archive: its entries as an in-memory tree, their bytes in a spool (or in
//! the archive itself).
//!
//! Archive decoders (tar, zip) insert entries one by one; this module owns the rules every
//! archive shares: path normalization and validation, duplicate and file/directory conflicts,
//! hard links, and the entry and path limits. The archive is never unpacked to disk under its
//! own names.
//!
//! Where file bytes live depends on the archive, and on the room there is:
//!
//! - a raw tar's files already lie uncompressed in the upload, so a namespace
//!   [`over_upload`](MemNamespace::over_upload) only records where: no copy, no temp space;
//! - a zip's entries are compressed one by one, so a namespace
//!   [`over_zip`](MemNamespace::over_zip) records where each one starts in the upload, and the
//!   packer inflates it from there (no copy either);
//! - a tar.gz's files are only reachable by decompressing the stream in order, which is not the
//!   zip's order: they are copied into a spool ([`new`](MemNamespace::new)), or, when the disk
//!   has no room for one, a namespace [`over_stream`](MemNamespace::over_stream) records their
//!   offsets in the decompressed stream, which the packer reads again in passes.
//!
//! Whatever the mode, every file's bytes are read once while decoding (to find the next header,
//! to check a CRC, to prove the archive is whole); they are just not written anywhere but the
//! spool.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::Error;
use super::walk::{Listing, Namespace, Node};
use super::zip::{ZipBlob, ZipBlobs};
use crate::package::{Content, Contents, EntryPath, Limits, Spool, SpoolWriter, StreamSource};

/// Where the files' bytes go.
#[derive(Debug)]
enum Stash {
    /// Copied into a new spool.
    Spool(SpoolWriter),
    /// Left in the upload (a raw tar), which becomes the tree's spool.
    Upload(Spool),
    /// Left in a stream read again at packing time (a tar.gz without room for a spool).
    Stream(Arc<dyn StreamSource>),
    /// Left compressed in the upload (a zip); a file's handle indexes `blobs`.
    Zip { upload: Spool, blobs: Vec<ZipBlob> },
}

/// A file's bytes: `size` of them at `at`, an offset or a blob index depending on the [`Stash`]
/// (and, left in a stream, their CRC-32, which every later read is checked against).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    at: u64,
    size: u64,
    crc32: u32,
}

#[derive(Debug)]
enum MemNode {
    File { executable: bool, bytes: Stored },
    Dir(BTreeMap<String, MemNode>),
    Symlink(String),
}

/// An archive's entries, as inserted so far.
#[derive(Debug)]
pub(crate) struct MemNamespace {
    root: BTreeMap<String, MemNode>,
    stash: Stash,
    limits: Limits,
    entries: u64,
    bytes: u64,
}

/// Where a decoder found a file's bytes, besides the reader it hands over with them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Found {
    /// At this offset of the tar stream: the upload itself for a raw tar, the decompressed
    /// stream for a tar.gz.
    TarOffset(u64),
    /// A zip entry of the upload.
    ZipEntry(ZipBlob),
    /// Only in the reader (test namespaces).
    #[cfg(test)]
    Nowhere,
}

/// What an inserted entry is.
pub(crate) enum Kind<'a, R> {
    /// A regular file: `size` bytes to read from `data`, found where `found` says.
    File {
        executable: bool,
        data: &'a mut R,
        size: u64,
        found: Found,
    },
    Dir,
    Symlink(String),
    HardLink(Vec<u8>),
}

impl MemNamespace {
    /// A namespace whose file bytes are copied into a new spool (in memory up to
    /// [`crate::package::MEMORY_SPOOL_BYTES`], then a temp file in `spool_dir`).
    pub(crate) fn new(limits: &Limits, spool_dir: Option<&Path>) -> Result<Self, Error> {
        let spool = SpoolWriter::new_in(spool_dir).map_err(Error::io)?;
        Ok(Self::with(Stash::Spool(spool), limits))
    }

    /// A namespace whose file bytes stay in `upload` (a raw tar), at the offsets the decoder gives.
    pub(crate) fn over_upload(limits: &Limits, upload: Spool) -> Self {
        Self::with(Stash::Upload(upload), limits)
    }

    /// A namespace whose file bytes stay in the decompressed `stream` (a tar.gz), at the
    /// offsets the decoder gives: no temp space at all, at the price of packing in passes.
    pub(crate) fn over_stream(limits: &Limits, stream: Arc<dyn StreamSource>) -> Self {
        Self::with(Stash::Stream(stream), limits)
    }

    /// A namespace whose file bytes stay compressed in `upload` (a zip), inflated at packing time.
    pub(crate) fn over_zip(limits: &Limits, upload: Spool) -> Self {
        Self::with(Stash::Zip { upload, blobs: Vec::new() }, limits)
    }

    fn with(stash: Stash, limits: &Limits) -> Self {
        Self { root: BTreeMap::new(), stash, limits: *limits, entries: 0, bytes: 0 }
    }

    /// Counts one archive member (including members that only carry metadata) against the
    /// entry limit.
    pub(crate) fn count_entry(&mut self) -> Result<(), Error> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(Error::TooManyEntries { max: self.limits.max_entries });
        }
        Ok(())
    }

    /// Normalizes an archive member name into components.
    ///
    /// Leading `./` is what `tar -C dir -cf x.tar .` writes, so it is dropped; the member
    /// called `.` or `./` is the root directory. Anything else that is not a clean relative path
    /// (absolute, `..`, empty or `.` components, backslashes, control characters, non-UTF-8) is
    /// rejected rather than repaired, because repairing would let two members alias one path.
    fn components(&self, raw: &[u8], is_dir: bool) -> Result<Vec<String>, Error> {
        let lossy = || String::from_utf8_lossy(raw).into_owned();
        let mut s = std::str::from_utf8(raw)
            .map_err(|_| Error::InvalidPath { path: lossy(), reason: crate::package::PathError::NotUtf8 })?;
        while let Some(rest) = s.strip_prefix("./") {
            s = rest;
        }
        if is_dir {
            s = s.strip_suffix('/').unwrap_or(s);
        }
        if s.is_empty() || s == "." {
            return if is_dir {
                Ok(Vec::new())
            } else {
                Err(Error::InvalidPath { path: lossy(), reason: crate::package::PathError::Empty })
            };
        }
        if s.len() as u64 > self.limits.max_path_bytes {
            return Err(Error::PathTooLong {
                path: s.chars().take(128).collect(),
                max: self.limits.max_path_bytes,
            });
        }
        let path = EntryPath::new(s).map_err(|reason| Error::InvalidPath { path: lossy(), reason })?;
        if path.depth() as u64 > self.limits.max_path_depth {
            return Err(Error::PathTooDeep { path: path.to_string(), max: self.limits.max_path_depth });
        }
        Ok(path.as_str().split('/').map(str::to_owned).collect())
    }

    /// Inserts one member. Its directories are created implicitly.
    pub(crate) fn insert<R: Read>(&mut self, raw_path: &[u8], kind: Kind<'_, R>) -> Result<(), Error> {
        let is_dir = matches!(kind, Kind::Dir);
        let comps = self.components(raw_path, is_dir)?;
        let Some((name, parents)) = comps.split_last() else {
            return Ok(()); // the root directory itself
        };
        let path = || comps.join("/");
        let node = match kind {
            Kind::Dir => MemNode::Dir(BTreeMap::new()),
            Kind::Symlink(target) => MemNode::Symlink(target),
            Kind::HardLink(target) => {
                let target_comps = self.components(&target, false)?;
                match self.get(&target_comps) {
                    Some(MemNode::File { executable, bytes }) => {
                        MemNode::File { executable: *executable, bytes: *bytes }
                    }
                    _ => {
                        return Err(Error::InvalidHardLink {
                            path: path(),
                            target: String::from_utf8_lossy(&target).into_owned(),
                        });
                    }
                }
            }
            Kind::File { executable, data, size, found } => {
                // Checked before reading so a lying size cannot make us spool past the limit.
                self.bytes = self.bytes.saturating_add(size);
                if self.bytes > self.limits.max_unpacked_bytes {
                    return Err(Error::UnpackedTooLarge { max: self.limits.max_unpacked_bytes });
                }
                let mut data = data.take(size);
                let (at, crc32) = match (&mut self.stash, found) {
                    (Stash::Spool(spool), _) => (super::copy_into(spool, &mut data, size)?, 0),
                    (Stash::Upload(_), Found::TarOffset(offset)) => {
                        super::skip_exactly(&mut data, size, false)?;
                        (offset, 0)
                    }
                    (Stash::Stream(_), Found::TarOffset(offset)) => {
                        (offset, super::skip_exactly(&mut data, size, true)?)
                    }
                    (Stash::Zip { blobs, .. }, Found::ZipEntry(blob)) => {
                        super::skip_exactly(&mut data, size, false)?;
                        blobs.push(blob);
                        (blobs.len() as u64 - 1, 0)
                    }
                    _ => {
                        return Err(Error::Io(std::io::Error::other(
                            "a decoder gave a file without saying where its bytes are",
                        )));
                    }
                };
                MemNode::File { executable, bytes: Stored { at, size, crc32 } }
            }
        };
        let mut dir = &mut self.root;
        for (i, c) in parents.iter().enumerate() {
            let next = dir.entry(c.clone()).or_insert_with(|| MemNode::Dir(BTreeMap::new()));
            match next {
                MemNode::Dir(children) => dir = children,
                _ => {
                    return Err(Error::PathConflict { path: comps[..=i].join("/") });
                }
            }
        }
        match (dir.get(name), &node) {
            (None, _) => {
                dir.insert(name.clone(), node);
                Ok(())
            }
            // A directory listed twice, or after its contents, is harmless.
            (Some(MemNode::Dir(_)), MemNode::Dir(_)) => Ok(()),
            (Some(MemNode::Dir(_)), _) | (Some(_), MemNode::Dir(_)) => {
                Err(Error::PathConflict { path: path() })
            }
            (Some(_), _) => Err(Error::DuplicatePath { path: path() }),
        }
    }

    fn get(&self, comps: &[String]) -> Option<&MemNode> {
        let (name, parents) = comps.split_last()?;
        let mut dir = &self.root;
        for c in parents {
            match dir.get(c)? {
                MemNode::Dir(children) => dir = children,
                _ => return None,
            }
        }
        dir.get(name)
    }

    fn dir(&self, comps: &[String]) -> Option<&BTreeMap<String, MemNode>> {
        if comps.is_empty() {
            return Some(&self.root);
        }
        match self.get(comps)? {
            MemNode::Dir(children) => Some(children),
            _ => None,
        }
    }
}

fn to_node(node: &MemNode) -> Node<Stored> {
    match node {
        MemNode::File { executable, bytes } => Node::File { executable: *executable, blob: *bytes },
        MemNode::Dir(_) => Node::Dir,
        MemNode::Symlink(t) => Node::Symlink(t.clone()),
    }
}

impl Namespace for MemNamespace {
    type Blob = Stored;

    fn lookup(&mut self, dir: &[String], name: &str) -> Result<Option<Node<Stored>>, Error> {
        Ok(self.dir(dir).and_then(|d| d.get(name)).map(to_node))
    }

    fn read_dir(&mut self, dir: &[String]) -> Result<Listing<Stored>, Error> {
        Ok(self
            .dir(dir)
            .map(|d| d.iter().map(|(k, v)| (k.clone(), to_node(v))).collect())
            .unwrap_or_default())
    }

    fn materialize(&mut self, blob: &Stored, _path: &EntryPath) -> Result<(Content, u64), Error> {
        let content = match self.stash {
            Stash::Spool(_) | Stash::Upload(_) => Content::Spooled { offset: blob.at },
            Stash::Stream(_) => Content::Streamed { offset: blob.at, crc32: blob.crc32 },
            Stash::Zip { .. } => Content::Blob { id: blob.at },
        };
        Ok((content, blob.size))
    }

    fn into_contents(self) -> Result<Contents, Error> {
        Ok(match self.stash {
            Stash::Spool(spool) => Contents::Spool(spool.finish().map_err(Error::io)?),
            Stash::Upload(upload) => Contents::Spool(upload),
            Stash::Stream(stream) => Contents::Stream(stream),
            Stash::Zip { upload, blobs } => Contents::Blobs(Arc::new(ZipBlobs::new(upload, blobs))),
        })
    }
}
