//! From any input's namespace to a [`SourceTree`]: one walk, one symlink policy, one selection.
//!
//! Every input kind (archive in memory, local directory, git tree) exposes its files through the
//! small [`Namespace`] trait: look up one name in a directory, list a directory. The walk below
//! is the only code that applies `strip_components`, `path`, include/exclude and the symlink
//! rules, so all input kinds agree on the result byte for byte.
//!
//! Symlinks are resolved hop by hop inside the namespace itself, never through the real file
//! system: a link to a file of the tree becomes a copy of that file, a link to a directory of
//! the tree becomes a copy of that subtree, and a link that is absolute, leaves the root, is
//! broken or loops is rejected, but only if the selection would keep it (a broken link inside an
//! excluded directory does not matter).
//!
//! # Bounded work
//!
//! Copying subtrees through links makes the walk's work independent of the input's size: 41
//! directories holding four links each to the next one are a 110 KB tar whose expansion has
//! 4^40 paths, and the cycle check does not help (there is no cycle). Limits on what the walk
//! *keeps* (entries, bytes) do not help either when the selection drops the files it finds. So
//! the walk counts its own work and stops at the first of three [`Limits`]:
//!
//! - [`Limits::max_symlinks`]: links followed, counting every hop of every resolution;
//! - [`Limits::max_walk_dirs`]: directories entered, counting each re-entry through a link;
//! - [`Limits::max_walk_steps`]: everything else it does, one step per directory listed, per
//!   entry of a listing examined and per path component resolved: every namespace call and every
//!   node it returns is paid for before it is processed.
//!
//! Each step also checks the request's [`CancelFlag`], so a request that went away stops its
//! walk at the next step.

use super::Error;
use super::select::Selector;
use crate::package::{CancelFlag, Content, Entry, EntryPath, Limits, Mode, SourceTree, Spool, TreeError};

/// Most symlinks followed while resolving one path (Linux's `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;

/// What a name denotes in a namespace. `B` is how the namespace finds a file's bytes later.
#[derive(Debug, Clone)]
pub(crate) enum Node<B> {
    /// A regular file.
    File { executable: bool, blob: B },
    /// A directory.
    Dir,
    /// A symbolic link and its target, as stored.
    Symlink(String),
    /// Anything else (device, FIFO, socket): refused if the selection keeps it.
    Special(&'static str),
    /// A git submodule (gitlink, mode 160000): the commit of another repository, whose files are
    /// not in this one. Refused with its own error if the selection keeps it.
    Submodule,
}

/// A directory listing: names and what they denote.
pub(crate) type Listing<B> = Vec<(String, Node<B>)>;

/// An input's file namespace. Directory paths given to it are lists of components that the walk
/// has already resolved to real directories (no symlink among them).
pub(crate) trait Namespace {
    /// A handle to one file's bytes.
    type Blob: Clone;

    /// The node called `name` in directory `dir`, without following it if it is a link.
    fn lookup(&mut self, dir: &[String], name: &str) -> Result<Option<Node<Self::Blob>>, Error>;

    /// The entries of directory `dir`, in any order.
    fn read_dir(&mut self, dir: &[String]) -> Result<Listing<Self::Blob>, Error>;

    /// Makes a file's bytes readable at packing time; returns where they are and their size.
    fn materialize(&mut self, blob: &Self::Blob, path: &EntryPath) -> Result<(Content, u64), Error>;

