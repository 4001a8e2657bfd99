//! The one use case shared by the HTTP API and the CLI: input bytes in, canonical zip out.
//!
//! decode (`source`) → canonicalize and hash (`package`). Callers choose where the zip file lives
//! (a temp file next to `--out`, or the store's staging area) and what happens to it next.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::package::{self, Limits, PackOptions, Packed};
use crate::source::git::{GitRequest, GitRevision, GitSource};
use crate::source::{self, Selection, SourceFormat};

/// Where the source tree comes from.
#[derive(Debug)]
pub enum Input {
    /// A local directory (CLI only: the service never reads its own disk on request).
    Directory(PathBuf),
    /// An archive file (tar, tar.gz or zip, detected from its bytes).
    Archive(File),
    /// A directory of a commit of an allow-listed git remote.
    Git(GitInput),
}

/// A git request and the configured git sources that serve it.
#[derive(Debug, Clone)]
pub struct GitInput {
    /// The allowlist, mirror cache and fetch limits (shared by all requests).
    pub source: Arc<GitSource>,
    /// Remote, ref and sub-path.
    pub request: GitRequest,
}

/// Why a package could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is unusable.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// The zip could not be written.
    #[error(transparent)]
    Package(#[from] package::Error),
}

impl Error {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Source(e) => e.code(),
            Self::Package(package::Error::Cancelled) => "cancelled",
            Self::Package(package::Error::SourceChanged { .. }) => "source_changed",
            Self::Package(_) => "package_failed",
        }
    }
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// Digest, size and file count of the zip.
    pub packed: Packed,
    /// The detected input format.
    pub format: SourceFormat,
    /// For git input: the remote, the ref and the commit it resolved to.
    pub git: Option<GitRevision>,
}

/// Decodes `input`, applies `selection` and writes the canonical zip into `out`.
///
/// Runs synchronously, so it must be called inside `spawn_blocking()` from async code.
pub fn build(
    input: Input,
    selection: &Selection,
    limits: &Limits,
    options: &PackOptions,
    spool_dir: Option<&Path>,
    out: &mut File,
) -> Result<Built, Error> {
    let (format, tree, git) = match input {
        Input::Directory(dir) => {
            (SourceFormat::Directory, source::from_directory(&dir, selection, limits)?, None)
        }
        Input::Archive(file) => {
            let (format, tree) = source::from_archive(file, selection, limits, spool_dir)?;
            (format, tree, None)
        }
        Input::Git(git) => {
            let (revision, tree) = source::from_git(&git.source, &git.request, selection, limits, spool_dir)?;
            (SourceFormat::Git, tree, Some(revision))
        }
    };
    let packed = package::pack(&tree, options, out)?;
    Ok(Built { packed, format, git })
}
