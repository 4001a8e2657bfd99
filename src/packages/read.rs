//! The read side of the packages service: list a function's packages, show one package's
//! metadata and manifest, stream its bytes, diff two packages ("why did my hash change?").
//!
//! Manifests come from the zip's central directory, fetched with two ranged reads (the tail,
//! then the directory), never a full download. An object under a package key whose end record
//! or central directory cannot be read is [`Error::Corrupt`]: the store holds bad bytes.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;

use super::{Error, Packages, Provenance};
use crate::package::manifest::{self, ManifestEntry, ManifestError};
use crate::store::key::{FunctionName, KeyPrefix, ListPrefix, ObjectKey, StoreKey};
use crate::store::{ByteRange, ListRequest, MAX_LIST, ObjectBody, ObjectMeta, Store};

/// Most objects of one function [`Packages::list_packages`] reads before sorting.
const MAX_LISTED: usize = 10_000;

/// One stored package in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSummary {
    /// Its key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored.
    pub last_modified: Option<SystemTime>,
    /// S3 version id, on versioned buckets.
    pub version_id: Option<String>,
}

/// A page of a function's packages, newest first.
#[derive(Debug, Clone)]
pub struct PackageList {
    /// This page.
    pub packages: Vec<PackageSummary>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A stored package: what the store says about it, and its manifest.
#[derive(Debug, Clone)]
pub struct PackageDetail {
    /// Its key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored.
    pub last_modified: Option<SystemTime>,
    /// S3 version id, on versioned buckets.
    pub version_id: Option<String>,
    /// `s3://…` or `file://…`.
    pub location: String,
    /// Where it came from; `None` for objects stored before provenance was recorded.
    pub provenance: Option<Provenance>,
    /// Every file, in zip order.
    pub entries: Vec<ManifestEntry>,
}

/// A package's bytes, streamed.
#[derive(Debug)]
pub struct Download {
    /// Its key.
    pub key: ObjectKey,
    /// The bytes and their length.
    pub body: ObjectBody,
}

/// An entry present in both packages with different content or mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedEntry {
    /// Path in the zip.
    pub path: String,
    /// The bytes differ (size or CRC-32).
    pub content: bool,
    /// The mode differs (0644 vs 0755).
    pub mode: bool,
    /// In the first package.
    pub before: ManifestEntry,
    /// In the second package.
    pub after: ManifestEntry,
}

/// The difference between two packages, entry by entry.
#[derive(Debug, Clone)]
pub struct ArtifactDiff {
    /// The first package.
    pub from: ObjectKey,
    /// The second package.
    pub to: ObjectKey,
    /// Only in the second package, in path order.
    pub added: Vec<ManifestEntry>,
    /// Only in the first package, in path order.
    pub removed: Vec<ManifestEntry>,
    /// In both, with another content or mode, in path order.
    pub changed: Vec<ChangedEntry>,
}

impl ArtifactDiff {
    /// Whether the two manifests are the same.
    pub fn identical(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Sort position of a listed object: newest first, then by key.
fn sort_key(summary: &PackageSummary) -> (std::cmp::Reverse<u128>, String) {
    let nanos = summary
        .last_modified
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    (std::cmp::Reverse(nanos), summary.key.to_string())
}

fn encode_cursor(pos: &(std::cmp::Reverse<u128>, String)) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{}", pos.0.0, pos.1))
}

fn decode_cursor(cursor: &str) -> Result<(std::cmp::Reverse<u128>, String), Error> {
    let raw =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| Error::InvalidCursor)?;
    let text = String::from_utf8(raw).map_err(|_| Error::InvalidCursor)?;
    let (nanos, key) = text.split_once(':').ok_or(Error::InvalidCursor)?;
    Ok((std::cmp::Reverse(nanos.parse().map_err(|_| Error::InvalidCursor)?), key.to_owned()))
}

