//! The compressed-entry cache: the deflated form of a file's bytes, kept on disk by the SHA-256
//! of those bytes, so that a repack compresses only content it has not seen.
//!
//! # Why here, and why on disk
//!
//! The deflated form of an entry depends on nothing but its bytes and the format's pinned
//! compressor ([`FORMAT_VERSION`], [`DEFLATE_LEVEL`], [`DEFLATE_IMPLEMENTATION`]): not on its
//! path, its mode or the other entries. So the cache is part of the byte format's module, next
//! to the packer that alone knows when a cached form may stand in for deflating (this module
//! imports nothing from the service, as `package` must not). It is a plain folder of files, like
//! the spool (`tree.rs`): no daemon, no lock file, nothing to set up, so the CLI on a CI runner
//! (whose folder a CI cache such as GitHub's `actions/cache` keeps between runs) and every
//! worker and replica process of the service on one node can share it.
//!
//! # Layout and entries
//!
//! `<dir>/v<format>-deflate<level>-<implementation>/<aa>/<sha256 hex>`, `aa` the first byte of
//! the digest (256 folders of a few hundred files each, not one of 100,000). The versioned
//! folder means a new format or compressor never reads an old entry; an old folder is left for
//! the operator (or the CI cache's own expiry) to remove.
//!
//! Each file is a [`HEADER_BYTES`]-byte header and the compressed bytes. The header holds a
//! magic number, the format version and deflate level, the content's length, CRC-32 and
//! SHA-256, the method (deflate, or store when deflate does not make the file smaller: that
//! decision is cached too, so incompressible files are not deflated in vain on every pack), the
//! compressed length and a SHA-256 of all that and the compressed bytes. On a read every field is checked
//! against what the packer computed from the content itself while hashing it (length, CRC-32,
//! SHA-256) and against the file (its length, the digest of its compressed bytes). A file that
//! fails any check (truncated, a flipped byte, another content's entry under this name, another
//! version) is counted, removed and treated as a miss, so the entry is deflated afresh and the
//! package's bytes are those of a pack without the cache, always.
//!
//! # Small files skip it
//!
//! Entries under [`MIN_ENTRY_BYTES`] (4 KiB) are always deflated. Measured (`scripts/bench-cache`,
//! BENCHMARKS.md): a hit is cheaper than deflating even at 256 bytes (28 µs against 71 µs per
//! file), but a miss creates a file (~0.35 ms on the benchmark machine), which the 40-50 µs a
//! small file's hit saves repays only after some eight repacks; and such files would be most of
//! the cache's files for a few percent of its bytes.
//! Entries over a quarter of the cap are not cached either (one file must not evict everything).
//!
//! # Writes, sharing, failures
//!
//! An entry is written to a temp file in its folder and renamed into place (atomic: a reader
//! sees the whole entry or none; two writers of one entry write the same bytes and the last
//! rename wins). A write that fails (a full or read-only disk) is logged once per process,
//! counted, and otherwise ignored: the cache never fails a pack. Nor does it take the packer's
//! disk: it writes nothing while the file system has less than [`FREE_SPACE_RESERVE`] free (or
//! a tenth of its size, whichever is less), which leaves room for spools and staged zips.
//!
//! # Eviction
//!
//! The folder is kept under `max_bytes`, least recently used first: a hit sets the entry's
//! mtime (at most once a minute), and when a process's count of the folder's bytes (from its
//! last scan, plus what it wrote since) exceeds the cap it scans the folder and removes the
//! oldest entries until the folder holds at most seven eighths of the cap. Each process scans
//! the real folder, so several processes sharing it each bring it back under the cap; between
//! two scans it can exceed the cap by what the others wrote since their own last scan. A scan
//! stats every file, so it costs in proportion to the folder's files; it runs at most once per
//! eighth of the cap written by the process (and once at its first write), which bounds its cost
//! per byte written. Only one thread of a process scans at a time; others carry on.

use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::canonical::{DEFLATE_IMPLEMENTATION, DEFLATE_LEVEL, FORMAT_VERSION, Method};
use super::digest::Sha256Hex;

