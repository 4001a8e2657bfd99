//! The local-directory backend: the embedded default, and a single-replica deployment option.
//!
//! An object is written to a temp file, fsynced, then published with a no-clobber rename
//! (`renameat2(RENAME_NOREPLACE)`, or link + unlink where that is missing), and the directory is
//! fsynced. An unlinked temp file handed over by the caller is linked into place straight from
//! its descriptor (`linkat` of `/proc/self/fd/N`, which fails on an existing name) when it is on
//! the store's file system (no copy), and copied into `<root>/.staging/` first otherwise; bytes
//! in memory are written to a nameless `O_TMPFILE` in the key's folder and linked the same way
//! (or, without `O_TMPFILE`, staged in `.staging/`). "Already exists" means someone else stored the key first. A
//! reader therefore never sees a partial file under a final name, and a crash leaves at most a
//! temp file in `.staging/`, which the startup sweep removes. One directory serves one process:
//! the sweep would remove a second process's uploads in progress.
//!
//! An object's metadata lives in a sidecar next to it, `.{name}.metadata.json`, renamed into
//! place before the object under the folder's `flock`.
//!
//! No operation follows a symlink below the root (see [`LocalStore`]): a key-named symlink, a
//! symlinked prefix folder or a symlink in a listed folder is treated as absent, and a put that
//! would have to pass through one fails. Keys under `.staging/` are reserved.

use std::fs::{self, File};
use std::io::{self, Read, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::key::{ObjectKey, StoreKey};
use super::{
    ByteRange, Error, ListCursor, ListRequest, Listing, Metadata, ObjectBody, ObjectMeta, PutOutcome, Staged,
    StagedBytes, Store,
};

/// Name of the staging directory under the root.
pub const STAGING_DIR: &str = ".staging";

/// A directory of packages.
///
/// Every operation starts from the root directory, opened once, and walks down one component
/// at a time with `openat(O_NOFOLLOW)` (`mkdirat` first where a put needs a folder): a symlink
/// anywhere below the root, as a key's file or as one of its folders, is never followed, and
/// only regular files are objects. Whoever can write into the store folder therefore cannot
/// make the service serve, list or write any file outside it.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    staging: PathBuf,
    root_dir: Arc<OwnedFd>,
    /// The device of the root: a temp file on it can be renamed into place.
    root_dev: u64,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io(io::Error::other(e)))?.map_err(Error::Io)
}