impl Packages {
    /// A page of `function`'s packages under the request prefix `prefix` (after the
    /// operator's), newest first, from `cursor` (a `next_cursor` of an earlier page).
    pub async fn list_packages(
        &self,
        function: &FunctionName,
        prefix: Option<&KeyPrefix>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<PackageList, Error> {
        let prefix = self.settings.prefixes.resolve(prefix)?;
        let after = cursor.map(decode_cursor).transpose()?;
        let mut request =
            ListRequest::new(ListPrefix::Packages { prefix, function: function.clone() }, MAX_LIST);
        let mut mine = Vec::new();
        loop {
            let page = self.store.list(&request).await?;
            mine.extend(page.objects.into_iter().filter_map(|(key, meta)| summary(key, meta)));
            match page.next {
                Some(next) if mine.len() < MAX_LISTED => request = request.after(&next),
                _ => break,
            }
        }
        mine.truncate(MAX_LISTED);
        mine.sort_by_cached_key(sort_key);
        let start = after.map_or(0, |a| mine.partition_point(|s| sort_key(s) <= a));
        let page: Vec<PackageSummary> = mine.iter().skip(start).take(limit).cloned().collect();
        let next_cursor = (start + page.len() < mine.len())
            .then(|| page.last().map(|s| encode_cursor(&sort_key(s))))
            .flatten();
        Ok(PackageList { packages: page, next_cursor })
    }

    /// A stored package's metadata and manifest.
    pub async fn get(&self, key: &ObjectKey) -> Result<PackageDetail, Error> {
        let (meta, entries) = self.read_manifest(key).await?;
        Ok(PackageDetail {
            key: key.clone(),
            size: meta.size,
            last_modified: meta.last_modified,
            version_id: meta.version_id,
            location: self.store.location(key),
            provenance: Provenance::from_metadata(&meta.metadata),
            entries,
        })
    }

    /// A stored package's bytes.
    pub async fn download(&self, key: &ObjectKey) -> Result<Download, Error> {
        let body = self.store.get(&StoreKey::from(key)).await.map_err(|e| match e {
            crate::store::Error::NotFound => Error::NotFound(key.clone()),
            other => other.into(),
        })?;
        Ok(Download { key: key.clone(), body })
    }

    /// The entries added, removed and changed (content or mode) from `from` to `to`.
    pub async fn diff(&self, from: &ObjectKey, to: &ObjectKey) -> Result<ArtifactDiff, Error> {
        let (_, before) = self.read_manifest(from).await?;
        let (_, after) = self.read_manifest(to).await?;
        Ok(diff(from.clone(), to.clone(), &before, &after))
    }

    async fn read_manifest(&self, key: &ObjectKey) -> Result<(ObjectMeta, Vec<ManifestEntry>), Error> {
        let store_key = StoreKey::from(key);
        let meta = self.store.head(&store_key).await?.ok_or_else(|| Error::NotFound(key.clone()))?;
        let corrupt = |reason| Error::Corrupt { key: key.clone(), reason };
        let tail =
            self.store.read_range(&store_key, ByteRange::Tail(manifest::TAIL_BYTES.min(meta.size))).await?;
        let cd = manifest::locate(&tail, meta.size).map_err(corrupt)?;
        if cd.size > manifest::MAX_CENTRAL_DIRECTORY_BYTES {
            return Err(corrupt(ManifestError::Malformed("a central directory larger than any package's")));
        }
        let span = ByteRange::Span { start: cd.offset, end: cd.offset + cd.size };
        let bytes = self.store.read_range(&store_key, span).await?;
        let entries = manifest::parse(&bytes, cd.entries).map_err(corrupt)?;
        Ok((meta, entries))
    }
}

fn summary(key: StoreKey, meta: ObjectMeta) -> Option<PackageSummary> {
    let key = key.as_package()?.clone();
    Some(PackageSummary {
        key,
        size: meta.size,
        last_modified: meta.last_modified,
        version_id: meta.version_id,
    })
}

/// Compares two manifests entry by entry.
fn diff(from: ObjectKey, to: ObjectKey, before: &[ManifestEntry], after: &[ManifestEntry]) -> ArtifactDiff {
    let old: BTreeMap<&str, &ManifestEntry> = before.iter().map(|e| (e.path.as_str(), e)).collect();
    let new: BTreeMap<&str, &ManifestEntry> = after.iter().map(|e| (e.path.as_str(), e)).collect();
    let added = new.iter().filter(|(p, _)| !old.contains_key(*p)).map(|(_, e)| (*e).clone()).collect();
    let removed = old.iter().filter(|(p, _)| !new.contains_key(*p)).map(|(_, e)| (*e).clone()).collect();
    let changed = old
        .iter()
        .filter_map(|(p, b)| {
            let a = new.get(p)?;
            let content = (a.size, a.crc32) != (b.size, b.crc32);
            let mode = a.mode & 0o7777 != b.mode & 0o7777;
            (content || mode).then(|| ChangedEntry {
                path: (*p).to_owned(),
                content,
                mode,
                before: (*b).clone(),
                after: (*a).clone(),
            })
        })
        .collect();
    ArtifactDiff { from, to, added, removed, changed }
}