/// Entries smaller than this are deflated, never looked up (see the module documentation).
pub const MIN_ENTRY_BYTES: u64 = 4 * 1024;

/// The service's default cap on the folder (`pack.cache_max_bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// Free space the cache leaves on its file system (or a tenth of it, whichever is less).
pub const FREE_SPACE_RESERVE: u64 = 256 * 1024 * 1024;

/// Bytes of an entry's header.
pub const HEADER_BYTES: usize = 104;

const MAGIC: [u8; 8] = *b"lpkentry";

/// A hit refreshes an entry's mtime (its place in the LRU order) only when it is older than this:
/// one `futimens` a minute per entry, not one per hit.
const TOUCH_AFTER: Duration = Duration::from_secs(60);

/// Temp files left by a process that died mid-write are removed by a scan after this long.
const STALE_TEMP: Duration = Duration::from_secs(3600);

const TEMP_PREFIX: &str = ".tmp-";

/// What the packer knows of an entry's content after reading it once: what a cache entry must
/// match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentId {
    /// SHA-256 of the bytes: the key.
    pub sha256: Sha256Hex,
    /// Length in bytes.
    pub size: u64,
    /// CRC-32 of the bytes.
    pub crc32: u32,
}

/// A cache entry that passed every check.
#[derive(Debug)]
pub struct Cached {
    /// Deflate, or store (deflate did not make the content smaller).
    pub method: Method,
    /// `front` zero bytes, then the compressed bytes (none for [`Method::Store`]).
    pub bytes: Vec<u8>,
}

/// Counters since the cache was opened (shared by its clones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered by a valid entry.
    pub hits: u64,
    /// Lookups that found no valid entry.
    pub misses: u64,
    /// Uncompressed bytes of the hits: what was not deflated.
    pub hit_bytes: u64,
    /// Entries found invalid (and removed).
    pub rejected: u64,
    /// Entries written.
    pub writes: u64,
    /// Bytes written (headers included).
    pub written_bytes: u64,
    /// Writes that failed or were skipped for lack of free space.
    pub write_errors: u64,
    /// Entries removed by eviction.
    pub evicted: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    hit_bytes: AtomicU64,
    rejected: AtomicU64,
    writes: AtomicU64,
    written_bytes: AtomicU64,
    write_errors: AtomicU64,
    evicted: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The folder's bytes as this process last counted them.
#[derive(Debug, Default)]
struct Usage {
    bytes: u64,
    scanned: bool,
}

#[derive(Debug)]
struct Inner {
    folder: PathBuf,
    max_bytes: u64,
    min_entry_bytes: u64,
    counters: Counters,
    usage: Mutex<Usage>,
    scanning: Mutex<()>,
    warned: AtomicBool,
}

/// A compressed-entry cache in one folder (cheap to clone: clones share the folder, the counters
/// and the count of its bytes).
#[derive(Debug, Clone)]
pub struct EntryCache(Arc<Inner>);

