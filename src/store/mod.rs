//! Where packages go: one narrow [`Store`] trait, a local-directory backend and an S3 backend,
//! dispatched through the closed enum [`Backend`], and one contract test suite for both.
//!
//! The store offers primitives; the dedup algorithm built on them (HEAD, verify, put once,
//! verify again after a lost race) lives in the packages service, so it is the same for every
//! backend. `put_if_absent` must be atomic and exactly-once on every backend: `If-None-Match: *`
//! on S3, a no-clobber link on disk. A partial object never appears under a final key.
//!
//! Every method takes a typed [`StoreKey`] and every listing a typed [`ListPrefix`]: a key is
//! parsed once, at the edge, and keeps its type down to the backend, which alone turns it into a
//! name. The store's configuration types live here too ([`config`]), so that the configuration
//! module imports the store and never the other way round.

pub mod config;
pub mod key;
pub mod local;
pub mod s3;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream::BoxStream;

use self::key::{ListPrefix, ObjectKey, StoreKey};
use self::local::LocalStore;
use self::s3::S3Store;
use crate::package::Sha256Hex;

/// User metadata stored with an object when it is created, and returned by
/// [`Store::head`]: lowercase ASCII names, US-ASCII values (S3 sends them as `x-amz-meta-*`
/// headers, 2 KB in all; the local store keeps them in a sidecar file). Empty for objects
/// stored without any.
pub type Metadata = BTreeMap<String, String>;

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// When it was stored.
    pub last_modified: Option<SystemTime>,
    /// S3 version id, on versioned buckets.
    pub version_id: Option<String>,
    /// Base64 SHA-256 checksum, when the store keeps one (S3 objects uploaded with one).
    pub checksum_sha256: Option<String>,
    /// The object's user metadata ([`Store::head`] only; listings leave it empty).
    pub metadata: Metadata,
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
    /// An unlinked temp file at its start (gone when dropped, unless a local store linked it
    /// into place: it does so without a copy when the file is on the store's file system).
    /// Backends read it through `/proc/self/fd`, so it needs no name of its own.
    File(std::fs::File),
}

/// An object waiting to be stored: its bytes, size, digest and metadata.
#[derive(Debug)]
pub struct Staged {
    /// The bytes.
    pub data: StagedBytes,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: Sha256Hex,
    /// Stored with the object, atomically: a reader never sees the object without it.
    pub metadata: Metadata,
}

/// A path that opens `file` again (anew, at its start), whether or not it has a name: its
/// `/proc/self/fd` link, valid while `file` is open. What a backend that reads from paths (the
/// SDK, which reopens a body for each retry) or links files into place is given.
pub(crate) fn fd_path(file: &std::fs::File) -> std::path::PathBuf {
    use std::os::fd::AsRawFd as _;
    std::path::PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

impl Staged {
    /// Small bytes in memory, with no metadata.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let (size, sha256) = (bytes.len() as u64, Sha256Hex::of_bytes(&bytes));
        Self { data: StagedBytes::Memory(bytes.into()), size, sha256, metadata: Metadata::new() }
    }
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

/// One [`Store::list`] call: a typed prefix, where to start, and how many names at most.
///
/// Names come back in ascending byte order (S3's order, and the local store's), starting after
/// `start_after` when given. One call is one request to the backend (one `ListObjectsV2`), so a
/// caller can count what a listing costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    prefix: ListPrefix,
    start_after: Option<String>,
    max: usize,
}

impl ListRequest {
    /// The first names under `prefix`, at most `max` of them (S3 caps one call at 1,000).
    pub fn new(prefix: ListPrefix, max: usize) -> Self {
        Self { prefix, start_after: None, max: max.clamp(1, MAX_LIST) }
    }

    /// The same listing, with another page size.
    pub fn with_max(mut self, max: usize) -> Self {
        self.max = max.clamp(1, MAX_LIST);
        self
    }

    /// Continues after the key `key`.
    pub fn after_key(mut self, key: &StoreKey) -> Self {
        self.start_after = Some(key.name());
        self
    }

    /// Continues where an earlier listing stopped.
    pub fn after(mut self, cursor: &ListCursor) -> Self {
        self.start_after = Some(cursor.0.clone());
        self
    }

    /// The typed prefix.
    pub fn prefix(&self) -> &ListPrefix {
        &self.prefix
    }

    /// Where the listing starts (exclusive), as a raw name.
    pub fn start_after(&self) -> Option<&str> {
        self.start_after.as_deref()
    }

    /// Most names returned.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Most names one [`Store::list`] call returns: S3's own page limit.
pub const MAX_LIST: usize = 1000;

/// Where a listing stopped: the last name it looked at (which may be a name it skipped, as no
/// key of the listed kind). Opaque: only a store makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor(String);

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The keys of the listed kind, in ascending order of their names, with what the listing
    /// says about each (size and time; no version id, checksum or metadata).
    pub objects: Vec<(StoreKey, ObjectMeta)>,
    /// `Some` when there may be more names after this page: pass it to
    /// [`ListRequest::after`].
    pub next: Option<ListCursor>,
}