/// Whether an error of the no-follow walk means "nothing there": missing, a file where a folder
/// should be, or a symlink refused.
fn is_absent(e: Errno) -> bool {
    matches!(e, Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
}

/// Opens the directory `name` of `dir`, refusing a symlink.
fn open_dir(dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The folders and the file name of a key's name, if it is outside the staging directory. A
/// [`StoreKey`] has no empty, `.` or `..` component (its parts were validated when it was made).
fn split_key(key: &str) -> Option<(Vec<&str>, &str)> {
    let mut dirs: Vec<&str> = key.split('/').collect();
    let name = dirs.pop()?;
    (dirs.first() != Some(&STAGING_DIR)).then_some((dirs, name))
}

/// An open object: a regular file, reached with no symlink on the way.
struct Opened {
    file: File,
    meta: fs::Metadata,
}

impl LocalStore {
    /// Opens (creating if needed) the store at `root` and sweeps stale temp files. Returns the
    /// store and how many temp files the sweep removed. A `.staging` that is not a directory (a
    /// symlink, say) is refused.
    ///
    /// Runs synchronously: call it at startup, before serving.
    pub fn open(root: &Path) -> io::Result<(Self, usize)> {
        fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let root_dir =
            rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        match rustix::fs::mkdirat(&root_dir, STAGING_DIR, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let staging = root.join(STAGING_DIR);
        open_dir(root_dir.as_fd(), STAGING_DIR).map_err(|e| {
            io::Error::other(format!("{} is not a directory ({e}); symlinks are refused", staging.display()))
        })?;
        let mut swept = 0;
        for entry in fs::read_dir(&staging)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                swept += 1;
            }
        }
        let root_dev = std::os::unix::fs::MetadataExt::dev(&fs::metadata(&root)?);
        Ok((Self { root, staging, root_dir: Arc::new(root_dir), root_dev }, swept))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder reached by `components` below the root, never through a symlink. With
    /// `create`, missing folders are made (`mkdirat`, then opened no-follow, so a symlink put
    /// in place meanwhile is refused too). `Ok(None)`: there is no such folder (reads only).
    fn folder(&self, components: &[&str], create: bool) -> io::Result<Option<OwnedFd>> {
        let mut current: Option<OwnedFd> = None;
        for name in components {
            let parent = current.as_ref().map_or(self.root_dir.as_fd(), AsFd::as_fd);
            if create {
                match rustix::fs::mkdirat(parent, *name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match open_dir(parent, name) {
                Ok(dir) => current = Some(dir),
                Err(e) if is_absent(e) && !create => return Ok(None),
                Err(e) if is_absent(e) => {
                    return Err(io::Error::other(format!(
                        "{name:?} in the local store is not a directory ({e}); symlinks are refused"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        // No component: the root itself, opened again (a new open file description, not a
        // `dup`: a `flock` on it must end when it is closed, not with the store).
        match current {
            Some(dir) => Ok(Some(dir)),
            None => Ok(Some(open_dir(self.root_dir.as_fd(), ".")?)),
        }
    }

    /// Opens the object of `key`: `flags` (plus no-follow and close-on-exec) on its file, which
    /// must be a regular file reached through no symlink. `Ok(None)`: no object under the key.
    fn open_object(&self, key: &str, flags: OFlags) -> io::Result<Option<Opened>> {
        let Some((dirs, name)) = split_key(key) else {
            return Ok(None);
        };
        let Some(dir) = self.folder(&dirs, false)? else {
            return Ok(None);
        };
        let fd =
            match rustix::fs::openat(&dir, name, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) if is_absent(e) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
        let file = File::from(fd);
        let meta = file.metadata()?;
        Ok(meta.is_file().then_some(Opened { file, meta }))
    }

    /// Opens the object of `key` for reading. `O_NONBLOCK`, so a FIFO planted under a key name
    /// cannot block the open (it is then refused as not a regular file).
    fn open_for_reading(&self, key: &str) -> io::Result<Opened> {
        self.open_object(key, OFlags::RDONLY | OFlags::NONBLOCK)?
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
}

/// The name of the sidecar holding an object's metadata: a dot file next to it, which no key
/// of any kind can be named.
fn sidecar_name(name: &str) -> String {
    format!(".{name}.metadata.json")
}

/// Bytes ready to be published: on disk (fsynced), readable by all, on the store's file
/// system, so that publishing them is a link or a rename.
enum Prepared {
    /// The caller's unlinked temp file: linked into place through its `/proc/self/fd` path.
    Unlinked(File),
    /// A temp file in `.staging/`: renamed into place (removed when dropped, unless published).
    Named(tempfile::TempPath),
}

impl LocalStore {
    /// Makes `data` ready to be published in `dir`. A caller's temp file already on this file
    /// system is used as it is (no copy); bytes in memory go to a nameless file in `dir` itself
    /// (`O_TMPFILE`: no name until it is linked in, so a crash leaves nothing); otherwise (a
    /// file on another file system, or a file system without `O_TMPFILE`) the bytes are
    /// written to a temp file in `.staging/`.
    fn prepare(&self, data: StagedBytes, dir: BorrowedFd<'_>) -> io::Result<Prepared> {
        use std::os::unix::fs::MetadataExt as _;
        let bytes = match data {
            StagedBytes::File(file) if file.metadata()?.dev() == self.root_dev => {
                prepare(&file)?;
                return Ok(Prepared::Unlinked(file));
            }
            StagedBytes::File(file) => return self.copy_to_staging(&file).map(Prepared::Named),
            StagedBytes::Memory(bytes) => bytes,
        };
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        match rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => {
                let mut file = File::from(fd);
                file.write_all(&bytes)?;
                prepare(&file)?;
                return Ok(Prepared::Unlinked(file));
            }
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let mut file = tempfile::Builder::new().prefix("tmp-").tempfile_in(&self.staging)?;
        file.write_all(&bytes)?;
        file.flush()?;
        prepare(file.as_file())?;
        Ok(Prepared::Named(file.into_temp_path()))
    }

    /// A copy of `from` (read from its start) in `.staging/`, ready to be renamed into place.
    fn copy_to_staging(&self, from: &File) -> io::Result<tempfile::TempPath> {
        let mut copy = tempfile::Builder::new().prefix("tmp-").tempfile_in(&self.staging)?;
        io::copy(&mut File::open(super::fd_path(from))?, copy.as_file_mut())?;
        prepare(copy.as_file())?;
        Ok(copy.into_temp_path())
    }

    /// Stores the prepared `temp` as `name` in `dir`, with `metadata` in its sidecar, unless
    /// the name is taken.
    ///
    /// The folder is locked (`flock`) for the check, the sidecar and the object: with the
    /// object absent, a sidecar already there is a leftover of a put that crashed before its
    /// object appeared, and is replaced; the sidecar is in place (renamed, after an fsync)
    /// before the object is, so a reader that finds the object finds its own metadata, never a
    /// missing or a wrong one. The lock holds across processes, which keeps two processes on
    /// one folder from mixing metadata (though one directory still serves one process: see the
    /// startup sweep).
    fn publish(
        &self,
        temp: Prepared,
        metadata: &Metadata,
        dir: BorrowedFd<'_>,
        name: &str,
    ) -> io::Result<PutOutcome> {
        rustix::fs::flock(dir, rustix::fs::FlockOperation::LockExclusive)?;
        let result = self.publish_locked(temp, metadata, dir, name);
        rustix::fs::flock(dir, rustix::fs::FlockOperation::Unlock)?;
        result
    }

    fn publish_locked(
        &self,
        temp: Prepared,
        metadata: &Metadata,
        dir: BorrowedFd<'_>,
        name: &str,
    ) -> io::Result<PutOutcome> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            // Something is there (a symlink too, which is never followed nor replaced).
            Ok(_) => return Ok(PutOutcome::AlreadyExists),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        if !metadata.is_empty() {
            let mut sidecar = tempfile::Builder::new().prefix("tmp-").tempfile_in(&self.staging)?;
            serde_json::to_writer(sidecar.as_file_mut(), metadata)?;
            prepare(sidecar.as_file())?;
            let sidecar = sidecar.into_temp_path();
            rustix::fs::renameat(rustix::fs::CWD, &*sidecar, dir, sidecar_name(name))?;
            let _ = sidecar.keep();
        }
        let published = match temp {
            Prepared::Named(temp) => publish_noclobber(&temp, dir, name).map(|()| {
                let _ = temp.keep();
            }),
            Prepared::Unlinked(file) => {
                // `linkat` gives the unlinked file a name, and fails on an existing one. A
                // bind mount can share a device with the store yet refuse a link across it
                // (EXDEV), and a file that was unlinked rather than created nameless cannot be
                // linked again (ENOENT): both are copied instead.
                let linked = rustix::fs::linkat(
                    rustix::fs::CWD,
                    super::fd_path(&file),
                    dir,
                    name,
                    AtFlags::SYMLINK_FOLLOW,
                );
                match linked {
                    Err(Errno::XDEV | Errno::NOENT) => {
                        let copy = self.copy_to_staging(&file)?;
                        publish_noclobber(&copy, dir, name).map(|()| {
                            let _ = copy.keep();
                        })
                    }
                    other => other.map_err(io::Error::from),
                }
            }
        };
        match published {
            Ok(()) => Ok(PutOutcome::Created { version_id: None }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    /// The metadata in the sidecar of `name` in `dir`, empty if it has none.
    fn read_sidecar(dir: BorrowedFd<'_>, name: &str) -> io::Result<Metadata> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(dir, sidecar_name(name), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if is_absent(e) => return Ok(Metadata::new()),
            Err(e) => return Err(e.into()),
        };
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Ok(Metadata::new());
        }
        // A sidecar is a few hundred bytes; a bigger one is not ours.
        let mut text = String::new();
        file.take(64 * 1024).read_to_string(&mut text)?;
        serde_json::from_str(&text).map_err(io::Error::other)
    }

    /// One page of a listing: the folder of the prefix, read whole (a local folder has no
    /// server-side paging), its regular files whose names start with the prefix's last part and
    /// come after `start_after`, in byte order, parsed as keys of the listed kind.
    fn list_folder(&self, request: &ListRequest) -> io::Result<Listing> {
        if request.prefix().recursive() {
            return self.list_tree(request);
        }
        let raw = request.prefix().raw();
        let (dir, name_prefix) = match raw.rfind('/') {
            Some(i) => (&raw[..=i], &raw[i + 1..]),
            None => ("", raw.as_str()),
        };
        let components: Vec<&str> = dir.split_terminator('/').collect();
        if components.first() == Some(&STAGING_DIR) {
            return Ok(Listing::default());
        }
        let Some(folder) = self.folder(&components, false)? else {
            return Ok(Listing::default());
        };
        // Only the `max + 1` smallest names are kept (a LIST of one name, as the index's
        // newest-slot lookup makes on every publish, allocates and sorts two names, not the
        // folder's thousands). Entries skipped below (not a regular file, not a key) could leave
        // the page short although more names follow: then the whole folder is read again.
        if let Some(listing) = self.list_names(&folder, dir, name_prefix, request, Some(request.max() + 1))? {
            return Ok(listing);
        }
        Ok(self.list_names(&folder, dir, name_prefix, request, None)?.unwrap_or_default())
    }

    /// One page of `folder`'s names that start with `name_prefix`, from the `keep` smallest
    /// (all with `None`); `None` when those were too few to fill the page.
    fn list_names(
        &self,
        folder: &OwnedFd,
        dir: &str,
        name_prefix: &str,
        request: &ListRequest,
        keep: Option<usize>,
    ) -> io::Result<Option<Listing>> {
        let mut smallest = std::collections::BinaryHeap::new();
        let mut more = false;
        for entry in rustix::fs::Dir::read_from(folder)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." || !name.starts_with(name_prefix) {
                continue;
            }
            if let Some(keep) = keep
                && smallest.len() == keep
                && smallest.peek().is_some_and(|largest: &String| name >= &largest[dir.len()..])
            {
                more = true;
                continue;
            }
            let full = format!("{dir}{name}");
            if request.start_after().is_none_or(|after| full.as_str() > after) {
                smallest.push(full);
                if keep.is_some_and(|keep| smallest.len() > keep) {
                    smallest.pop();
                    more = true;
                }
            }
        }
        let names = smallest.into_sorted_vec();
        let mut listing = Listing::default();
        for (i, full) in names.iter().enumerate() {
            if listing.objects.len() == request.max() {
                let last = names[i - 1].clone();
                listing.next = Some(ListCursor::after_name(last));
                break;
            }
            let Some(key) = request.prefix().parse(full) else {
                continue;
            };
            if let Some(meta) = regular_file(folder.as_fd(), &full[dir.len()..])? {
                listing.objects.push((key, meta_of(&meta)));
            }
        }
        if more && listing.next.is_none() && listing.objects.len() < request.max() {
            return Ok(None);
        }
        Ok(Some(listing))
    }
}

impl LocalStore {
    /// One page of a recursive listing: the tree below the prefix's folder, walked in the byte
    /// order of whole names (S3's order: a folder `a/` sorts as the string `a/`, after `a-b`),
    /// skipping every folder whose names all come before `start_after`, and the store's own
    /// folders (`.staging/` at the root, the `.lambda-packager/` index anywhere).
    fn list_tree(&self, request: &ListRequest) -> io::Result<Listing> {
        let raw = request.prefix().raw();
        let (dir, name_prefix) = match raw.rfind('/') {
            Some(i) => (&raw[..=i], &raw[i + 1..]),
            None => ("", raw.as_str()),
        };
        let components: Vec<&str> = dir.split_terminator('/').collect();
        let mut listing = Listing::default();
        if let Some(folder) = self.folder(&components, false)? {
            let mut walk = TreeWalk { request, listing: &mut listing, last: None };
            walk.folder(folder.as_fd(), dir, name_prefix)?;
        }
        Ok(listing)
    }
}

/// The state of one recursive listing.
struct TreeWalk<'a> {
    request: &'a ListRequest,
    listing: &'a mut Listing,
    /// The last name examined, where the next page starts.
    last: Option<String>,
}

impl TreeWalk<'_> {
    /// Lists `folder` (whose names start `path`), its entries starting with `name_prefix`.
    /// `Ok(false)`: the page is full, stop.
    fn folder(&mut self, folder: BorrowedFd<'_>, path: &str, name_prefix: &str) -> io::Result<bool> {
        let mut entries = Vec::new();
        for entry in rustix::fs::Dir::read_from(folder)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." || !name.starts_with(name_prefix) {
                continue;
            }
            let reserved = name == super::key::RESERVED_FOLDER || (path.is_empty() && name == STAGING_DIR);
            let is_dir = match rustix::fs::statat(folder, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => {
                    rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory
                }
                Err(e) if is_absent(e) => continue,
                Err(e) => return Err(e.into()),
            };
            if !(reserved && is_dir) {
                entries
                    .push((if is_dir { format!("{path}{name}/") } else { format!("{path}{name}") }, is_dir));
            }
        }
        entries.sort_unstable();
        let after = self.request.start_after().map(str::to_owned);
        for (full, is_dir) in entries {
            if is_dir {
                // Every name below `full` starts with it: all come before `after` when `after`
                // is past `full` without starting with it.
                if after.as_deref().is_some_and(|a| a > full.as_str() && !a.starts_with(&full)) {
                    continue;
                }
                let name = &full[path.len()..full.len() - 1];
                let child = match open_dir(folder, name) {
                    Ok(child) => child,
                    Err(e) if is_absent(e) => continue,
                    Err(e) => return Err(e.into()),
                };
                if !self.folder(child.as_fd(), &full, "")? {
                    return Ok(false);
                }
                continue;
            }
            if after.as_deref().is_some_and(|a| full.as_str() <= a) {
                continue;
            }
            if self.listing.objects.len() == self.request.max() {
                self.listing.next = self.last.clone().map(ListCursor::after_name);
                return Ok(false);
            }
            self.last = Some(full.clone());
            let Some(key) = self.request.prefix().parse(&full) else {
                continue;
            };
            if let Some(meta) = regular_file(folder, &full[path.len()..])? {
                self.listing.objects.push((key, meta_of(&meta)));
            }
        }
        Ok(true)
    }
}

/// The metadata of `name` in `folder` if it is a regular file. Opened no-follow (`O_PATH`): a
/// symlink is the link itself, not a file, so it is none; neither is a name that vanished.
fn regular_file(folder: BorrowedFd<'_>, name: &str) -> io::Result<Option<fs::Metadata>> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(folder, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if is_absent(e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = File::from(fd).metadata()?;
    Ok(meta.is_file().then_some(meta))
}

/// Readies a temp file for publishing: readable by all (temp files are created 0600, a stored
/// object is as readable as any other file) and on disk.
fn prepare(file: &File) -> io::Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.sync_all()
}

/// Publishes the temp file at `temp` as `name` in `dir` unless that name exists: the kernel's
/// `renameat2(RENAME_NOREPLACE)`, or, where the file system lacks it, `linkat` (which fails on
/// an existing name) and then removing the temp name.
fn publish_noclobber(temp: &Path, dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    match rustix::fs::renameat_with(rustix::fs::CWD, temp, dir, name, RenameFlags::NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(Errno::NOSYS | Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    rustix::fs::linkat(rustix::fs::CWD, temp, dir, name, AtFlags::empty())?;
    let _ = rustix::fs::unlink(temp);
    Ok(())
}

fn meta_of(meta: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        size: meta.len(),
        last_modified: meta.modified().ok(),
        version_id: None,
        checksum_sha256: None,
        metadata: Metadata::new(),
    }
}

impl Store for LocalStore {
    fn bucket(&self) -> Option<&str> {
        None
    }

    fn location(&self, key: &ObjectKey) -> String {
        format!("file://{}", self.root.join(key.to_string()).display())
    }

    async fn head(&self, key: &StoreKey) -> Result<Option<ObjectMeta>, Error> {
        let (store, key) = (self.clone(), key.name());
        blocking(move || {
            let Some((dirs, name)) = split_key(&key) else { return Ok(None) };
            let Some(dir) = store.folder(&dirs, false)? else { return Ok(None) };
            // O_PATH: enough for fstat, needs no read permission, and opens nothing that could
            // block.
            let Some(object) = store.open_object(&key, OFlags::PATH)? else { return Ok(None) };
            let mut meta = meta_of(&object.meta);
            meta.metadata = Self::read_sidecar(dir.as_fd(), name)?;
            Ok(Some(meta))
        })
        .await
    }

    async fn put_if_absent(&self, key: &StoreKey, staged: Staged) -> Result<PutOutcome, Error> {
        let (store, key) = (self.clone(), key.name());
        blocking(move || {
            let (dirs, name) = split_key(&key).ok_or_else(|| {
                io::Error::other(format!("{key:?} cannot be stored in the local store (reserved folder)"))
            })?;
            // A key already taken needs no temp file (checked again under the lock below).
            if let Some(dir) = store.folder(&dirs, false)?
                && rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
            {
                return Ok(PutOutcome::AlreadyExists);
            }
            let dir =
                store.folder(&dirs, true)?.ok_or_else(|| io::Error::other("the key's folder vanished"))?;
            // The bytes are made ready first, outside the folder's lock: a copy can take a while.
            // A temp file is removed when `temp` drops, unless it was published.
            let temp = store.prepare(staged.data, dir.as_fd())?;
            let outcome = store.publish(temp, &staged.metadata, dir.as_fd(), name)?;
            // One fsync makes both renames (sidecar and object) durable: they are in this folder.
            rustix::fs::fsync(&dir)?;
            Ok(outcome)
        })
        .await
    }

    async fn list(&self, request: &ListRequest) -> Result<Listing, Error> {
        let (store, request) = (self.clone(), request.clone());
        blocking(move || store.list_folder(&request)).await
    }

    async fn read_range(&self, key: &StoreKey, range: ByteRange) -> Result<Bytes, Error> {
        let (store, key) = (self.clone(), key.name());
        let result = blocking(move || {
            let Opened { file, meta } = store.open_for_reading(&key)?;
            let len = meta.len();
            let (start, end) = match range {
                ByteRange::Tail(n) => (len.saturating_sub(n), len),
                ByteRange::Span { start, end } => (start.min(len), end.min(len)),
            };
            let mut buf = vec![0u8; usize::try_from(end.saturating_sub(start)).unwrap_or(0)];
            file.read_exact_at(&mut buf, start)?;
            Ok(Bytes::from(buf))
        })
        .await;
        not_found_as(result)
    }

    async fn get(&self, key: &StoreKey) -> Result<ObjectBody, Error> {
        let (store, key) = (self.clone(), key.name());
        let Opened { file, meta } = not_found_as(blocking(move || store.open_for_reading(&key)).await)?;
        let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 * 1024);
        Ok(ObjectBody { size: meta.len(), stream: stream.boxed() })
    }

    async fn ready(&self) -> Result<(), Error> {
        let staging = self.staging.clone();
        blocking(move || {
            // Proves the directory exists and is writable.
            let probe = tempfile::NamedTempFile::new_in(&staging)?;
            let mut f = probe.reopen()?;
            let mut b = [0u8; 1];
            let _ = f.read(&mut b)?;
            Ok(())
        })
        .await
    }
}

fn not_found_as<T>(r: Result<T, Error>) -> Result<T, Error> {
    match r {
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound),
        other => other,
    }
}