impl EntryCache {
    /// Opens (creating it if needed) the cache under `dir`, kept under `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        Self::open_with_min(dir, max_bytes, MIN_ENTRY_BYTES)
    }

    /// [`EntryCache::open`] with another threshold than [`MIN_ENTRY_BYTES`] (the benchmark that
    /// chose it measures others).
    pub fn open_with_min(dir: &Path, max_bytes: u64, min_entry_bytes: u64) -> io::Result<Self> {
        let folder = dir.join(format!("v{FORMAT_VERSION}-deflate{DEFLATE_LEVEL}-{DEFLATE_IMPLEMENTATION}"));
        fs::create_dir_all(&folder)?;
        Ok(Self(Arc::new(Inner {
            folder,
            max_bytes,
            min_entry_bytes,
            counters: Counters::default(),
            usage: Mutex::new(Usage::default()),
            scanning: Mutex::new(()),
            warned: AtomicBool::new(false),
        })))
    }

    /// The versioned folder the entries are in.
    pub fn folder(&self) -> &Path {
        &self.0.folder
    }

    /// The cap on the folder's bytes.
    pub fn max_bytes(&self) -> u64 {
        self.0.max_bytes
    }

    /// Where the entry of `sha256` is (whether or not it exists).
    pub fn entry_path(&self, sha256: &Sha256Hex) -> PathBuf {
        let hex = sha256.to_string();
        self.0.folder.join(&hex[..2]).join(hex)
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.0.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            hit_bytes: get(&c.hit_bytes),
            rejected: get(&c.rejected),
            writes: get(&c.writes),
            written_bytes: get(&c.written_bytes),
            write_errors: get(&c.write_errors),
            evicted: get(&c.evicted),
        }
    }

    /// Whether an entry of `size` bytes is looked up at all.
    pub fn applies(&self, size: u64) -> bool {
        size >= self.0.min_entry_bytes && size <= self.0.max_bytes / 4 && size < u64::from(u32::MAX)
    }

    /// The valid entry for `id`, its compressed bytes after `front` zero bytes; `None` on a miss
    /// (an invalid entry is removed and counted as a miss).
    ///
    /// Runs synchronously (file I/O), like the packer.
    pub fn get(&self, id: &ContentId, front: usize) -> Option<Cached> {
        let path = self.entry_path(&id.sha256);
        let c = &self.0.counters;
        match read_entry(&path, id, front) {
            Ok(Some(cached)) => {
                add(&c.hits, 1);
                add(&c.hit_bytes, id.size);
                Some(cached)
            }
            Ok(None) => {
                add(&c.misses, 1);
                None
            }
            Err(Invalid(why)) => {
                add(&c.misses, 1);
                add(&c.rejected, 1);
                tracing::warn!(path = %path.display(), why, "ignored an invalid compressed-entry cache file");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores the compressed form of `id` (`compressed` empty for [`Method::Store`]). Never fails:
    /// a write that cannot be done is counted and logged (once per process at `warn`).
    pub fn put(&self, id: &ContentId, method: Method, compressed: &[u8]) {
        let need = (HEADER_BYTES + compressed.len()) as u64;
        match self.write_entry(id, method, compressed) {
            Ok(()) => {
                let c = &self.0.counters;
                add(&c.writes, 1);
                add(&c.written_bytes, need);
                self.account(need);
            }
            Err(e) => {
                add(&self.0.counters.write_errors, 1);
                if self.0.warned.swap(true, Ordering::Relaxed) {
                    tracing::debug!(error = %e, "could not write to the compressed-entry cache");
                } else {
                    tracing::warn!(
                        folder = %self.0.folder.display(),
                        error = %e,
                        "could not write to the compressed-entry cache; packs go on without storing \
                         entries (logged once)"
                    );
                }
            }
        }
    }

    fn write_entry(&self, id: &ContentId, method: Method, compressed: &[u8]) -> io::Result<()> {
        let path = self.entry_path(&id.sha256);
        let dir = path.parent().unwrap_or(&self.0.folder);
        let mut tmp = match tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(dir) {
            Ok(tmp) => tmp,
            // The first entry of its folder, or the cache folder was removed (by hand, by a CI
            // cache restore) while this process had it open.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)?;
                tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(dir)?
            }
            Err(e) => return Err(e),
        };
        let need = (HEADER_BYTES + compressed.len()) as u64;
        if !room_for(dir, need)? {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the file system is nearly full: the cache leaves its free space to the packer",
            ));
        }
        let header = header(id, method, compressed);
        tmp.write_all(&header)?;
        tmp.write_all(compressed)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Adds `bytes` to this process's count of the folder, and scans (evicting) when the count
    /// is over the cap or was never taken.
    fn account(&self, bytes: u64) {
        let scan = {
            let mut usage = self.0.usage.lock().unwrap_or_else(|p| p.into_inner());
            usage.bytes += bytes;
            !usage.scanned || usage.bytes > self.0.max_bytes
        };
        if scan {
            // One scanner per process; the others' writes are counted by its scan.
            if let Ok(_scanning) = self.0.scanning.try_lock() {
                self.evict();
            }
        }
    }

    /// Scans the folder, removes stale temp files and, when it is over the cap, the least
    /// recently used entries until it holds at most 7/8 of the cap.
    pub fn evict(&self) {
        let mut files = Vec::new();
        let mut total = 0u64;
        let now = SystemTime::now();
        for sub in read_dir(&self.0.folder) {
            for file in read_dir(&sub) {
                let Ok(meta) = fs::symlink_metadata(&file) else { continue };
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                let temp =
                    file.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(TEMP_PREFIX));
                if temp {
                    if now.duration_since(modified).is_ok_and(|age| age > STALE_TEMP) {
                        let _ = fs::remove_file(&file);
                    }
                    continue;
                }
                total += meta.len();
                files.push((modified, meta.len(), file));
            }
        }
        if total > self.0.max_bytes {
            let target = self.0.max_bytes - self.0.max_bytes / 8;
            files.sort_unstable_by_key(|(modified, _, _)| *modified);
            let mut evicted = 0;
            for (_, len, file) in files {
                if total <= target {
                    break;
                }
                if fs::remove_file(&file).is_ok() {
                    total -= len;
                    evicted += 1;
                }
            }
            add(&self.0.counters.evicted, evicted);
            tracing::debug!(evicted, total, "evicted compressed-entry cache files");
        }
        let mut usage = self.0.usage.lock().unwrap_or_else(|p| p.into_inner());
        *usage = Usage { bytes: total, scanned: true };
    }
}

