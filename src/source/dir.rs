//! A local directory as input (the CLI's `pack DIR`).
//!
//! The directory is read with `lstat`-style calls only: the file system never follows a symlink
//! for us. Links are resolved by the shared walk, one component at a time inside the root, so
//! a link out of the root is refused exactly as it is in a tarball. Contents are read from their
//! files at packing time; names must be UTF-8.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Error;
use super::walk::{Listing, Namespace, Node};
use crate::package::tree::validate_component;
use crate::package::{Content, Contents, EntryPath};

/// A directory tree on the local disk.
#[derive(Debug)]
pub(crate) struct DirNamespace {
    root: PathBuf,
}

/// A file of the directory and the size it had when listed.
#[derive(Debug, Clone)]
pub(crate) struct DiskFile {
    path: PathBuf,
    size: u64,
}

/// An I/O error that names the file it happened on (an `io::Error` alone does not, and "I/O
/// error while reading the input" does not say which file of a large tree).
fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl DirNamespace {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, dir: &[String]) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(dir);
        p
    }

    fn node(&self, path: PathBuf, meta: &fs::Metadata) -> Result<Node<DiskFile>, Error> {
        let ft = meta.file_type();
        Ok(if ft.is_file() {
            Node::File {
                executable: meta.permissions().mode() & 0o100 != 0,
                blob: DiskFile { size: meta.size(), path },
            }
        } else if ft.is_dir() {
            Node::Dir
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_error(&path))?;
            match target.into_os_string().into_string() {
                Ok(t) => Node::Symlink(t),
                // A target that is not UTF-8 cannot name anything in a UTF-8 tree.
                Err(_) => Node::Symlink(String::new()),
            }
        } else if ft.is_fifo() {
            Node::Special("FIFO")
        } else if ft.is_socket() {
            Node::Special("socket")
        } else if ft.is_block_device() {
            Node::Special("block device")
        } else if ft.is_char_device() {
            Node::Special("character device")
        } else {
            Node::Special("special file")
        })
    }
}

impl Namespace for DirNamespace {
    type Blob = DiskFile;

    fn lookup(&mut self, dir: &[String], name: &str) -> Result<Option<Node<DiskFile>>, Error> {
        let path = self.path(dir).join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) => self.node(path, &meta).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    fn read_dir(&mut self, dir: &[String]) -> Result<Listing<DiskFile>, Error> {
        let mut out = Vec::new();
        let path = self.path(dir);
        for entry in fs::read_dir(&path).map_err(io_error(&path))? {
            let entry = entry.map_err(io_error(&path))?;
            let name = entry.file_name().into_string().map_err(|name| Error::InvalidPath {
                path: format!("{}/{}", dir.join("/"), name.to_string_lossy()),
                reason: crate::package::PathError::NotUtf8,
            })?;
            validate_component(&name)
                .map_err(|reason| Error::InvalidPath { path: format!("{}/{name}", dir.join("/")), reason })?;
            let meta = entry.metadata().map_err(io_error(&entry.path()))?;
            let node = self.node(entry.path(), &meta)?;
            out.push((name, node));
        }
        Ok(out)
    }

    fn materialize(&mut self, blob: &DiskFile, _path: &EntryPath) -> Result<(Content, u64), Error> {
        Ok((Content::File(blob.path.clone()), blob.size))
    }

    fn into_contents(self) -> Result<Contents, Error> {
        Ok(Contents::None)
    }
}
