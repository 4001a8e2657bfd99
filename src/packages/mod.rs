//! The packages service: every use case of the product, in one place, with no HTTP type.
//!
//! [`Packages`] owns what the use cases need (the store, the blocking pool, the git sources, the
//! input limits, the temp directory and the key-prefix policy) and offers them as methods:
//! [`publish`](Packages::publish) (input to stored package, exactly once, indexed and with its
//! provenance), [`lookup`](Packages::lookup) (whether a package a client built is stored, so it
//! need not upload it), and the read side: [`list_functions`](Packages::list_functions),
//! [`list_packages`](Packages::list_packages) (all, or by commit or upload digest),
//! [`latest`](Packages::latest), [`get`](Packages::get) (metadata, provenance, manifest),
//! [`download`](Packages::download) and [`diff`](Packages::diff). The listing index that
//! answers the lists is in `index`. The HTTP handlers
//! only parse a request, call one method and map its answer; the CLI calls [`build`], the pure
//! part of publishing, directly.
//!
//! Dependencies point one way: `packages` → `source`, `package`, `store`, `blocking`; nothing
//! below imports it, and `http` and `cli` import it.

mod error;
mod flight;
mod index;
mod lookup;
mod provenance;
mod publish;
mod read;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

pub use self::error::Error;
pub use self::flight::PackCounts;
pub use self::index::{
    Backfill, CLAIM_LEASE, FunctionPage, FunctionSummary, LEGACY_RUN, PackageFilter, PackagePage, Row,
};
pub use self::lookup::LookupRequest;
pub use self::provenance::{GitProvenance, Provenance};
pub use self::publish::{
    Built, Decoded, Error as BuildError, Input, Outcome, PublishRequest, Published, build, decode,
};
pub use self::read::{ArtifactDiff, ChangedEntry, Download, PackageDetail};
use crate::blocking::BlockingPool;
use crate::package::{CancelFlag, EntryCache, Limits};
use crate::source::git::{GitRequest, GitSource};
use crate::store::key::{FunctionName, KeyPrefix, ObjectKey};
use crate::store::{Backend, Counted, RequestCounts, Store};

/// How keys are prefixed: the operator's prefix, before every key, and whether a request may
/// add its own after it. The one place that joins the two.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixPolicy {
    /// The operator's prefix (`store.prefix`).
    pub operator: KeyPrefix,
    /// Whether requests may add a prefix (`store.allow_request_prefix`).
    pub allow_request: bool,
}

impl PrefixPolicy {
    /// The whole prefix of a request's keys: the operator's, then the request's own, if it may
    /// give one.
    pub fn resolve(&self, request: Option<&KeyPrefix>) -> Result<KeyPrefix, Error> {
        match request {
            None => Ok(self.operator.clone()),
            Some(p) if p.as_str().is_empty() => Ok(self.operator.clone()),
            Some(_) if !self.allow_request => Err(Error::PrefixNotAllowed),
            Some(p) => self.operator.join(p).map_err(Error::InvalidPrefix),
        }
    }
}

/// What the packages service is configured with, besides the store, the pool and git.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Limits on every input.
    pub limits: Limits,
    /// Compression threads per package.
    pub threads: NonZeroUsize,
    /// Where spools and zips being built go once they pass 1 MiB (`None`: the system's).
    pub temp_dir: Option<PathBuf>,
    /// The compressed-entry cache every pack uses (`None`: off).
    pub cache: Option<EntryCache>,
    /// Key prefixes.
    pub prefixes: PrefixPolicy,
    /// Most names one store listing request asks for (`store.list_page_size`, 1 to 1,000).
    pub list_page_size: usize,
}

/// The packages service. Share one per process (`Arc`).
#[derive(Debug)]
pub struct Packages {
    /// The store, counting its requests.
    store: Counted<Backend>,
    pool: BlockingPool,
    /// Shared with the blocking work of each git request (no request carries its own).
    git: Arc<GitSource>,
    settings: Settings,
    /// One lock per key being stored, so concurrent requests for one key in this replica
    /// upload once: the others wait, then find the object with HEAD.
    inflight: Mutex<HashMap<ObjectKey, Weak<tokio::sync::Mutex<()>>>>,
    /// Identical archive requests in progress, sharing one build (see `flight`).
    flights: Arc<flight::Flights>,
    /// The parent of every request's cancel flag: cancelling it stops all work in flight.
    in_flight_work: CancelFlag,
    /// The index's cutover time, once known (see `index`).
    cutover: tokio::sync::OnceCell<SystemTime>,
    /// Functions whose index marker this process has written or seen.
    functions_seen: Mutex<HashSet<FunctionName>>,
}

