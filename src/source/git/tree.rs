//! The tree of a commit as a [`Namespace`]: read straight from git objects with gix.
//!
//! Nothing is checked out, so no `.gitattributes` rule (export-ignore, export-subst, eol, LFS
//! smudge filters) and no hook can change a byte: a file's bytes are its blob. Modes map as git
//! defines them: 100644 is a regular file, 100755 an executable, 120000 a symlink whose target is
//! the blob, 040000 a directory, 160000 a submodule. Trees are decoded only along the walk (so a
//! large monorepo costs only the directories on the way to `path`), and of the blobs only the
//! headers (kind and size) of files the selection keeps.
//!
//! Blobs are not copied anywhere: they are already on disk, in the mirror, and the packer reads
//! each kept one from the mirror's object database when it compresses it ([`GitBlobs`]). No
//! temp space is needed, whatever the size of the tree and the room left on the disk, and each
//! blob is inflated once instead of being inflated, spooled and read back. This is safe without
//! the mirror's lock because nothing ever deletes objects from a mirror (see `mirror`). A gix
//! repository handle is not `Sync`, so each packing thread opens its own.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use gix::objs::tree::EntryKind;

use super::mirror::Fetched;
use crate::package::tree::validate_component;
use crate::package::{BlobReader, BlobSource, Content, Contents, EntryPath, Limits, PathError};
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
    mirror: PathBuf,
    root: gix::ObjectId,
    /// Decoded trees by directory path, so resolving links does not decode a tree twice.
    listings: HashMap<Vec<String>, Listing>,
    /// The kept blobs, in the order they were first kept: a blob's id in [`GitBlobs`] is its
    /// index here.
    blobs: Vec<gix::ObjectId>,
    /// Kept blobs: id and size (the same content at several paths is one blob).
    kept: HashMap<gix::ObjectId, (u64, u64)>,
    limits: Limits,
    /// Tree entries decoded so far, counted against `max_entries`.
    entries: u64,
    /// Bytes of distinct kept blobs so far.
    bytes: u64,
}

impl GitNamespace {
    /// Opens the commit's tree.
    pub(crate) fn open(fetched: &Fetched, limits: &Limits) -> Result<Self, Error> {
        let repo = open_mirror(&fetched.mirror).map_err(read_error)?;
        let root =
            repo.find_commit(fetched.commit).map_err(read_error)?.tree_id().map_err(read_error)?.detach();
        Ok(Self {
            repo,
            mirror: fetched.mirror.clone(),
            root,
            listings: HashMap::new(),
            blobs: Vec::new(),
            kept: HashMap::new(),
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
        if let Some(&(id, size)) = self.kept.get(blob) {
            return Ok((Content::Blob { id }, size));
        }
        // Only the header: the size is checked against the limit, and the kind against the
        // tree's word, without inflating the blob (git objects compress very well).
        let header = self.repo.find_header(*blob).map_err(read_error)?;
        let size = header.size();
        if header.kind() != gix::object::Kind::Blob {
            return Err(corrupt(format!("{path}: object {blob} is not a blob")));
        }
        if self.bytes.saturating_add(size) > self.limits.max_unpacked_bytes {
            return Err(Error::UnpackedTooLarge { max: self.limits.max_unpacked_bytes });
        }
        self.bytes += size;
        let id = self.blobs.len() as u64;
        self.blobs.push(*blob);
        self.kept.insert(*blob, (id, size));
        Ok((Content::Blob { id }, size))
    }

    fn into_contents(self) -> Result<Contents, Error> {
        Ok(Contents::Blobs(Arc::new(GitBlobs { mirror: self.mirror, blobs: self.blobs })))
    }
}

/// Opens a mirror for reading objects, with none of the host's configuration.
fn open_mirror(mirror: &std::path::Path) -> Result<gix::Repository, gix::Error> {
    gix::open_opts(mirror, gix::open::Options::isolated())
}

/// The kept blobs of one commit, read from the mirror's object database at packing time.
#[derive(Debug)]
pub(crate) struct GitBlobs {
    mirror: PathBuf,
    blobs: Vec<gix::ObjectId>,
}

impl BlobSource for GitBlobs {
    /// Opens the mirror again for this thread: one handle per packing thread, none shared.
    fn reader(&self) -> io::Result<Box<dyn BlobReader + '_>> {
        let repo = open_mirror(&self.mirror).map_err(io::Error::other)?;
        Ok(Box::new(GitBlobReader { repo, blobs: &self.blobs }))
    }
}

struct GitBlobReader<'a> {
    repo: gix::Repository,
    blobs: &'a [gix::ObjectId],
}

impl BlobReader for GitBlobReader<'_> {
    fn open(&mut self, id: u64, size: u64) -> io::Result<Box<dyn Read>> {
        let oid = usize::try_from(id).ok().and_then(|i| self.blobs.get(i)).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no kept blob {id} in this tree"))
        })?;
        let object = self.repo.find_object(*oid).map_err(io::Error::other)?.detach();
        if object.kind != gix::object::Kind::Blob || object.data.len() as u64 != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("object {oid} is not a blob of {size} bytes"),
            ));
        }
        Ok(Box::new(io::Cursor::new(object.data)))
    }
}

fn read_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::GitRead(Box::new(e))
}

fn corrupt(message: String) -> Error {
    Error::GitRead(message.into())
}
