//! The namespace of an archive: its entries as an in-memory tree, their bytes in a spool (or in
//! the archive itself).
//!
//! Archive decoders (tar, zip) insert entries one by one; this module owns the rules every
//! archive shares: path normalization and validation, duplicate and file/directory conflicts,
//! hard links, and the entry and path limits. The archive is never unpacked to disk under its
//! own names.
//!
//! Where file bytes live depends on the archive: decompressed contents (tar.gz, zip) are copied
//! into a spool, but the files of a raw tar already lie uncompressed in the upload, so a
//! namespace [`over_upload`](MemNamespace::over_upload) only records where: no copy, no temp
//! space. Their bytes are still read once while decoding (to find the next header and to prove
//! the archive is whole), just not written anywhere.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::Error;
use super::walk::{Listing, Namespace, Node};
use crate::package::{Content, EntryPath, Limits, Spool, SpoolWriter};

/// Where the files' bytes go.
#[derive(Debug)]
enum Contents {
    /// Copied into a new spool.
    Spool(SpoolWriter),
    /// Left in the upload, which becomes the tree's spool.
    Upload(Spool),
}

/// A file's bytes in the spool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpoolRange {
    offset: u64,
    size: u64,
}

#[derive(Debug)]
enum MemNode {
    File { executable: bool, range: SpoolRange },
    Dir(BTreeMap<String, MemNode>),
    Symlink(String),
}

/// An archive's entries, as inserted so far.
#[derive(Debug)]
pub(crate) struct MemNamespace {
    root: BTreeMap<String, MemNode>,
    contents: Contents,
    limits: Limits,
    entries: u64,
    bytes: u64,
}

/// What an inserted entry is.
pub(crate) enum Kind<'a, R> {
    /// A regular file: `size` bytes to read from `data`, which begin at `upload_offset` in the
    /// upload when the decoder knows (a raw tar).
    File {
        executable: bool,
        data: &'a mut R,
        size: u64,
        upload_offset: Option<u64>,
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
        Ok(Self::with(Contents::Spool(spool), limits))
    }

    /// A namespace whose file bytes stay in `upload`, at the offsets the decoder gives.
    pub(crate) fn over_upload(limits: &Limits, upload: Spool) -> Self {
        Self::with(Contents::Upload(upload), limits)
    }

    fn with(contents: Contents, limits: &Limits) -> Self {
        Self { root: BTreeMap::new(), contents, limits: *limits, entries: 0, bytes: 0 }
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
                    Some(MemNode::File { executable, range }) => {
                        MemNode::File { executable: *executable, range: *range }
                    }
                    _ => {
                        return Err(Error::InvalidHardLink {
                            path: path(),
                            target: String::from_utf8_lossy(&target).into_owned(),
                        });
                    }
                }
            }
            Kind::File { executable, data, size, upload_offset } => {
                // Checked before reading so a lying size cannot make us spool past the limit.
                self.bytes = self.bytes.saturating_add(size);
                if self.bytes > self.limits.max_unpacked_bytes {
                    return Err(Error::UnpackedTooLarge { max: self.limits.max_unpacked_bytes });
                }
                let offset = match (&mut self.contents, upload_offset) {
                    (Contents::Upload(_), Some(offset)) => {
                        super::skip_exactly(&mut data.take(size), size)?;
                        offset
                    }
                    (Contents::Spool(spool), _) => super::copy_into(spool, &mut data.take(size), size)?,
                    (Contents::Upload(_), None) => {
                        return Err(Error::Io(std::io::Error::other(
                            "a decoder over the upload gave a file without its offset",
                        )));
                    }
                };
                MemNode::File { executable, range: SpoolRange { offset, size } }
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

fn to_node(node: &MemNode) -> Node<SpoolRange> {
    match node {
        MemNode::File { executable, range } => Node::File { executable: *executable, blob: *range },
        MemNode::Dir(_) => Node::Dir,
        MemNode::Symlink(t) => Node::Symlink(t.clone()),
    }
}

impl Namespace for MemNamespace {
    type Blob = SpoolRange;

    fn lookup(&mut self, dir: &[String], name: &str) -> Result<Option<Node<SpoolRange>>, Error> {
        Ok(self.dir(dir).and_then(|d| d.get(name)).map(to_node))
    }

    fn read_dir(&mut self, dir: &[String]) -> Result<Listing<SpoolRange>, Error> {
        Ok(self
            .dir(dir)
            .map(|d| d.iter().map(|(k, v)| (k.clone(), to_node(v))).collect())
            .unwrap_or_default())
    }

    fn materialize(&mut self, blob: &SpoolRange, _path: &EntryPath) -> Result<(Content, u64), Error> {
        Ok((Content::Spooled { offset: blob.offset }, blob.size))
    }

    fn into_spool(self) -> Result<Option<Spool>, Error> {
        match self.contents {
            Contents::Spool(spool) => spool.finish().map(Some).map_err(Error::io),
            Contents::Upload(upload) => Ok(Some(upload)),
        }
    }
}