/// The entries of a folder (none if it cannot be read).
fn read_dir(dir: &Path) -> impl Iterator<Item = PathBuf> + use<> {
    fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok().map(|e| e.path()))
}

/// Whether writing `need` bytes leaves the file system at least its reserve.
fn room_for(folder: &Path, need: u64) -> io::Result<bool> {
    let vfs = rustix::fs::statvfs(folder).map_err(io::Error::from)?;
    let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
    let size = vfs.f_blocks.saturating_mul(vfs.f_frsize);
    let reserve = FREE_SPACE_RESERVE.min(size / 10);
    Ok(free >= need.saturating_add(reserve))
}

fn method_byte(method: Method) -> u8 {
    match method {
        Method::Deflate => 8,
        Method::Store => 0,
    }
}

/// The header of the entry of `id`.
fn header(id: &ContentId, method: Method, compressed: &[u8]) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(DEFLATE_LEVEL as u32).to_le_bytes());
    h[16..24].copy_from_slice(&id.size.to_le_bytes());
    h[24..28].copy_from_slice(&id.crc32.to_le_bytes());
    h[28] = method_byte(method);
    h[32..64].copy_from_slice(id.sha256.as_bytes());
    h[64..72].copy_from_slice(&(compressed.len() as u64).to_le_bytes());
    let digest = digest(&h, compressed);
    h[72..104].copy_from_slice(&digest);
    h
}

/// The digest an entry ends its header with: of the header's other fields and the compressed
/// bytes, so that no byte of the file can change unnoticed (the method byte included).
fn digest(header: &[u8; HEADER_BYTES], compressed: &[u8]) -> [u8; 32] {
    let mut sha = Sha256::new();
    sha.update(&header[..72]);
    sha.update(compressed);
    sha.finalize().into()
}

