//! The listing index: which functions exist, a function's packages newest first, and which
//! packages a commit or an upload produced, at any count, for a bounded number of store
//! requests per page.
//!
//! Replicas share a bucket and nothing else, so the index is made only of small immutable
//! objects that each replica writes on its own, every one with the same conditional put as a
//! package (`If-None-Match: *`, or a no-clobber rename): no object is ever rewritten, no
//! replica waits for another. Under `{store.prefix}.lambda-packager/index/v1/` (names in
//! [`IndexEntry`]):
//!
//! - `functions/{f}`: the function has packages. A page of the functions list is one LIST.
//! - `fn/{f}/log/a{u64::MAX - k}`: the `k`-th **slot** of the function's live log, a JSON
//!   `{"total", "rows"}` holding one or more package rows (newest first) and the number of rows
//!   in slots 1 to `k`. Inverted numbers make S3's ascending order newest first, so a page is
//!   one LIST plus a GET per slot it touches, and the newest slot (one LIST of one key, one GET)
//!   gives the function's newest package and its count. A slot is appended by reading the
//!   newest, then putting `k + 1` conditionally: exactly one replica wins each number, a loser
//!   reads again and retries, so slots are contiguous and every row is in exactly one.
//! - `fn/{f}/log/b{…}`: the **legacy** log, packages stored before the index existed, written
//!   once by [`Packages::backfill_legacy`] in runs of [`LEGACY_RUN`] rows sorted by time. `b`
//!   sorts after `a`: every legacy package lists after every live one (they are older).
//! - `fn/{f}/claim/{id}.{g}` and `fn/{f}/done/{id}`: one package, indexed exactly once. The
//!   replica whose claim wins appends the row, then marks it done. A re-post of a stored package
//!   that finds no `done` (its creator crashed, or its index write failed) claims it and indexes
//!   it; a claim older than [`CLAIM_LEASE`] without `done` is taken over by the next generation,
//!   which first looks for the row in the newest slots (its holder may have crashed after the
//!   append, before the mark).
//! - `fn/{f}/commit/{commit}.{k}.{row}` and `fn/{f}/source/{sha256}.{k}.{row}`: lookups, each a
//!   copy of the row; `?commit=abc1234` is a LIST of the names that start with those digits.
//! - `legacy/cutover` and `legacy/done`: the moment that divides legacy objects from the others
//!   (the cutover object's own time, from the store's clock), and the end of the scan.
//!
//! What this guarantees, and what it does not, is in ARCHITECTURE.md ("The listing index").

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

use super::provenance::Provenance;
use super::{Error, Packages};
use crate::package::{Packed, Sha256Hex};
use crate::store::key::{
    CommitPrefix, FunctionName, IndexEntry, KeyPrefix, ListPrefix, ObjectKey, PackageId, Segment, StoreKey,
};
use crate::store::{ListRequest, ObjectMeta, PutOutcome, Staged, Store};

/// Rows per slot of the legacy log, as the scan writes them.
pub const LEGACY_RUN: usize = 256;

/// How long a claim stands without its `done` before another replica may take it over.
pub const CLAIM_LEASE: Duration = Duration::from_secs(10 * 60);

/// How long after its claim a replica still appends a row. Past it, the replica gives up and
/// leaves the package to a takeover, so that a slow claimer and a takeover never both append
/// (the lease is ten times longer).
const CLAIM_ABANDON: Duration = Duration::from_secs(60);

/// How far past the cutover's second the legacy scan starts, for the skew between this
/// replica's clock and the store's.
const CLOCK_MARGIN: Duration = Duration::from_secs(1);

/// Newest live slots a claim takeover reads for the row of a holder that crashed before it
/// marked the row done (more appends than this within the lease, and the row is added again).
const TAKEOVER_SCAN: usize = 64;

/// Attempts to append one slot before giving up (each loses only to another replica's append).
const APPEND_ATTEMPTS: usize = 32;

/// Slots read at once while a page is assembled.
const READ_AHEAD: usize = 8;

