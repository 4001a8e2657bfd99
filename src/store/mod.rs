//! Where packages go: one narrow [`Store`] trait, a local-directory backend and an S3 backend,
//! dispatched through the closed enum [`Backend`], and one contract test suite for both.
//!
//! The store offers primitives; the dedup algorithm built on them (HEAD, verify, put once,
//! verify again after a lost race) lives in `publish`, so it is the same for every backend.
//! `put_if_absent` must be atomic and exactly-once on every backend: `If-None-Match: *` on S3, a
//! no-clobber link on disk. A partial object never appears under a final key.

pub mod key;
pub mod local;
pub mod s3;

use std::future::Future;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use tempfile::NamedTempFile;

use self::key::ObjectKey;
use self::local::LocalStore;
use self::s3::S3Store;
use crate::package::Sha256Hex;

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored.
    pub last_modified: Option<SystemTime>,
    /// S3 version id, on versioned buckets.
    pub version_id: Option<String>,
    /// Base64 SHA-256 checksum, when the store keeps one (S3 objects uploaded with one).
    pub checksum_sha256: Option<String>,
}

/// The result of [`Store::put_if_absent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// This call stored the object.
    Created {
        /// S3 version id, on versioned buckets.
        version_id: Option<String>,
    },
    /// The key already existed; nothing was written.
    AlreadyExists,
}

/// Where a finished zip waits to be stored.
#[derive(Debug)]
pub enum StagedBytes {
    /// In memory (small packages: no temp file is created unless a local store stores it).
    Memory(bytes::Bytes),
    /// A temp file in the store's staging directory, if it has one (removed when dropped,
    /// unless a local store linked it into place).
    File(NamedTempFile),
}

/// A finished zip waiting to be stored: its bytes, size and digest.
#[derive(Debug)]
pub struct Staged {
    /// The bytes.
    pub data: StagedBytes,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: Sha256Hex,
}

/// A byte range of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// The last N bytes.
    Tail(u64),
    /// `start..end` (end exclusive).
    Span {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
}

/// An object's bytes, as a stream.
pub struct ObjectBody {
    /// Size in bytes.
    pub size: u64,
    /// The bytes.
    pub stream: BoxStream<'static, io::Result<Bytes>>,
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBody").field("size", &self.size).finish_non_exhaustive()
    }
}

/// Why a store operation failed. Backends map their own errors into these at their boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No object under the key.
    #[error("no such object")]
    NotFound,
    /// The store cannot be reached or is overloaded, after the backend's own retries.
    #[error("the store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store refused our credentials for this operation (never read as "absent").
    #[error("the store denied access")]
    Denied(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Any other backend failure.
    #[error("the store failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A local I/O failure.
    #[error("store I/O failed")]
    Io(#[from] io::Error),
}

/// The operations lambda-packager needs from a place that holds packages.
pub trait Store: Send + Sync {
    /// The bucket name, for responses (`None` for a local directory).
    fn bucket(&self) -> Option<&str>;

    /// A URL for humans: `s3://bucket/key` or `file:///dir/key`.
    fn location(&self, key: &ObjectKey) -> String;

    /// A directory where zips should be built so [`Store::put_if_absent`] can publish them
    /// without a copy (the local store's own staging directory), if the backend has one.
    fn staging_dir(&self) -> Option<&Path>;

    /// Metadata of the object under `key`, or `None` if there is none. An access error is an
    /// error, never `None`.
    fn head(&self, key: &str) -> impl Future<Output = Result<Option<ObjectMeta>, Error>> + Send;

    /// Stores `staged` under `key` unless something is already there, atomically.
    fn put_if_absent(
        &self,
        key: &ObjectKey,
        staged: Staged,
    ) -> impl Future<Output = Result<PutOutcome, Error>> + Send;

    /// Every object whose key starts with `prefix` and has no `/` after it (objects in deeper
    /// "folders" are not listed), up to `max` of them, in any order.
    fn list(&self, prefix: &str, max: usize) -> impl Future<Output = Result<Vec<ObjectMeta>, Error>> + Send;

    /// A byte range of an object (for reading a zip's central directory without downloading it).
    fn read_range(&self, key: &str, range: ByteRange) -> impl Future<Output = Result<Bytes, Error>> + Send;

    /// The whole object, streamed.
    fn get(&self, key: &str) -> impl Future<Output = Result<ObjectBody, Error>> + Send;

    /// Whether the store is reachable and usable (for `/readyz`).
    fn ready(&self) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The configured backend. A closed enum: handlers stay free of generics, and a missing backend
/// is a compile error, not a runtime one.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A local directory.
    Local(LocalStore),
    /// An S3 bucket.
    S3(S3Store),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Backend::Local($s) => $e,
            Backend::S3($s) => $e,
        }
    };
}

impl Store for Backend {
    fn bucket(&self) -> Option<&str> {
        dispatch!(self, s => s.bucket())
    }

    fn location(&self, key: &ObjectKey) -> String {
        dispatch!(self, s => s.location(key))
    }

    fn staging_dir(&self) -> Option<&Path> {
        dispatch!(self, s => s.staging_dir())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, Error> {
        dispatch!(self, s => s.head(key).await)
    }

    async fn put_if_absent(&self, key: &ObjectKey, staged: Staged) -> Result<PutOutcome, Error> {
        dispatch!(self, s => s.put_if_absent(key, staged).await)
    }

    async fn list(&self, prefix: &str, max: usize) -> Result<Vec<ObjectMeta>, Error> {
        dispatch!(self, s => s.list(prefix, max).await)
    }

    async fn read_range(&self, key: &str, range: ByteRange) -> Result<Bytes, Error> {
        dispatch!(self, s => s.read_range(key, range).await)
    }

    async fn get(&self, key: &str) -> Result<ObjectBody, Error> {
        dispatch!(self, s => s.get(key).await)
    }

    async fn ready(&self) -> Result<(), Error> {
        dispatch!(self, s => s.ready().await)
    }
}