impl ListCursor {
    /// A cursor after the raw name `name` (backends only).
    pub(crate) fn after_name(name: String) -> Self {
        Self(name)
    }
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

    /// Metadata of the object under `key`, or `None` if there is none. An access error is an
    /// error, never `None`.
    fn head(&self, key: &StoreKey) -> impl Future<Output = Result<Option<ObjectMeta>, Error>> + Send;

    /// Stores `staged` (bytes and metadata) under `key` unless something is already there,
    /// atomically.
    fn put_if_absent(
        &self,
        key: &StoreKey,
        staged: Staged,
    ) -> impl Future<Output = Result<PutOutcome, Error>> + Send;

    /// One page of the keys a [`ListRequest`] asks for, in ascending order of their names: one
    /// request to the backend.
    fn list(&self, request: &ListRequest) -> impl Future<Output = Result<Listing, Error>> + Send;

    /// A byte range of an object (for reading a zip's central directory without downloading it).
    fn read_range(
        &self,
        key: &StoreKey,
        range: ByteRange,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send;

    /// The whole object, streamed.
    fn get(&self, key: &StoreKey) -> impl Future<Output = Result<ObjectBody, Error>> + Send;

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

    async fn head(&self, key: &StoreKey) -> Result<Option<ObjectMeta>, Error> {
        dispatch!(self, s => s.head(key).await)
    }

    async fn put_if_absent(&self, key: &StoreKey, staged: Staged) -> Result<PutOutcome, Error> {
        dispatch!(self, s => s.put_if_absent(key, staged).await)
    }

    async fn list(&self, request: &ListRequest) -> Result<Listing, Error> {
        dispatch!(self, s => s.list(request).await)
    }

    async fn read_range(&self, key: &StoreKey, range: ByteRange) -> Result<Bytes, Error> {
        dispatch!(self, s => s.read_range(key, range).await)
    }

    async fn get(&self, key: &StoreKey) -> Result<ObjectBody, Error> {
        dispatch!(self, s => s.get(key).await)
    }

    async fn ready(&self) -> Result<(), Error> {
        dispatch!(self, s => s.ready().await)
    }
}

/// How many requests of each kind a [`Counted`] store has made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// `head` calls.
    pub head: u64,
    /// `put_if_absent` calls.
    pub put: u64,
    /// `list` calls (one backend listing request each).
    pub list: u64,
    /// `get` calls.
    pub get: u64,
    /// `read_range` calls.
    pub read_range: u64,
}

impl RequestCounts {
    /// Every request.
    pub fn total(&self) -> u64 {
        self.head + self.put + self.list + self.get + self.read_range
    }

    /// The requests made since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            head: self.head - earlier.head,
            put: self.put - earlier.put,
            list: self.list - earlier.list,
            get: self.get - earlier.get,
            read_range: self.read_range - earlier.read_range,
        }
    }
}

/// A store that counts its requests, by kind, and exports them as the metric
/// `store_requests_total{operation}`: what a listing costs is an operator's question (S3 bills
/// by request) and a test's assertion (a page costs a bounded number, whatever the total).
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    counts: [std::sync::atomic::AtomicU64; 5],
}

impl<S> Counted<S> {
    /// Counts `inner`'s requests from now on.
    pub fn new(inner: S) -> Self {
        Self { inner, counts: Default::default() }
    }

    /// The requests made so far.
    pub fn counts(&self) -> RequestCounts {
        let n = |i: usize| self.counts[i].load(std::sync::atomic::Ordering::Relaxed);
        RequestCounts { head: n(0), put: n(1), list: n(2), get: n(3), read_range: n(4) }
    }

    fn count(&self, op: usize) {
        const NAMES: [&str; 5] = ["head", "put", "list", "get", "read_range"];
        self.counts[op].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("store_requests_total", "operation" => NAMES[op]).increment(1);
    }
}

impl<S: Store> Store for Counted<S> {
    fn bucket(&self) -> Option<&str> {
        self.inner.bucket()
    }

    fn location(&self, key: &ObjectKey) -> String {
        self.inner.location(key)
    }

    async fn head(&self, key: &StoreKey) -> Result<Option<ObjectMeta>, Error> {
        self.count(0);
        self.inner.head(key).await
    }

    async fn put_if_absent(&self, key: &StoreKey, staged: Staged) -> Result<PutOutcome, Error> {
        self.count(1);
        self.inner.put_if_absent(key, staged).await
    }

    async fn list(&self, request: &ListRequest) -> Result<Listing, Error> {
        self.count(2);
        self.inner.list(request).await
    }

    async fn get(&self, key: &StoreKey) -> Result<ObjectBody, Error> {
        self.count(3);
        self.inner.get(key).await
    }

    async fn read_range(&self, key: &StoreKey, range: ByteRange) -> Result<Bytes, Error> {
        self.count(4);
        self.inner.read_range(key, range).await
    }

    async fn ready(&self) -> Result<(), Error> {
        self.inner.ready().await
    }
}