/// Largest index object read (a legacy slot of 256 rows is about 80 KB).
const MAX_ENTRY_BYTES: usize = 4 << 20;

/// One package, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Its key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// Files in the zip (`None` for legacy packages, whose zip was not read).
    pub files: Option<u64>,
    /// When it was stored (legacy packages: the object's time in the store).
    #[serde(with = "rfc3339")]
    pub created: SystemTime,
    /// The name of the token that stored it.
    pub created_by: Option<String>,
    /// The input format (`None` for legacy packages).
    pub format: Option<String>,
    /// The git commit it was built from.
    pub commit: Option<String>,
    /// SHA-256 of the archive it was built from.
    pub source_sha256: Option<Sha256Hex>,
    /// The S3 version id, on versioned buckets.
    pub version_id: Option<String>,
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        humantime::parse_rfc3339(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Row {
    /// The row of a package this service just built, from its provenance.
    pub(super) fn new(
        key: &ObjectKey,
        packed: &Packed,
        provenance: &Provenance,
        version_id: Option<String>,
    ) -> Self {
        Self {
            key: key.clone(),
            size: packed.size,
            files: Some(packed.files),
            created: provenance.created,
            created_by: provenance.created_by.clone(),
            format: Some(provenance.input_format.clone()),
            commit: provenance.git.as_ref().map(|g| g.commit.clone()),
            source_sha256: provenance.source_sha256,
            version_id,
        }
    }
}

/// A slot of a function's log.
#[derive(Debug, Serialize, Deserialize)]
struct Slot {
    /// Rows in this slot and every earlier one of its segment.
    total: u64,
    /// Newest first.
    rows: Vec<Row>,
}

/// The `done` marker of a package.
#[derive(Debug, Serialize, Deserialize)]
struct Done {
    k: u64,
}

/// Which of a function's packages a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageFilter {
    /// All of them, newest first.
    All,
    /// Those built from a commit starting with these digits (by commit, then newest first).
    Commit(CommitPrefix),
    /// Those built from an upload with this SHA-256, newest first.
    Source(Sha256Hex),
}

/// A page of a function's packages.
#[derive(Debug, Clone)]
pub struct PackagePage {
    /// This page.
    pub rows: Vec<Row>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// One function in the functions list.
#[derive(Debug, Clone)]
pub struct FunctionSummary {
    /// The function.
    pub function: FunctionName,
    /// How many packages it has.
    pub packages: u64,
    /// Its newest package.
    pub latest: Option<Row>,
}

/// A page of the functions list.
#[derive(Debug, Clone)]
pub struct FunctionPage {
    /// This page, by name.
    pub functions: Vec<FunctionSummary>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What the legacy scan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backfill {
    /// Whether the scan had been done before (nothing was read).
    pub already_done: bool,
    /// Objects stored before the cutover that the scan indexed.
    pub packages: usize,
    /// Functions they belong to.
    pub functions: usize,
}

fn encode(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn decode(cursor: &str) -> Result<String, Error> {
    let raw =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| Error::InvalidCursor)?;
    String::from_utf8(raw).map_err(|_| Error::InvalidCursor)
}

/// A position in a function's log: the slot to read next and the rows of it already shown.
fn encode_position(segment: Segment, k: u64, skip: usize) -> String {
    let letter = if segment == Segment::Live { 'a' } else { 'b' };
    encode(&format!("log:{letter}:{k}:{skip}"))
}

fn decode_position(cursor: &str) -> Result<(Segment, u64, usize), Error> {
    let text = decode(cursor)?;
    let parts: Vec<&str> = text.split(':').collect();
    let ["log", letter, k, skip] = parts.as_slice() else { return Err(Error::InvalidCursor) };
    let segment = match *letter {
        "a" => Segment::Live,
        "b" => Segment::Legacy,
        _ => return Err(Error::InvalidCursor),
    };
    let k: u64 = k.parse().map_err(|_| Error::InvalidCursor)?;
    let skip: usize = skip.parse().map_err(|_| Error::InvalidCursor)?;
    if k == 0 {
        return Err(Error::InvalidCursor);
    }
    Ok((segment, k, skip))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Packages {
    fn index_key(&self, entry: IndexEntry) -> StoreKey {
        StoreKey::index(&self.settings.prefixes.operator, entry)
    }

    fn root(&self) -> KeyPrefix {
        self.settings.prefixes.operator.clone()
    }

    /// A small JSON object, or `None` if there is none under `key`.
    async fn read_json<T: for<'de> Deserialize<'de>>(&self, key: &StoreKey) -> Result<Option<T>, Error> {
        let body = match self.store.get(key).await {
            Ok(body) => body,
            Err(crate::store::Error::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = Vec::new();
        let mut stream = body.stream;
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(crate::store::Error::Io)?);
            if bytes.len() > MAX_ENTRY_BYTES {
                return Err(Error::IndexCorrupt(format!("{key} is larger than {MAX_ENTRY_BYTES} bytes")));
            }
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::IndexCorrupt(format!("{key}: {e}")))
    }

    async fn put_json(&self, key: &StoreKey, value: &impl Serialize) -> Result<PutOutcome, Error> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::IndexCorrupt(e.to_string()))?;
        Ok(self.store.put_if_absent(key, Staged::from_bytes(bytes)).await?)
    }