    /// Hands over the spool holding materialized bytes, if the namespace made one.
    fn into_spool(self) -> Result<Option<Spool>, Error>;
}

/// Walks `ns` and builds the tree the selection asks for.
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub(crate) fn build_tree<N: Namespace>(
    ns: N,
    selector: &Selector,
    limits: &Limits,
    cancel: &CancelFlag,
) -> Result<SourceTree, Error> {
    build_tree_counted(ns, selector, limits, cancel).0
}

/// [`build_tree`], also returning the work the walk did (whether it succeeded or not).
pub(crate) fn build_tree_counted<N: Namespace>(
    mut ns: N,
    selector: &Selector,
    limits: &Limits,
    cancel: &CancelFlag,
) -> (Result<SourceTree, Error>, Work) {
    let mut walk = Walk {
        ns: &mut ns,
        sel: selector,
        limits,
        cancel,
        entries: Vec::new(),
        bytes: 0,
        stack: Vec::new(),
        sub_kind: if selector.sub.is_empty() { SubKind::Dir } else { SubKind::Missing },
        work: Work::default(),
    };
    let walked = walk.dir(Vec::new(), &mut Vec::new());
    let Walk { entries, sub_kind, work, .. } = walk;
    let result = walked.and_then(|()| {
        let sub = || selector.sub.join("/");
        match sub_kind {
            SubKind::Dir => {}
            SubKind::Missing => return Err(Error::SubPathNotFound { path: sub() }),
            SubKind::NotDir => return Err(Error::SubPathNotDirectory { path: sub() }),
        }
        let spool = ns.into_spool()?;
        SourceTree::new(entries, spool).map_err(|e| match e {
            TreeError::Duplicate(p) => Error::DuplicatePath { path: p.to_string() },
            TreeError::FileDirConflict(p) => Error::PathConflict { path: p.to_string() },
            TreeError::Empty => Error::EmptyPackage,
        })
    });
    (result, work)
}

/// The walk's own work, as counted against [`Limits::max_walk_steps`],
/// [`Limits::max_symlinks`] and [`Limits::max_walk_dirs`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Work {
    /// Directories listed, entries of listings examined, path components resolved.
    pub(crate) steps: u64,
    /// Symlinks followed (every hop).
    pub(crate) links: u64,
    /// Directories entered (re-entries through links included).
    pub(crate) dirs: u64,
}

/// What the sub-path turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubKind {
    Missing,
    Dir,
    NotDir,
}

/// Where a path of the input lies relative to the selection.
enum Place {
    /// Above the strip level or on the way to the sub-path: directories are entered, files dropped.
    Route,
    /// The sub-path itself.
    SubRoot,
    /// Inside the sub-path, at this package path.
    Inside(String),
    /// Elsewhere: ignored.
    Outside,
}

/// The result of resolving a symlink.
enum Target<B> {
    File { executable: bool, blob: B },
    Dir(Vec<String>),
    Special(&'static str),
    Submodule,
}

/// Why a link cannot be followed: an error only where the selection keeps the link.
enum LinkError {
    Escapes,
    Broken,
    Loop,
}

/// How a resolution ended when it found no target.
enum Unresolved {
    /// This link cannot be followed.
    Link(LinkError),
    /// The walk must stop (a limit on its work, or cancellation), whatever the selection.
    Stop(Error),
}

impl From<Error> for Unresolved {
    fn from(e: Error) -> Self {
        Self::Stop(e)
    }
}

struct Walk<'a, N: Namespace> {
    ns: &'a mut N,
    sel: &'a Selector,
    limits: &'a Limits,
    cancel: &'a CancelFlag,
    entries: Vec<Entry>,
    bytes: u64,
    /// Real directories being walked, outermost first, to detect directory-link cycles.
    stack: Vec<Vec<String>>,
    sub_kind: SubKind,
    work: Work,
}

