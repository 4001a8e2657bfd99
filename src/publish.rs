//! The one use case shared by the HTTP API and the CLI: input bytes in, canonical zip out.
//!
//! decode (`source`) → canonicalize and hash (`package`). Callers choose where the zip file lives
//! (a temp file next to `--out`, or the store's staging area) and what happens to it next.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::package::{self, Limits, PackOptions, Packed};
use crate::source::{self, Selection, SourceFormat};

/// Where the source tree comes from.
#[derive(Debug)]
pub enum Input {
    /// A local directory (CLI only: the service never reads its own disk on request).
    Directory(PathBuf),
    /// An archive file (tar, tar.gz or zip, detected from its bytes).
    Archive(File),
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
    let (format, tree) = match input {
        Input::Directory(dir) => (SourceFormat::Directory, source::from_directory(&dir, selection, limits)?),
        Input::Archive(file) => source::from_archive(file, selection, limits, spool_dir)?,
    };
    let packed = package::pack(&tree, options, out)?;
    Ok(Built { packed, format })
}