    /// The cutover: the store's time of the `legacy/cutover` object, written by the first
    /// replica that needs it (before it stores any package, so no package this version stores
    /// is older). Cached for the life of the process.
    pub(super) async fn cutover(&self) -> Result<SystemTime, Error> {
        self.cutover
            .get_or_try_init(|| async {
                let key = self.index_key(IndexEntry::Cutover);
                self.put_json(&key, &serde_json::json!({})).await?;
                let meta = self
                    .store
                    .head(&key)
                    .await?
                    .ok_or_else(|| Error::IndexCorrupt(format!("{key} vanished after it was written")))?;
                meta.last_modified.ok_or_else(|| Error::IndexCorrupt(format!("{key} has no time")))
            })
            .await
            .copied()
    }

    /// Whether a stored package predates the index (the scan lists it, not the live log): its
    /// time, to the second (what S3 keeps), is before the cutover's, or the same second and it
    /// has no provenance (which every package of this version has).
    async fn is_legacy(&self, meta: &ObjectMeta) -> Result<bool, Error> {
        let cutover = secs(self.cutover().await?);
        let stored = meta.last_modified.map_or(0, secs);
        Ok(stored < cutover || (stored == cutover && Provenance::from_metadata(&meta.metadata).is_none()))
    }

    async fn ensure_function(&self, function: &FunctionName) -> Result<(), Error> {
        if self.functions_seen.lock().unwrap_or_else(|p| p.into_inner()).contains(function) {
            return Ok(());
        }
        self.put_json(&self.index_key(IndexEntry::Function(function.clone())), &serde_json::json!({}))
            .await?;
        self.functions_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(function.clone());
        Ok(())
    }

    /// The newest slot of a segment of `function`'s log (one LIST, one GET), or `None`.
    async fn newest_slot(
        &self,
        function: &FunctionName,
        segment: Segment,
    ) -> Result<Option<(u64, Slot)>, Error> {
        let prefix =
            ListPrefix::Log { root: self.root(), function: function.clone(), segment: Some(segment) };
        let listing = self.store.list(&ListRequest::new(prefix, 1)).await?;
        let Some((key, _)) = listing.objects.into_iter().next() else { return Ok(None) };
        let Some(IndexEntry::Slot { k, .. }) = key.as_index() else { return Ok(None) };
        let k = *k;
        let slot =
            self.read_json(&key).await?.ok_or_else(|| Error::IndexCorrupt(format!("{key} vanished")))?;
        Ok(Some((k, slot)))
    }

