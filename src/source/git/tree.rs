//! The tree of a commit as a [`Namespace`]: read straight from git objects with gix.
//!
//! Nothing is checked out, so no `.gitattributes` rule (export-ignore, export-subst, eol, LFS
//! smudge filters) and no hook can change a byte: a file's bytes are its blob. Modes map as git
//! defines them: 100644 is a regular file, 100755 an executable, 120000 a symlink whose target is
//! the blob, 040000 a directory, 160000 a submodule. Trees are decoded only along the walk (so a
//! large monorepo costs only the directories on the way to `path`), and blobs are read only for
//! files the selection keeps, into the tree's spool file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;

use gix::objs::tree::EntryKind;

use super::mirror::Fetched;
use crate::package::tree::validate_component;
use crate::package::{Content, EntryPath, Limits, PathError, Spool, SpoolWriter};
use crate::source::Error;
use crate::source::walk::{Namespace, Node};

/// Longest symlink target read (Linux's `PATH_MAX`); a longer one cannot resolve anywhere.
const MAX_LINK_TARGET: u64 = 4096;

/// One entry of a decoded tree.
#[derive(Debug, Clone, Copy)]
struct TreeEntry {
    kind: EntryKind,
    id: gix::ObjectId,
}

type Listing = Rc<BTreeMap<String, TreeEntry>>;

/// The tree of one commit of a mirror.
pub(crate) struct GitNamespace {
    repo: gix::Repository,
    root: gix::ObjectId,
    /// Decoded trees by directory path, so resolving links does not decode a tree twice.
    listings: HashMap<Vec<String>, Listing>,
    spool: SpoolWriter,
    /// Blobs already in the spool (same content at several paths is copied once).
    spooled: HashMap<gix::ObjectId, (u64, u64)>,
    limits: Limits,
    /// Tree entries decoded so far, counted against `max_entries`.
    entries: u64,
    /// Bytes copied into the spool so far.
    bytes: u64,
}

impl GitNamespace {
    /// Opens the commit's tree. Blobs will go to a spool file in `spool_dir`.
    pub(crate) fn open(fetched: &Fetched, limits: &Limits, spool_dir: Option<&Path>) -> Result<Self, Error> {
        let repo = gix::open_opts(&fetched.mirror, gix::open::Options::isolated()).map_err(read_error)?;
        let root =
            repo.find_commit(fetched.commit).map_err(read_error)?.tree_id().map_err(read_error)?.detach();
        Ok(Self {
            repo,
            root,
            listings: HashMap::new(),
            spool: SpoolWriter::new_in(spool_dir).map_err(Error::io)?,
            spooled: HashMap::new(),
            limits: *limits,
            entries: 0,
            bytes: 0,
        })
    }

    /// The decoded tree of directory `dir`, or `None` if `dir` is not a directory of the commit.
    fn listing(&mut self, dir: &[String]) -> Result<Option<Listing>, Error> {
        if let Some(listing) = self.listings.get(dir) {
            return Ok(Some(Rc::clone(listing)));
        }
        let id = match dir.split_last() {
            None => self.root,
            Some((name, parent)) => match self.listing(parent)?.and_then(|p| p.get(name).copied()) {
                Some(TreeEntry { kind: EntryKind::Tree, id }) => id,
                _ => return Ok(None),
            },
        };
        let listing = Rc::new(self.decode_tree(id, dir)?);
        self.listings.insert(dir.to_vec(), Rc::clone(&listing));
        Ok(Some(listing))
    }