impl Packages {
    /// The service over `store`, building in `pool`, reading git sources from `git`.
    pub fn new(store: Backend, pool: BlockingPool, git: GitSource, settings: Settings) -> Self {
        Self {
            store: Counted::new(store),
            pool,
            git: Arc::new(git),
            settings,
            inflight: Mutex::new(HashMap::new()),
            flights: Arc::default(),
            in_flight_work: CancelFlag::default(),
            cutover: tokio::sync::OnceCell::new(),
            functions_seen: Mutex::new(HashSet::new()),
        }
    }

    /// The store requests this service has made so far, by kind (also the metric
    /// `store_requests_total`).
    pub fn store_requests(&self) -> RequestCounts {
        self.store.counts()
    }

    /// The packs this service ran, and the requests that shared another's instead (also the
    /// metrics `packs_total` and `packs_shared_total`).
    pub fn pack_counts(&self) -> PackCounts {
        self.flights.counts()
    }

    /// Groups of identical archive requests being built right now (each one build).
    pub fn shared_builds_in_progress(&self) -> usize {
        self.flights.in_progress()
    }

    /// Cancels the blocking work of every request in flight (and of any later one): what a
    /// shutdown does once its grace period is over, so that the process can exit.
    pub fn cancel_in_flight(&self) {
        self.in_flight_work.cancel();
    }

    /// Packaging workers busy right now.
    pub fn busy_workers(&self) -> usize {
        self.pool.busy()
    }

    /// Runs `work` in the packaging pool, as a package build would: for tests and tools that
    /// need to occupy a worker.
    pub async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        Ok(self.pool.run(work).await?)
    }

    /// Whether git requests are served (some remote is allow-listed).
    pub fn accepts_git(&self) -> bool {
        self.git.is_enabled()
    }

    /// Checks a git request without any network I/O (allow-listed remote, well-formed ref), so
    /// that a caller can refuse it before the upload or the queue.
    pub fn check_git(&self, request: &GitRequest) -> Result<(), Error> {
        if !self.git.is_enabled() {
            return Err(Error::GitSourceDisabled);
        }
        self.git.check(request).map_err(|e| Error::Build(BuildError::Source(e)))
    }

    /// Whether the store is reachable and usable.
    pub async fn ready(&self) -> Result<(), Error> {
        Ok(self.store.ready().await?)
    }

    /// The key-prefix policy.
    pub fn prefixes(&self) -> &PrefixPolicy {
        &self.settings.prefixes
    }

    fn key_lock(&self, key: &ObjectKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.clone(), Arc::downgrade(&lock));
        lock
    }

    /// Where an object is, for people and for CloudFormation: the bucket (`None` for a local
    /// store) and an `s3://` or `file://` URL.
    fn locate(&self, key: &ObjectKey) -> (Option<String>, String) {
        (self.store.bucket().map(str::to_owned), self.store.location(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_prefix_follows_the_operators_only_when_allowed() {
        let p = |s: &str| s.parse::<KeyPrefix>().expect("a prefix");
        let closed = PrefixPolicy { operator: p("ops/"), allow_request: false };
        assert_eq!(closed.resolve(None).expect("no request prefix"), p("ops/"));
        assert_eq!(closed.resolve(Some(&p(""))).expect("an empty one is none"), p("ops/"));
        assert!(matches!(closed.resolve(Some(&p("ci/"))), Err(Error::PrefixNotAllowed)));
        let open = PrefixPolicy { allow_request: true, ..closed };
        assert_eq!(open.resolve(Some(&p("ci/"))).expect("joined"), p("ops/ci/"));
        let long = p(&format!("{}/", "x".repeat(510)));
        assert!(matches!(open.resolve(Some(&long)), Err(Error::InvalidPrefix(_))));
    }
}
