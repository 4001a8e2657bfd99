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
use super::select::{DirState, Selector};
use crate::package::{CancelFlag, Content, Contents, Entry, EntryPath, Limits, Mode, SourceTree, TreeError};

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

    /// Hands over where the materialized entries' bytes are (a spool, a blob source, a stream).
    fn into_contents(self) -> Result<Contents, Error>;
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
        logical: Logical::default(),
        sub_kind: if selector.sub.is_empty() { SubKind::Dir } else { SubKind::Missing },
        work: Work::default(),
    };
    let walked = walk.dir(Vec::new(), DirState::default());
    let Walk { entries, sub_kind, work, .. } = walk;
    let result = walked.and_then(|()| {
        let sub = || selector.sub.join("/");
        match sub_kind {
            SubKind::Dir => {}
            SubKind::Missing => return Err(Error::SubPathNotFound { path: sub() }),
            SubKind::NotDir => return Err(Error::SubPathNotDirectory { path: sub() }),
        }
        let contents = ns.into_contents()?;
        SourceTree::new(entries, contents).map_err(|e| match e {
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
    /// Inside the sub-path; the package path is the input path from this component on.
    Inside(usize),
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

/// The input path being walked (as reached, through links), kept as one string with the start of
/// each component, so that the package path of any entry is a slice of it rather than a join.
#[derive(Debug, Default)]
struct Logical {
    text: String,
    starts: Vec<usize>,
}

impl Logical {
    fn push(&mut self, name: &str) {
        if !self.starts.is_empty() {
            self.text.push('/');
        }
        self.starts.push(self.text.len());
        self.text.push_str(name);
    }

    fn pop(&mut self) {
        if let Some(start) = self.starts.pop() {
            self.text.truncate(start.saturating_sub(1));
        }
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    /// Component `i`.
    fn component(&self, i: usize) -> &str {
        let end = self.starts.get(i + 1).map_or(self.text.len(), |next| next - 1);
        &self.text[self.starts[i]..end]
    }

    /// The last component.
    fn name(&self) -> &str {
        self.component(self.len() - 1)
    }

    /// Components `i..`, joined.
    fn from(&self, i: usize) -> &str {
        self.starts.get(i).map_or("", |&start| &self.text[start..])
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
    /// The input path of the entry being looked at.
    logical: Logical,
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

    /// Classifies the current input path against the selection.
    fn place(&self) -> Place {
        let (strip, sub, depth) = (self.sel.strip, &self.sel.sub, self.logical.len());
        if depth <= strip {
            return Place::Route;
        }
        let out = depth - strip;
        let common = out.min(sub.len());
        if (0..common).any(|i| self.logical.component(strip + i) != sub[i]) {
            return Place::Outside;
        }
        match out.cmp(&sub.len()) {
            std::cmp::Ordering::Less => Place::Route,
            std::cmp::Ordering::Equal => Place::SubRoot,
            std::cmp::Ordering::Greater => Place::Inside(strip + sub.len()),
        }
    }

    /// The package path of a [`Place::Inside`] at component `from`.
    fn package_path(&self, from: usize) -> &str {
        self.logical.from(from)
    }

    /// Whether the selection keeps a file at `place`, in a directory in state `parent`.
    fn keeps(&self, place: &Place, parent: DirState) -> bool {
        matches!(place, Place::Inside(from) if self.sel.keeps_file_in(self.package_path(*from), parent))
    }

    /// Walks real directory `real`, reached at the current input path, whose patterns' state
    /// is `state`.
    fn dir(&mut self, real: Vec<String>, state: DirState) -> Result<(), Error> {
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
            self.logical.push(&name);
            let result = self.child(&real, node, state);
            self.logical.pop();
            result?;
        }
        self.stack.pop();
        Ok(())
    }

    /// One entry of directory `real` (in state `parent`), at the current input path.
    fn child(&mut self, real: &[String], node: Node<N::Blob>, parent: DirState) -> Result<(), Error> {
        if self.logical.len() as u64 > self.limits.max_path_depth.saturating_add(self.sel.strip as u64) {
            return Err(Error::PathTooDeep {
                path: self.logical.text.clone(),
                max: self.limits.max_path_depth,
            });
        }
        let place = self.place();
        if matches!(place, Place::Outside) {
            return Ok(());
        }
        match node {
            Node::File { executable, blob } => self.file(&place, parent, executable, &blob),
            Node::Dir => {
                let mut child_real = real.to_vec();
                child_real.push(self.logical.name().to_owned());
                self.enter(&place, parent, child_real)
            }
            Node::Symlink(target) => match self.resolve(real, &target) {
                Ok(Target::File { executable, blob }) => self.file(&place, parent, executable, &blob),
                Ok(Target::Dir(target_real)) => {
                    if self.stack.iter().any(|d| d.starts_with(&target_real)) {
                        self.link_error(&place, parent, &target, LinkError::Loop)
                    } else {
                        self.enter(&place, parent, target_real)
                    }
                }
                Ok(Target::Special(kind)) => self.special(&place, parent, kind),
                Ok(Target::Submodule) => self.submodule(&place, parent),
                Err(Unresolved::Link(e)) => self.link_error(&place, parent, &target, e),
                Err(Unresolved::Stop(e)) => Err(e),
            },
            Node::Special(kind) => self.special(&place, parent, kind),
            Node::Submodule => self.submodule(&place, parent),
        }
    }

    /// Enters a directory (real or reached through a link) unless the selection prunes it.
    /// Patterns apply to package paths, so above the package root the state is empty.
    fn enter(&mut self, place: &Place, parent: DirState, real: Vec<String>) -> Result<(), Error> {
        match place {
            Place::Outside => Ok(()),
            Place::Route => self.dir(real, DirState::default()),
            Place::SubRoot => {
                self.sub_kind = SubKind::Dir;
                self.dir(real, DirState::default())
            }
            Place::Inside(from) => {
                let state = self.sel.dir_state(self.package_path(*from), parent);
                if self.sel.prunes(state) { Ok(()) } else { self.dir(real, state) }
            }
        }
    }

    fn file(
        &mut self,
        place: &Place,
        parent: DirState,
        executable: bool,
        blob: &N::Blob,
    ) -> Result<(), Error> {
        if matches!(place, Place::SubRoot) {
            self.sub_kind = SubKind::NotDir;
            return Ok(());
        }
        let Place::Inside(from) = place else { return Ok(()) };
        if !self.keeps(place, parent) {
            return Ok(());
        }
        let path = self.package_path(*from);
        if path.len() as u64 > self.limits.max_path_bytes {
            return Err(Error::PathTooLong { path: path.to_owned(), max: self.limits.max_path_bytes });
        }
        let entry_path =
            EntryPath::new(path).map_err(|reason| Error::InvalidPath { path: path.to_owned(), reason })?;
        if entry_path.depth() as u64 > self.limits.max_path_depth {
            return Err(Error::PathTooDeep { path: path.to_owned(), max: self.limits.max_path_depth });
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

    fn special(&mut self, place: &Place, parent: DirState, kind: &'static str) -> Result<(), Error> {
        if self.keeps(place, parent) {
            return Err(Error::UnsupportedEntryType { path: self.logical.text.clone(), kind });
        }
        if matches!(place, Place::SubRoot) {
            self.sub_kind = SubKind::NotDir;
        }
        Ok(())
    }

    /// A submodule is refused where a file would have been kept, and when it is the sub-path
    /// itself (the caller asked for a directory whose files this repository does not have).
    fn submodule(&mut self, place: &Place, parent: DirState) -> Result<(), Error> {
        if self.keeps(place, parent) || matches!(place, Place::SubRoot) {
            return Err(Error::SubmoduleNotSupported { path: self.logical.text.clone() });
        }
        Ok(())
    }

    /// A link that cannot be followed is an error only where a file would have been kept.
    fn link_error(
        &mut self,
        place: &Place,
        parent: DirState,
        target: &str,
        error: LinkError,
    ) -> Result<(), Error> {
        if !self.keeps(place, parent) {
            return Ok(());
        }
        let (path, target) = (self.logical.text.clone(), target.to_owned());
        Err(match error {
            LinkError::Escapes => Error::SymlinkEscapes { path, target },
            LinkError::Broken => Error::SymlinkBroken { path, target },
            LinkError::Loop => Error::SymlinkLoop { path, target },
        })
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io;
    use std::rc::Rc;

    use proptest::prelude::*;

    use super::*;
    use crate::source::Selection;
    use crate::source::memory::{Found, Kind, MemNamespace};

    /// What a walk asked of its namespace, counted by the namespace itself: calls, and the
    /// entries the listings returned. Independent of the walk's own [`Work`] counters.
    #[derive(Debug, Default)]
    struct Asked {
        calls: Cell<u64>,
        listed: Cell<u64>,
    }

    struct Counting<N> {
        inner: N,
        asked: Rc<Asked>,
    }

    impl<N: Namespace> Namespace for Counting<N> {
        type Blob = N::Blob;

        fn lookup(&mut self, dir: &[String], name: &str) -> Result<Option<Node<N::Blob>>, Error> {
            self.asked.calls.set(self.asked.calls.get() + 1);
            self.inner.lookup(dir, name)
        }

        fn read_dir(&mut self, dir: &[String]) -> Result<Listing<N::Blob>, Error> {
            self.asked.calls.set(self.asked.calls.get() + 1);
            let listing = self.inner.read_dir(dir)?;
            self.asked.listed.set(self.asked.listed.get() + listing.len() as u64);
            Ok(listing)
        }

        fn materialize(&mut self, blob: &N::Blob, path: &EntryPath) -> Result<(Content, u64), Error> {
            self.asked.calls.set(self.asked.calls.get() + 1);
            self.inner.materialize(blob, path)
        }

        fn into_contents(self) -> Result<Contents, Error> {
            self.inner.into_contents()
        }
    }

    /// One member of a test archive.
    #[derive(Debug, Clone)]
    enum M {
        File(String),
        Dir(String),
        Link(String, String),
    }

    fn namespace(members: &[M]) -> MemNamespace {
        let mut ns = MemNamespace::new(&Limits::default(), None).expect("spool");
        for m in members {
            let inserted = match m {
                M::File(p) => ns.insert(
                    p.as_bytes(),
                    Kind::File { executable: false, data: &mut io::empty(), size: 0, found: Found::Nowhere },
                ),
                M::Dir(p) => ns.insert(p.as_bytes(), Kind::<io::Empty>::Dir),
                M::Link(p, t) => ns.insert(p.as_bytes(), Kind::<io::Empty>::Symlink(t.clone())),
            };
            // Random graphs may name a path twice or as file and directory: skip those members.
            let _ = inserted;
        }
        ns
    }

    fn walk(
        members: &[M],
        selection: &Selection,
        limits: &Limits,
    ) -> (Result<SourceTree, Error>, Work, Rc<Asked>) {
        let asked = Rc::new(Asked::default());
        let ns = Counting { inner: namespace(members), asked: Rc::clone(&asked) };
        let selector = Selector::new(selection).expect("a valid selection");
        let (result, work) = build_tree_counted(ns, &selector, limits, &CancelFlag::default());
        (result, work, asked)
    }

    /// The graph: `d0..d40`, each with four links to the next directory and one file.
    fn exponential_graph(file: &str) -> Vec<M> {
        let mut members = vec![M::File("main.py".into())];
        for k in 0..=40 {
            members.push(M::File(format!("d{k}/{file}")));
            if k < 40 {
                for s in 0..4 {
                    members.push(M::Link(format!("d{k}/s{s}"), format!("../d{}", k + 1)));
                }
            }
        }
        members
    }

    #[test]
    fn an_exponential_symlink_graph_stops_at_the_link_limit_whatever_the_selection_keeps() {
        let limits = Limits::default();
        let keep_main = Selection { include: vec!["main.py".into()], ..Selection::default() };
        // Files the selection drops (default excludes, or not included) are the case that used
        // to run forever: nothing kept, so no entry limit was ever reached.
        for (file, selection) in [(".DS_Store", Selection::default()), ("f.txt", keep_main)] {
            let (result, work, asked) = walk(&exponential_graph(file), &selection, &limits);
            assert!(matches!(result, Err(Error::TooManySymlinks { max: 50_000 })), "{file}: {result:?}");
            assert_eq!(work.links, limits.max_symlinks + 1);
            assert!(work.steps <= limits.max_walk_steps && work.dirs <= limits.max_walk_dirs, "{work:?}");
            assert!(asked.calls.get() + asked.listed.get() <= work.steps + 1, "{work:?} {asked:?}");
        }
    }

    #[test]
    fn each_walk_limit_stops_the_walk_with_its_own_error() {
        let graph = exponential_graph(".DS_Store");
        let tight = |steps, links, dirs| Limits {
            max_walk_steps: steps,
            max_symlinks: links,
            max_walk_dirs: dirs,
            ..Limits::default()
        };
        let (r, w, _) = walk(&graph, &Selection::default(), &tight(100, 1_000, 1_000));
        assert!(matches!(r, Err(Error::TooManyWalkSteps { max: 100 })), "{r:?}");
        assert!(w.steps <= 100 + 5, "{w:?}");
        let (r, _, _) = walk(&graph, &Selection::default(), &tight(1_000_000, 10, 1_000));
        assert!(matches!(r, Err(Error::TooManySymlinks { max: 10 })), "{r:?}");
        let (r, w, _) = walk(&graph, &Selection::default(), &tight(1_000_000, 1_000, 10));
        assert!(matches!(r, Err(Error::TooManyDirectories { max: 10 })), "{r:?}");
        assert_eq!(w.dirs, 11);
    }

    #[test]
    fn a_cancelled_walk_asks_nothing_of_its_namespace() {
        let asked = Rc::new(Asked::default());
        let ns = Counting { inner: namespace(&exponential_graph("f.txt")), asked: Rc::clone(&asked) };
        let cancel = CancelFlag::default();
        cancel.cancel();
        let selector = Selector::new(&Selection::default()).expect("valid");
        let (result, work) = build_tree_counted(ns, &selector, &Limits::default(), &cancel);
        assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        assert_eq!((asked.calls.get(), work.steps), (0, 1), "stopped at the first step");
    }

    /// A node_modules tree the way pnpm lays it out: every package once under `.pnpm/`, a link
    /// per dependency, `.bin/` links to executables. Near the entry limit (41,000 files), such a
    /// tree uses about a tenth of each walk limit.
    #[test]
    fn a_pnpm_style_node_modules_tree_is_far_below_the_walk_limits() {
        let mut members = Vec::new();
        let packages = 1_000;
        for p in 0..packages {
            let root = format!("node_modules/.pnpm/pkg{p}@1.0.0/node_modules");
            for f in 0..8 {
                members.push(M::File(format!("{root}/pkg{p}/lib/f{f}.js")));
            }
            members.push(M::File(format!("{root}/pkg{p}/package.json")));
            for d in 1..=3 {
                let dep = (p + d * 7) % packages;
                members.push(M::Link(
                    format!("{root}/pkg{dep}"),
                    format!("../../pkg{dep}@1.0.0/node_modules/pkg{dep}"),
                ));
            }
            members.push(M::Link(
                format!("node_modules/.bin/pkg{p}"),
                format!("../.pnpm/pkg{p}@1.0.0/node_modules/pkg{p}/lib/f0.js"),
            ));
            if p % 10 == 0 {
                members.push(M::Link(
                    format!("node_modules/pkg{p}"),
                    format!(".pnpm/pkg{p}@1.0.0/node_modules/pkg{p}"),
                ));
            }
        }
        let limits = Limits::default();
        let (result, work, _) = walk(&members, &Selection::default(), &limits);
        let tree = result.expect("packs");
        // Every package's 9 files, 3 copies through dependency links, the .bin copies, and the
        // top-level links.
        assert_eq!(tree.entries().len(), 1_000 * 9 * 4 + 1_000 + 100 * 9);
        eprintln!("pnpm-style tree of {} files: {work:?}", tree.entries().len());
        assert!(work.links * 5 <= limits.max_symlinks, "{work:?}");
        assert!(work.dirs * 5 <= limits.max_walk_dirs, "{work:?}");
        assert!(work.steps * 5 <= limits.max_walk_steps, "{work:?}");
    }

    /// A random symlink graph: directories `d0..dN` (some nested), files, and links between
    /// directories (relative, through `..`, to links, to themselves, broken, absolute).
    fn graph() -> impl Strategy<Value = Vec<M>> {
        let target = prop_oneof![
            (0usize..8).prop_map(|k| format!("../d{k}")),
            (0usize..8).prop_map(|k| format!("d{k}")),
            (0usize..8, 0usize..3).prop_map(|(k, s)| format!("../d{k}/s{s}")),
            (0usize..8).prop_map(|k| format!("../d{k}/sub")),
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("../..".to_owned()),
            Just("/etc".to_owned()),
            Just("missing".to_owned()),
            Just("s0".to_owned()),
        ];
        let link = (0usize..8, prop::bool::ANY, 0usize..4, target).prop_map(|(k, nested, s, t)| {
            let dir = if nested { format!("d{k}/sub") } else { format!("d{k}") };
            M::Link(format!("{dir}/s{s}"), t)
        });
        let file = (0usize..8, prop::bool::ANY)
            .prop_map(|(k, keep)| M::File(format!("d{k}/{}", if keep { "f.py" } else { ".DS_Store" })));
        let dir = (0usize..8).prop_map(|k| M::Dir(format!("d{k}/sub")));
        prop::collection::vec(prop_oneof![3 => link, 1 => file, 1 => dir], 1..48)
    }

    fn selection() -> impl Strategy<Value = Selection> {
        prop_oneof![
            Just(Selection::default()),
            Just(Selection { include: vec!["*.nothing".into()], ..Selection::default() }),
            Just(Selection { exclude: vec!["sub/".into()], ..Selection::default() }),
            Just(Selection { strip_components: 1, ..Selection::default() }),
            Just(Selection { path: Some("d0".into()), ..Selection::default() }),
        ]
    }

    fn limits() -> impl Strategy<Value = Limits> {
        (1u64..4_000, 1u64..600, 1u64..600, 1u64..2_000).prop_map(|(steps, links, dirs, entries)| Limits {
            max_walk_steps: steps,
            max_symlinks: links,
            max_walk_dirs: dirs,
            max_entries: entries,
            ..Limits::default()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever the graph, the selection and the limits, the walk ends (with a tree or an
        /// error), and the work its namespace saw is within the limits: every call and every
        /// listed entry was paid for in steps (a listing is paid right after it is returned,
        /// and kept files, at most `max_entries`, are not steps).
        #[test]
        fn every_symlink_graph_is_walked_within_the_limits(members in graph(), selection in selection(), limits in limits()) {
            let (_result, work, asked) = walk(&members, &selection, &limits);
            let largest_listing = members.len() as u64;
            prop_assert!(work.steps <= limits.max_walk_steps + largest_listing, "{work:?}");
            prop_assert!(work.links <= limits.max_symlinks + 1, "{work:?}");
            prop_assert!(work.dirs <= limits.max_walk_dirs + 1, "{work:?}");
            prop_assert!(
                asked.calls.get() + asked.listed.get() <= limits.max_walk_steps + largest_listing + limits.max_entries,
                "{work:?} {asked:?}"
            );
        }
    }
}