    fn decode_tree(
        &mut self,
        id: gix::ObjectId,
        dir: &[String],
    ) -> Result<BTreeMap<String, TreeEntry>, Error> {
        let object = self.repo.find_object(id).map_err(read_error)?;
        if object.kind != gix::object::Kind::Tree {
            return Err(corrupt(format!("object {id} in the tree of /{} is not a tree", dir.join("/"))));
        }
        let mut out = BTreeMap::new();
        for entry in gix::objs::TreeRefIter::from_bytes(&object.data, self.repo.object_hash()) {
            let entry = entry.map_err(|e| corrupt(format!("tree {id}: {e}")))?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(Error::TooManyEntries { max: self.limits.max_entries });
            }
            let shown = || {
                let mut p = dir.join("/");
                if !p.is_empty() {
                    p.push('/');
                }
                p.push_str(&String::from_utf8_lossy(entry.filename));
                p
            };
            let name = std::str::from_utf8(entry.filename)
                .map_err(|_| Error::InvalidPath { path: shown(), reason: PathError::NotUtf8 })?;
            validate_component(name).map_err(|reason| Error::InvalidPath { path: shown(), reason })?;
            let value = TreeEntry { kind: entry.mode.kind(), id: entry.oid.to_owned() };
            if out.insert(name.to_owned(), value).is_some() {
                return Err(Error::DuplicatePath { path: shown() });
            }
        }
        Ok(out)
    }

    fn node(&self, entry: TreeEntry) -> Result<Node<gix::ObjectId>, Error> {
        Ok(match entry.kind {
            EntryKind::Tree => Node::Dir,
            EntryKind::Blob => Node::File { executable: false, blob: entry.id },
            EntryKind::BlobExecutable => Node::File { executable: true, blob: entry.id },
            EntryKind::Link => Node::Symlink(self.link_target(entry.id)?),
            EntryKind::Commit => Node::Submodule,
        })
    }

    /// A symlink's target is its blob. One that is too long or not UTF-8 cannot name anything
    /// in a UTF-8 tree, so it becomes the empty target, which the walk reports as broken if the
    /// selection keeps the link.
    fn link_target(&self, id: gix::ObjectId) -> Result<String, Error> {
        let header = self.repo.find_header(id).map_err(read_error)?;
        if header.size() > MAX_LINK_TARGET {
            return Ok(String::new());
        }
        let blob = self.repo.find_object(id).map_err(read_error)?;
        Ok(String::from_utf8(blob.data.clone()).unwrap_or_default())
    }
}

impl Namespace for GitNamespace {
    type Blob = gix::ObjectId;

    fn lookup(&mut self, dir: &[String], name: &str) -> Result<Option<Node<gix::ObjectId>>, Error> {
        match self.listing(dir)?.and_then(|l| l.get(name).copied()) {
            Some(entry) => self.node(entry).map(Some),
            None => Ok(None),
        }
    }

    fn read_dir(&mut self, dir: &[String]) -> Result<Vec<(String, Node<gix::ObjectId>)>, Error> {
        let Some(listing) = self.listing(dir)? else { return Ok(Vec::new()) };
        listing.iter().map(|(name, entry)| Ok((name.clone(), self.node(*entry)?))).collect()
    }

    fn materialize(&mut self, blob: &gix::ObjectId, path: &EntryPath) -> Result<(Content, u64), Error> {
        if let Some(&(offset, size)) = self.spooled.get(blob) {
            return Ok((Content::Spooled { offset }, size));
        }
        // The size comes from the object header, so a blob that would cross the limit is
        // refused before it is inflated (git objects compress very well).
        let size = self.repo.find_header(*blob).map_err(read_error)?.size();
        if self.bytes.saturating_add(size) > self.limits.max_unpacked_bytes {
            return Err(Error::UnpackedTooLarge { max: self.limits.max_unpacked_bytes });
        }
        let object = self.repo.find_object(*blob).map_err(read_error)?;
        if object.kind != gix::object::Kind::Blob || object.data.len() as u64 != size {
            return Err(corrupt(format!("{path}: object {blob} is not a blob of {size} bytes")));
        }
        let offset = self.spool.append_bytes(&object.data).map_err(Error::io)?;
        self.bytes += size;
        self.spooled.insert(*blob, (offset, size));
        Ok((Content::Spooled { offset }, size))
    }

    fn into_spool(self) -> Result<Option<Spool>, Error> {
        self.spool.finish().map(Some).map_err(Error::io)
    }
}

fn read_error(e: gix::Error) -> Error {
    Error::GitRead(Box::new(e))
}

fn corrupt(message: String) -> Error {
    Error::GitRead(message.into())
}