    /// Appends `rows` (newest first) to `function`'s live log as one slot, and their commit and
    /// source lookups: the indexing entry point. A publish appends one row; an import of many
    /// packages may append runs. Returns the slot's number.
    ///
    /// Each attempt reads the newest slot and puts the next one conditionally; losing that put
    /// to another replica means reading again. `deadline`: give up before a put past it.
    pub async fn append_rows(&self, function: &FunctionName, rows: Vec<Row>) -> Result<u64, Error> {
        self.append(function, rows, None).await
    }

    async fn append(
        &self,
        function: &FunctionName,
        rows: Vec<Row>,
        deadline: Option<Instant>,
    ) -> Result<u64, Error> {
        self.cutover().await?;
        self.ensure_function(function).await?;
        let mut slot = Slot { total: 0, rows };
        for _ in 0..APPEND_ATTEMPTS {
            let (k0, total0) = match self.newest_slot(function, Segment::Live).await? {
                Some((k, newest)) => (k, newest.total),
                None => (0, 0),
            };
            if deadline.is_some_and(|d| Instant::now() > d) {
                return Err(Error::IndexContention(format!(
                    "{function}: the claim is older than {CLAIM_ABANDON:?}"
                )));
            }
            slot.total = total0 + slot.rows.len() as u64;
            let key = self.index_key(IndexEntry::Slot {
                function: function.clone(),
                segment: Segment::Live,
                k: k0 + 1,
            });
            if let PutOutcome::Created { .. } = self.put_json(&key, &slot).await? {
                self.write_lookups(function, k0 + 1, &slot.rows).await?;
                return Ok(k0 + 1);
            }
            tracing::debug!(%function, k = k0 + 1, "another replica appended this slot first; retrying");
        }
        Err(Error::IndexContention(format!(
            "{function}: {APPEND_ATTEMPTS} appends in a row lost to other replicas"
        )))
    }

    async fn write_lookups(&self, function: &FunctionName, k: u64, rows: &[Row]) -> Result<(), Error> {
        for (i, row) in rows.iter().enumerate() {
            let row_number = u16::try_from(i).unwrap_or(u16::MAX);
            if let Some(commit) = row.commit.as_deref().and_then(|c| c.parse::<CommitPrefix>().ok()) {
                let entry = IndexEntry::Commit { function: function.clone(), commit, k, row: row_number };
                self.put_json(&self.index_key(entry), row).await?;
            }
            if let Some(source) = row.source_sha256 {
                let entry = IndexEntry::Source { function: function.clone(), source, k, row: row_number };
                self.put_json(&self.index_key(entry), row).await?;
            }
        }
        Ok(())
    }

    /// Puts claim `generation` on `key`'s package; whether this replica won it.
    async fn claim(&self, key: &ObjectKey, generation: u8) -> Result<bool, Error> {
        let entry =
            IndexEntry::Claim { function: key.function().clone(), package: PackageId::of(key), generation };
        let outcome = self.put_json(&self.index_key(entry), &serde_json::json!({})).await?;
        Ok(matches!(outcome, PutOutcome::Created { .. }))
    }

    /// Appends the row of a package this replica holds the claim on, then marks it done.
    async fn index_claimed(&self, key: &ObjectKey, row: Row) -> Result<(), Error> {
        let deadline = Instant::now() + CLAIM_ABANDON;
        let k = self.append(key.function(), vec![row], Some(deadline)).await?;
        let done = IndexEntry::Indexed { function: key.function().clone(), package: PackageId::of(key) };
        self.put_json(&self.index_key(done), &Done { k }).await?;
        Ok(())
    }

