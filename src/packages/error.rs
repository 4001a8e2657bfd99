//! The packages service's errors: what went wrong in a use case, in domain terms. `http` maps
//! each variant to a status and a stable code in one match; the CLI reads [`BuildError`]'s own
//! codes.

use super::publish::Error as BuildError;
use crate::blocking::PoolError;
use crate::package::manifest::ManifestError;
use crate::store::{self, key::KeyError, key::ObjectKey};

/// Why a use case of the packages service failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building failed: the input is unusable, or the zip could not be written.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// No worker was free, or the work panicked.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The key already holds different bytes: never reported as success.
    #[error("{key} already exists with different content ({stored_size} bytes stored, {size} bytes built)")]
    KeyConflict {
        /// The key.
        key: ObjectKey,
        /// Size of the stored object.
        stored_size: u64,
        /// Size of the package just built.
        size: u64,
    },
    /// The operator's and the request's prefixes do not form a valid prefix.
    #[error("invalid key prefix: {0}")]
    InvalidPrefix(#[source] KeyError),
    /// A request prefix on a service that does not allow them.
    #[error("this server does not allow per-request key prefixes")]
    PrefixNotAllowed,
    /// A git request to a service without git sources.
    #[error("git sources are not enabled on this server")]
    GitSourceDisabled,
    /// The package is new, but the disk was too full to stage it for the store.
    #[error("no space left to stage the new {size}-byte package")]
    InsufficientStorage {
        /// Size of the package that could not be kept.
        size: u64,
    },
    /// An index entry is not what this service writes (bad JSON, a missing slot).
    #[error("the listing index is damaged: {0}")]
    IndexCorrupt(String),
    /// Appending to a function's log kept losing to other replicas (never reaches a client:
    /// index writes do not fail a publish).
    #[error("the listing index is contended: {0}")]
    IndexContention(String),
    /// A listing cursor this service did not make.
    #[error("not a cursor from this API")]
    InvalidCursor,
    /// The function has no package.
    #[error("function {0} has no package")]
    NoPackages(crate::store::key::FunctionName),
    /// No package under the key.
    #[error("no package under {0}")]
    NotFound(ObjectKey),
    /// The failure of an identical request this one waited for (single flight): its input is
    /// this request's input, so its refusal is this request's too.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
    /// The object under a package key is not a readable zip (its end record or central
    /// directory is damaged): the store holds bad bytes, which no retry of this request fixes.
    #[error("the object under {key} is not a readable zip")]
    Corrupt {
        /// The key.
        key: ObjectKey,
        /// What is wrong with it.
        #[source]
        reason: ManifestError,
    },
}

impl Error {
    /// Whether the input is at fault (a malformed or unacceptable archive or selection): a
    /// failure that any request with the same input and options meets again.
    pub fn is_input_error(&self) -> bool {
        match self {
            Self::Build(BuildError::Source(e)) => e.is_input_error(),
            Self::Shared(e) => e.is_input_error(),
            _ => false,
        }
    }
}