impl<N: Namespace> Walk<'_, N> {
    /// Pays for `n` steps of work before doing it; also the walk's cancellation point.
    fn charge(&mut self, n: u64) -> Result<(), Error> {
        self.work.steps = self.work.steps.saturating_add(n);
        if self.work.steps > self.limits.max_walk_steps {
            return Err(Error::TooManyWalkSteps { max: self.limits.max_walk_steps });
        }
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Counts one symlink hop.
    fn follow_link(&mut self) -> Result<(), Error> {
        self.work.links += 1;
        if self.work.links > self.limits.max_symlinks {
            return Err(Error::TooManySymlinks { max: self.limits.max_symlinks });
        }
        Ok(())
    }

    /// Classifies a path of the input (as reached, through links) against the selection.
    fn place(&self, logical: &[String]) -> Place {
        let Some(out) = logical.get(self.sel.strip..) else {
            return Place::Route;
        };
        if out.is_empty() {
            return Place::Route;
        }
        let sub = &self.sel.sub;
        if out.len() < sub.len() {
            return if sub.starts_with(out) { Place::Route } else { Place::Outside };
        }
        if !out.starts_with(sub) {
            return Place::Outside;
        }
        if out.len() == sub.len() {
            return Place::SubRoot;
        }
        Place::Inside(out[sub.len()..].join("/"))
    }

    /// Walks real directory `real`, reached at input path `logical` (which is restored before
    /// returning).
    fn dir(&mut self, real: Vec<String>, logical: &mut Vec<String>) -> Result<(), Error> {
        self.work.dirs += 1;
        if self.work.dirs > self.limits.max_walk_dirs {
            return Err(Error::TooManyDirectories { max: self.limits.max_walk_dirs });
        }
        self.charge(1)?;
        let mut children = self.ns.read_dir(&real)?;
        // The whole listing is paid for up front, so no listing is processed on credit.
        self.charge(children.len() as u64)?;
        children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.stack.push(real.clone());
        for (name, node) in children {
            logical.push(name);
            let result = self.child(&real, logical, node);
            logical.pop();
            result?;
        }
        self.stack.pop();
        Ok(())
    }

    /// One entry of directory `real`, at input path `logical`.
    fn child(
        &mut self,
        real: &[String],
        logical: &mut Vec<String>,
        node: Node<N::Blob>,
    ) -> Result<(), Error> {
        if logical.len() as u64 > self.limits.max_path_depth.saturating_add(self.sel.strip as u64) {
            return Err(Error::PathTooDeep { path: logical.join("/"), max: self.limits.max_path_depth });
        }
        let place = self.place(logical);
        if matches!(place, Place::Outside) {
            return Ok(());
        }
        match node {
            Node::File { executable, blob } => self.file(&place, executable, &blob),
            Node::Dir => {
                let mut child_real = real.to_vec();
                child_real.extend(logical.last().cloned());
                self.enter(&place, child_real, logical)
            }
            Node::Symlink(target) => match self.resolve(real, &target) {
                Ok(Target::File { executable, blob }) => self.file(&place, executable, &blob),
                Ok(Target::Dir(target_real)) => {
                    if self.stack.iter().any(|d| d.starts_with(&target_real)) {
                        self.link_error(&place, logical, &target, LinkError::Loop)
                    } else {
                        self.enter(&place, target_real, logical)
                    }
                }
                Ok(Target::Special(kind)) => self.special(&place, logical, kind),
                Ok(Target::Submodule) => self.submodule(&place, logical),
                Err(Unresolved::Link(e)) => self.link_error(&place, logical, &target, e),
                Err(Unresolved::Stop(e)) => Err(e),
            },
            Node::Special(kind) => self.special(&place, logical, kind),
            Node::Submodule => self.submodule(&place, logical),
        }
    }

    /// Enters a directory (real or reached through a link) unless the selection prunes it.
    fn enter(&mut self, place: &Place, real: Vec<String>, logical: &mut Vec<String>) -> Result<(), Error> {
        match place {
            Place::Outside => Ok(()),
            Place::Route => self.dir(real, logical),
            Place::SubRoot => {
                self.sub_kind = SubKind::Dir;
                self.dir(real, logical)
            }
            Place::Inside(path) if self.sel.prunes_dir(path) => Ok(()),
            Place::Inside(_) => self.dir(real, logical),
        }
    }
    fn file(&mut self, place: &Place, executable: bool, blob: &N::Blob) -> Result<(), Error> {
        let path = match place {
            Place::Inside(path) if self.sel.keeps_file(path) => path,
            Place::SubRoot => {
                self.sub_kind = SubKind::NotDir;
                return Ok(());
            }
            _ => return Ok(()),
        };
        if path.len() as u64 > self.limits.max_path_bytes {
            return Err(Error::PathTooLong { path: path.clone(), max: self.limits.max_path_bytes });
        }
        let entry_path =
            EntryPath::new(path).map_err(|reason| Error::InvalidPath { path: path.clone(), reason })?;
        if entry_path.depth() as u64 > self.limits.max_path_depth {
            return Err(Error::PathTooDeep { path: path.clone(), max: self.limits.max_path_depth });
        }
        if self.entries.len() as u64 >= self.limits.max_entries {
            return Err(Error::TooManyEntries { max: self.limits.max_entries });
        }
        let (content, size) = self.ns.materialize(blob, &entry_path)?;
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.limits.max_unpacked_bytes {
            return Err(Error::UnpackedTooLarge { max: self.limits.max_unpacked_bytes });
        }
        let mode = if executable { Mode::Executable } else { Mode::Regular };
        self.entries.push(Entry { path: entry_path, mode, size, content });
        Ok(())
    }

    fn special(&mut self, place: &Place, logical: &[String], kind: &'static str) -> Result<(), Error> {
        match place {
            Place::Inside(path) if self.sel.keeps_file(path) => {
                Err(Error::UnsupportedEntryType { path: logical.join("/"), kind })
            }
            Place::SubRoot => {
                self.sub_kind = SubKind::NotDir;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A submodule is refused where a file would have been kept, and when it is the sub-path
    /// itself (the caller asked for a directory whose files this repository does not have).
    fn submodule(&mut self, place: &Place, logical: &[String]) -> Result<(), Error> {
        match place {
            Place::Inside(path) if self.sel.keeps_file(path) => {
                Err(Error::SubmoduleNotSupported { path: logical.join("/") })
            }
            Place::SubRoot => Err(Error::SubmoduleNotSupported { path: logical.join("/") }),
            _ => Ok(()),
        }
    }

    /// A link that cannot be followed is an error only where a file would have been kept.
    fn link_error(
        &mut self,
        place: &Place,
        logical: &[String],
        target: &str,
        error: LinkError,
    ) -> Result<(), Error> {
        match place {
            Place::Inside(path) if self.sel.keeps_file(path) => {
                let (path, target) = (logical.join("/"), target.to_owned());
                Err(match error {
                    LinkError::Escapes => Error::SymlinkEscapes { path, target },
                    LinkError::Broken => Error::SymlinkBroken { path, target },
                    LinkError::Loop => Error::SymlinkLoop { path, target },
                })
            }
            _ => Ok(()),
        }
    }

    /// Resolves `target` as seen from real directory `from`, hop by hop. Following the link
    /// itself is the first hop.
    fn resolve(&mut self, from: &[String], target: &str) -> Result<Target<N::Blob>, Unresolved> {
        self.follow_link()?;
        let mut hops = 0;
        self.resolve_from(from.to_vec(), target, &mut hops)
    }

    fn resolve_from(
        &mut self,
        mut cur: Vec<String>,
        target: &str,
        hops: &mut usize,
    ) -> Result<Target<N::Blob>, Unresolved> {
        let broken = Err(Unresolved::Link(LinkError::Broken));
        if target.is_empty() {
            return broken;
        }
        if target.starts_with('/') {
            return Err(Unresolved::Link(LinkError::Escapes));
        }
        let mut parts = target.split('/').filter(|c| !c.is_empty() && *c != ".").peekable();
        while let Some(part) = parts.next() {
            self.charge(1)?;
            let last = parts.peek().is_none();
            if part == ".." {
                cur.pop().ok_or(Unresolved::Link(LinkError::Escapes))?;
                continue;
            }
            if crate::package::tree::validate_component(part).is_err() {
                return broken;
            }
            // A lookup failure (I/O, invalid name) means the target cannot be resolved.
            let Ok(node) = self.ns.lookup(&cur, part) else { return broken };
            match node {
                None => return broken,
                Some(Node::Dir) => cur.push(part.to_owned()),
                Some(Node::File { executable, blob }) if last => {
                    return Ok(Target::File { executable, blob });
                }
                Some(Node::Special(kind)) if last => return Ok(Target::Special(kind)),
                Some(Node::Submodule) if last => return Ok(Target::Submodule),
                Some(Node::File { .. } | Node::Special(_) | Node::Submodule) => return broken,
                Some(Node::Symlink(next)) => {
                    *hops += 1;
                    if *hops > MAX_SYMLINK_HOPS {
                        return Err(Unresolved::Link(LinkError::Loop));
                    }
                    self.follow_link()?;
                    match self.resolve_from(cur.clone(), &next, hops)? {
                        Target::Dir(real) => cur = real,
                        found if last => return Ok(found),
                        _ => return broken,
                    }
                }
            }
        }
        Ok(Target::Dir(cur))
    }
}