    /// Indexes a package this call created. Never fails the publish: the package is stored
    /// whatever happens here, and a failure is logged and counted (a later re-post repairs it).
    pub(super) async fn index_created(&self, key: &ObjectKey, row: Row) {
        let result = async {
            if self.claim(key, 0).await? {
                self.index_claimed(key, row).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = result {
            metrics::counter!("index_writes_failed_total").increment(1);
            tracing::warn!(%key, error = %e, "the new package is stored but not indexed yet; a re-post of it indexes it");
        }
    }

    /// Indexes a stored package that a re-post found, if nobody did: its creator crashed, or
    /// its index write failed. One HEAD when it is indexed (the usual case). Never fails the
    /// publish.
    pub(super) async fn repair(&self, key: &ObjectKey, meta: &ObjectMeta, packed: &Packed) {
        let result = async {
            let done = IndexEntry::Indexed { function: key.function().clone(), package: PackageId::of(key) };
            if self.store.head(&self.index_key(done)).await?.is_some() || self.is_legacy(meta).await? {
                return Ok(());
            }
            let prefix =
                ListPrefix::Claims { root: self.root(), function: key.function().clone(), package: PackageId::of(key) };
            let claims = self.store.list(&ListRequest::new(prefix, 100)).await?;
            let newest = claims
                .objects
                .iter()
                .filter_map(|(k, m)| match k.as_index() {
                    Some(IndexEntry::Claim { generation, .. }) => Some((*generation, m.last_modified)),
                    _ => None,
                })
                .max_by_key(|(generation, _)| *generation);
            let generation = match newest {
                None => 0,
                Some((g, at)) => {
                    let stale = at.and_then(|t| t.elapsed().ok()).is_some_and(|age| age > CLAIM_LEASE);
                    if !stale || g == u8::MAX {
                        return Ok(());
                    }
                    tracing::warn!(%key, generation = g, "taking over a stale claim: its holder never indexed the package");
                    g + 1
                }
            };
            if !self.claim(key, generation).await? {
                return Ok(());
            }
            // A holder that crashed after appending its row but before marking it done left
            // the row in one of the newest slots: finish its work instead of adding a second.
            if generation > 0
                && let Some((k, row)) = self.find_recent_row(key).await?
            {
                tracing::info!(%key, k, "the stale claim's row is in the log: marking it done");
                self.write_lookups(key.function(), k, std::slice::from_ref(&row)).await?;
                let done = IndexEntry::Indexed { function: key.function().clone(), package: PackageId::of(key) };
                self.put_json(&self.index_key(done), &Done { k }).await?;
                return Ok(());
            }
            let provenance = Provenance::from_metadata(&meta.metadata);
            let row = match &provenance {
                Some(p) => Row::new(key, packed, p, meta.version_id.clone()),
                None => Row {
                    key: key.clone(),
                    size: packed.size,
                    files: Some(packed.files),
                    created: meta.last_modified.unwrap_or(SystemTime::UNIX_EPOCH),
                    created_by: None,
                    format: None,
                    commit: None,
                    source_sha256: None,
                    version_id: meta.version_id.clone(),
                },
            };
            tracing::info!(%key, "indexing a stored package that had no index entry");
            self.index_claimed(key, row).await
        }
        .await;
        if let Err(e) = result {
            metrics::counter!("index_writes_failed_total").increment(1);
            tracing::warn!(%key, error = %e, "could not index a stored package found without an index entry");
        }
    }

    /// `key`'s row in one of the [`TAKEOVER_SCAN`] newest live slots of its function, if it is
    /// there (one LIST, a GET per slot).
    async fn find_recent_row(&self, key: &ObjectKey) -> Result<Option<(u64, Row)>, Error> {
        let prefix = ListPrefix::Log {
            root: self.root(),
            function: key.function().clone(),
            segment: Some(Segment::Live),
        };
        let listing = self.store.list(&ListRequest::new(prefix, TAKEOVER_SCAN)).await?;
        for (slot_key, _) in listing.objects {
            let Some(IndexEntry::Slot { k, .. }) = slot_key.as_index() else { continue };
            let k = *k;
            let Some(slot) = self.read_json::<Slot>(&slot_key).await? else { continue };
            if let Some(row) = slot.rows.into_iter().find(|r| &r.key == key) {
                return Ok(Some((k, row)));
            }
        }
        Ok(None)
    }

    /// The one-time scan of packages stored before the index existed: every package object
    /// under the operator's prefix, in any folder, older than the cutover, sorted by time per
    /// function and written as that function's legacy log. Idempotent and safe to run on every
    /// replica at once: the set it reads is frozen by the cutover and every slot it writes is
    /// a function of that set, so replicas write the same objects and a crash half way is
    /// finished by the next run (each replica runs it at startup until `legacy/done` exists).
    pub async fn backfill_legacy(&self) -> Result<Backfill, Error> {
        let cutover = self.cutover().await?;
        let done = self.index_key(IndexEntry::LegacyDone);
        if self.store.head(&done).await?.is_some() {
            return Ok(Backfill { already_done: true, ..Backfill::default() });
        }
        // Objects of the cutover's own second are legacy only without provenance, by HEAD
        // (stores keep times to the second). Listing once that second is over, by a margin
        // for the skew between this clock and the store's, lists every one of them: the scan
        // and a re-post's check then agree on which packages are legacy.
        let settled = SystemTime::UNIX_EPOCH + Duration::from_secs(secs(cutover) + 1) + CLOCK_MARGIN;
        if let Ok(wait) = settled.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        let mut found: BTreeMap<FunctionName, Vec<(SystemTime, ObjectKey, u64)>> = BTreeMap::new();
        let mut request =
            ListRequest::new(ListPrefix::AllPackages { prefix: self.root() }, self.settings.list_page_size);
        loop {
            let page = self.store.list(&request).await?;
            for (key, meta) in page.objects {
                let Some(package) = key.as_package() else { continue };
                let at = meta.last_modified.unwrap_or(SystemTime::UNIX_EPOCH);
                let legacy = match secs(at).cmp(&secs(cutover)) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Greater => false,
                    // The same second: only objects without provenance (HEAD: listings carry
                    // no metadata).
                    std::cmp::Ordering::Equal => {
                        let head = self.store.head(&key).await?;
                        head.is_some_and(|m| Provenance::from_metadata(&m.metadata).is_none())
                    }
                };
                if legacy {
                    found.entry(package.function().clone()).or_default().push((
                        at,
                        package.clone(),
                        meta.size,
                    ));
                }
            }
            match page.next {
                Some(next) => request = request.after(&next),
                None => break,
            }
        }
        let mut report = Backfill { already_done: false, packages: 0, functions: found.len() };
        for (function, mut packages) in found {
            packages.sort_by_cached_key(|(at, key, _)| (*at, key.to_string()));
            report.packages += packages.len();
            self.ensure_function(&function).await?;
            let mut total = 0u64;
            for (r, run) in packages.chunks(LEGACY_RUN).enumerate() {
                total += run.len() as u64;
                let rows = run
                    .iter()
                    .rev()
                    .map(|(at, key, size)| Row {
                        key: key.clone(),
                        size: *size,
                        files: None,
                        created: *at,
                        created_by: None,
                        format: None,
                        commit: None,
                        source_sha256: None,
                        version_id: None,
                    })
                    .collect();
                let k = r as u64 + 1;
                let key = self.index_key(IndexEntry::Slot {
                    function: function.clone(),
                    segment: Segment::Legacy,
                    k,
                });
                // Another replica's scan writes the very same slot: losing the put is fine.
                self.put_json(&key, &Slot { total, rows }).await?;
            }
        }
        self.put_json(&done, &serde_json::json!({})).await?;
        Ok(report)
    }

    /// A page of the functions that have packages, by name, with each one's package count and
    /// newest package, from `cursor`. `visible` filters them (a token limited to some
    /// functions): a page then may hold fewer than `limit`. Costs one LIST for the names, and
    /// at most two LISTs and two GETs per function on the page.
    pub async fn list_functions(
        &self,
        limit: usize,
        cursor: Option<&str>,
        visible: &(dyn Fn(&FunctionName) -> bool + Sync),
    ) -> Result<FunctionPage, Error> {
        let mut request = ListRequest::new(ListPrefix::Functions { root: self.root() }, limit);
        if let Some(cursor) = cursor {
            let after: FunctionName = decode(cursor)?.parse().map_err(|_| Error::InvalidCursor)?;
            request = request.after_key(&self.index_key(IndexEntry::Function(after)));
        }
        let listing = self.store.list(&request).await?;
        let names: Vec<FunctionName> = listing
            .objects
            .iter()
            .filter_map(|(key, _)| match key.as_index() {
                Some(IndexEntry::Function(f)) => Some(f.clone()),
                _ => None,
            })
            .collect();
        let next_cursor = listing.next.as_ref().and_then(|_| names.last()).map(|f| encode(f.as_str()));
        let functions = futures_util::stream::iter(names.into_iter().filter(|f| visible(f)))
            .map(|function| async move { self.summary(function).await })
            .buffered(READ_AHEAD)
            .try_collect()
            .await?;
        Ok(FunctionPage { functions, next_cursor })
    }

    async fn summary(&self, function: FunctionName) -> Result<FunctionSummary, Error> {
        let live = self.newest_slot(&function, Segment::Live).await?;
        let legacy = self.newest_slot(&function, Segment::Legacy).await?;
        let packages =
            live.as_ref().map_or(0, |(_, s)| s.total) + legacy.as_ref().map_or(0, |(_, s)| s.total);
        let latest = live.or(legacy).and_then(|(_, slot)| slot.rows.into_iter().next());
        Ok(FunctionSummary { function, packages, latest })
    }

    /// The newest package of `function`, if it has one: one LIST and one GET.
    pub async fn latest(&self, function: &FunctionName) -> Result<Option<Row>, Error> {
        let prefix = ListPrefix::Log { root: self.root(), function: function.clone(), segment: None };
        let listing = self.store.list(&ListRequest::new(prefix, 1)).await?;
        let Some((key, _)) = listing.objects.into_iter().next() else { return Ok(None) };
        let slot: Option<Slot> = self.read_json(&key).await?;
        Ok(slot.and_then(|s| s.rows.into_iter().next()))
    }

    /// A page of `function`'s packages: all of them newest first, or those of a commit or an
    /// upload. At most `limit` rows; a page costs at most `limit + 8` GETs (slots read ahead)
    /// and `(limit + 1) / store.list_page_size + 2` LISTs, however many packages there are.
    pub async fn list_packages(
        &self,
        function: &FunctionName,
        filter: &PackageFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<PackagePage, Error> {
        match filter {
            PackageFilter::All => self.log_page(function, limit, cursor).await,
            PackageFilter::Commit(commit) => {
                let prefix = ListPrefix::Commits {
                    root: self.root(),
                    function: function.clone(),
                    commit: commit.clone(),
                };
                self.lookup_page(prefix, limit, cursor).await
            }
            PackageFilter::Source(source) => {
                let prefix =
                    ListPrefix::Sources { root: self.root(), function: function.clone(), source: *source };
                self.lookup_page(prefix, limit, cursor).await
            }
        }
    }

    async fn log_page(
        &self,
        function: &FunctionName,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<PackagePage, Error> {
        let prefix = ListPrefix::Log { root: self.root(), function: function.clone(), segment: None };
        let slot_key =
            |segment, k| self.index_key(IndexEntry::Slot { function: function.clone(), segment, k });
        // Slots still to read, in order, and where the listing of the next ones starts.
        let mut pending: VecDeque<(Segment, u64)> = VecDeque::new();
        let mut skip = 0;
        let mut request = ListRequest::new(prefix, 1);
        let mut listed_all = false;
        if let Some(cursor) = cursor {
            let (segment, k, rows_shown) = decode_position(cursor)?;
            pending.push_back((segment, k));
            skip = rows_shown;
            request = request.after_key(&slot_key(segment, k));
        }
        let mut rows = Vec::new();
        let mut first = true;
        // Rows in the last slot read: how many slots the rest of the page may take. Unknown at
        // first: one slot is read alone, so that a long run does not cost seven more GETs.
        let mut rows_per_slot = usize::MAX;
        loop {
            if pending.is_empty() && !listed_all {
                // Every slot holds a row at least: the page needs no more slots than rows, plus
                // one to know whether another page follows.
                let want = (limit - rows.len() + 1).min(self.settings.list_page_size);
                request = request.with_max(want);
                let listing = self.store.list(&request).await?;
                for (key, _) in &listing.objects {
                    if let Some(IndexEntry::Slot { segment, k, .. }) = key.as_index() {
                        pending.push_back((*segment, *k));
                    }
                }
                listed_all = listing.next.is_none();
                match (&listing.next, listing.objects.last()) {
                    (Some(next), _) => request = request.after(next),
                    (None, Some((key, _))) => request = request.after_key(key),
                    (None, None) => {}
                }
            }
            let Some(&(segment, k)) = pending.front() else {
                return Ok(PackagePage { rows, next_cursor: None });
            };
            if rows.len() == limit {
                return Ok(PackagePage { rows, next_cursor: Some(encode_position(segment, k, 0)) });
            }
            // Read the slots ahead at once: as many as the rest of the page may need, judging by
            // the last slot (one-row slots of single packages, or long runs of an import).
            let needed = (limit - rows.len()).div_ceil(rows_per_slot);
            let ahead: Vec<(Segment, u64)> = pending.iter().take(READ_AHEAD.min(needed)).copied().collect();
            let keys: Vec<StoreKey> = ahead.iter().map(|&(segment, k)| slot_key(segment, k)).collect();
            let slots: Vec<Option<Slot>> = futures_util::stream::iter(keys)
                .map(|key| async move { self.read_json::<Slot>(&key).await })
                .buffered(READ_AHEAD)
                .try_collect()
                .await?;
            for (&(segment, k), slot) in ahead.iter().zip(slots) {
                pending.pop_front();
                let Some(slot) = slot else {
                    // Slots are never removed: a cursor naming a missing one was not ours.
                    if first && cursor.is_some() {
                        return Err(Error::InvalidCursor);
                    }
                    return Err(Error::IndexCorrupt(format!("{} vanished", slot_key(segment, k))));
                };
                first = false;
                rows_per_slot = slot.rows.len().max(1);
                let room = limit - rows.len();
                let available = slot.rows.len().saturating_sub(skip);
                rows.extend(slot.rows.into_iter().skip(skip).take(room));
                if available > room {
                    return Ok(PackagePage {
                        rows,
                        next_cursor: Some(encode_position(segment, k, skip + room)),
                    });
                }
                skip = 0;
            }
        }
    }

    async fn lookup_page(
        &self,
        prefix: ListPrefix,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<PackagePage, Error> {
        let mut request = ListRequest::new(prefix.clone(), limit.min(self.settings.list_page_size));
        if let Some(cursor) = cursor {
            let after = prefix.parse(&decode(cursor)?).ok_or(Error::InvalidCursor)?;
            request = request.after_key(&after);
        }
        let mut keys: Vec<StoreKey> = Vec::new();
        let mut more = false;
        loop {
            let listing = self.store.list(&request).await?;
            keys.extend(listing.objects.into_iter().map(|(key, _)| key));
            match listing.next {
                Some(next) if keys.len() < limit => {
                    let want = (limit - keys.len()).min(self.settings.list_page_size);
                    request = ListRequest::new(prefix.clone(), want).after(&next);
                }
                Some(_) => {
                    more = true;
                    break;
                }
                None => break,
            }
        }
        let rows: Vec<Option<Row>> = futures_util::stream::iter(keys.clone())
            .map(|key| async move { self.read_json::<Row>(&key).await })
            .buffered(READ_AHEAD)
            .try_collect()
            .await?;
        let next_cursor = if more { keys.last().map(|k| encode(&k.name())) } else { None };
        Ok(PackagePage { rows: rows.into_iter().flatten().collect(), next_cursor })
    }
}