/// Why an entry was refused.
struct Invalid(&'static str);

impl From<io::Error> for Invalid {
    fn from(_: io::Error) -> Self {
        Invalid("unreadable")
    }
}

/// Reads and checks the entry at `path`: `Ok(None)` when there is none.
fn read_entry(path: &Path, id: &ContentId, front: usize) -> Result<Option<Cached>, Invalid> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    let mut h = [0u8; HEADER_BYTES];
    if meta.len() < HEADER_BYTES as u64 {
        return Err(Invalid("shorter than its header"));
    }
    file.read_exact(&mut h)?;
    let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap_or_default());
    let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or_default());
    if h[0..8] != MAGIC {
        return Err(Invalid("not a cache entry"));
    }
    if u32_at(8) != FORMAT_VERSION || u32_at(12) != DEFLATE_LEVEL as u32 {
        return Err(Invalid("another format version or deflate level"));
    }
    if h[32..64] != id.sha256.as_bytes()[..] {
        return Err(Invalid("the entry of another content"));
    }
    if u64_at(16) != id.size || u32_at(24) != id.crc32 {
        return Err(Invalid("length or CRC-32 differ from the content's"));
    }
    let compressed = u64_at(64);
    if meta.len() - HEADER_BYTES as u64 != compressed {
        return Err(Invalid("truncated or extended"));
    }
    let method = match h[28] {
        8 if compressed < id.size => Method::Deflate,
        0 if compressed == 0 => Method::Store,
        _ => return Err(Invalid("an impossible method or length")),
    };
    let compressed = usize::try_from(compressed).map_err(|_| Invalid("too large"))?;
    let mut bytes = vec![0u8; front + compressed];
    file.read_exact(&mut bytes[front..])?;
    if digest(&h, &bytes[front..])[..] != h[72..104] {
        return Err(Invalid("the entry differs from its digest"));
    }
    let stale = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok());
    if stale.is_some_and(|age| age > TOUCH_AFTER) {
        // LRU order; an entry we cannot touch only risks an earlier eviction.
        let _ = file.set_modified(SystemTime::now());
    }
    Ok(Some(Cached { method, bytes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(content: &[u8]) -> ContentId {
        let mut crc = flate2::Crc::new();
        crc.update(content);
        ContentId { sha256: Sha256Hex::of_bytes(content), size: content.len() as u64, crc32: crc.sum() }
    }

    fn cache(max: u64) -> (tempfile::TempDir, EntryCache) {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = EntryCache::open(dir.path(), max).expect("opens");
        (dir, cache)
    }

    #[test]
    fn an_entry_reads_back_after_the_front_gap_and_counts_as_a_hit() {
        let (_dir, cache) = cache(DEFAULT_MAX_BYTES);
        let content = vec![7u8; 10_000];
        let id = id(&content);
        assert!(cache.get(&id, 3).is_none());
        cache.put(&id, Method::Deflate, b"compressed!");
        let hit = cache.get(&id, 3).expect("a hit");
        assert_eq!(hit.method, Method::Deflate);
        assert_eq!(hit.bytes, b"\0\0\0compressed!");
        let file = fs::read(cache.entry_path(&id.sha256)).expect("the entry file");
        assert_eq!(file.len(), HEADER_BYTES + 11);
        assert_eq!(&file[..8], b"lpkentry");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.hit_bytes, stats.writes), (1, 1, 10_000, 1));
    }

    #[test]
    fn a_store_decision_is_cached_without_bytes() {
        let (_dir, cache) = cache(DEFAULT_MAX_BYTES);
        let id = id(&[1u8; 5000]);
        cache.put(&id, Method::Store, &[]);
        let hit = cache.get(&id, 0).expect("a hit");
        assert_eq!((hit.method, hit.bytes.len()), (Method::Store, 0));
    }

    #[test]
    fn every_damaged_or_foreign_entry_is_refused_and_removed() {
        let (_dir, cache) = cache(DEFAULT_MAX_BYTES);
        let other = id(&[4u8; 8192]);
        let id = id(&[3u8; 8192]);
        cache.put(&id, Method::Deflate, b"0123456789");
        let path = cache.entry_path(&id.sha256);
        let good = fs::read(&path).expect("entry");
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        for at in [0, 9, 13, 17, 25, 28, 40, 65, 80, HEADER_BYTES + 4] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            cases.push(("a flipped byte", bad));
        }
        cases.push(("truncated", good[..good.len() - 1].to_vec()));
        cases.push(("truncated header", good[..50].to_vec()));
        cases.push(("extended", [&good[..], b"x"].concat()));
        cases.push(("empty", Vec::new()));
        // A valid entry of another content, under this content's name.
        cases
            .push(("foreign", [&header(&other, Method::Deflate, b"0123456789")[..], b"0123456789"].concat()));
        // A self-consistent entry of this content with another format version.
        let mut version = good.clone();
        version[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        cases.push(("another version", version));
        // Deflate "compressed" to as many bytes as the content: impossible.
        let long = vec![0u8; 8192];
        cases.push(("impossible length", [&header(&id, Method::Deflate, &long)[..], &long].concat()));
        for (why, bytes) in cases {
            fs::write(&path, &bytes).expect("plant");
            assert!(cache.get(&id, 0).is_none(), "{why}");
            assert!(!path.exists(), "{why}: the invalid entry is removed");
        }
        assert_eq!(cache.stats().rejected, 17);
        fs::write(&path, &good).expect("plant");
        assert_eq!(cache.get(&id, 0).expect("the good entry").bytes, b"0123456789");
    }

    #[test]
    fn eviction_keeps_the_folder_under_its_cap_dropping_the_least_recently_used() {
        let max = 64 * 1024;
        let (_dir, cache) = cache(max);
        let payload = vec![9u8; 8 * 1024 - HEADER_BYTES];
        let ids: Vec<ContentId> = (0..40u32).map(|i| id(&i.to_le_bytes().repeat(3000))).collect();
        let old = SystemTime::now() - Duration::from_secs(3600);
        for (i, id) in ids.iter().enumerate() {
            cache.put(id, Method::Deflate, &payload);
            // Ages in order of writing, one second apart (mtimes, not sleeps).
            let age = old + Duration::from_secs(i as u64);
            File::options()
                .write(true)
                .open(cache.entry_path(&id.sha256))
                .expect("open")
                .set_modified(age)
                .expect("age");
            assert!(folder_bytes(cache.folder()) <= max, "after {i} writes");
        }
        // Using the oldest surviving entry makes it the most recent one: the next evictions
        // take the others first.
        let surviving: Vec<&ContentId> =
            ids.iter().filter(|id| cache.entry_path(&id.sha256).exists()).collect();
        assert!(surviving.len() >= 6, "{} entries survive", surviving.len());
        let (used, unused) = (surviving[0], surviving[1]);
        assert!(cache.get(used, 0).is_some());
        for i in 40..44u32 {
            cache.put(&id(&i.to_le_bytes().repeat(3000)), Method::Deflate, &payload);
            assert!(folder_bytes(cache.folder()) <= max);
        }
        assert!(cache.entry_path(&used.sha256).exists(), "a recent hit is not evicted");
        assert!(!cache.entry_path(&unused.sha256).exists(), "the least recently used is evicted");
        assert!(cache.stats().evicted >= 36);
    }

    fn folder_bytes(folder: &Path) -> u64 {
        read_dir(folder)
            .flat_map(|sub| read_dir(&sub))
            .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    #[test]
    fn a_cache_folder_removed_while_open_is_made_again() {
        let (_dir, cache) = cache(DEFAULT_MAX_BYTES);
        let id = id(&[6u8; 5000]);
        fs::remove_dir_all(cache.folder()).expect("remove");
        cache.put(&id, Method::Deflate, b"x");
        assert_eq!(cache.stats().write_errors, 0);
        assert_eq!(cache.get(&id, 0).expect("a hit").bytes, b"x");
    }

    #[test]
    fn a_cache_that_cannot_be_written_counts_the_failure_and_goes_on() {
        let (_dir, cache) = cache(DEFAULT_MAX_BYTES);
        let id = id(&[5u8; 5000]);
        // A file where the entry's folder should be: every write fails.
        let sub = cache.entry_path(&id.sha256).parent().expect("folder").to_owned();
        fs::write(&sub, b"in the way").expect("block");
        cache.put(&id, Method::Deflate, b"x");
        cache.put(&id, Method::Deflate, b"x");
        assert_eq!(cache.stats().write_errors, 2);
        assert!(cache.get(&id, 0).is_none());
    }

    #[test]
    fn the_folder_name_carries_the_format_and_the_compressor() {
        let (_dir, cache) = cache(DEFAULT_MAX_BYTES);
        let name = cache.folder().file_name().and_then(|n| n.to_str()).expect("name").to_owned();
        assert_eq!(name, format!("v{FORMAT_VERSION}-deflate{DEFLATE_LEVEL}-{DEFLATE_IMPLEMENTATION}"));
    }

    #[test]
    fn small_and_huge_entries_skip_the_cache() {
        let (_dir, cache) = cache(1 << 20);
        assert!(!cache.applies(MIN_ENTRY_BYTES - 1));
        assert!(cache.applies(MIN_ENTRY_BYTES));
        assert!(cache.applies(1 << 18));
        assert!(!cache.applies((1 << 18) + 1));
    }
}
