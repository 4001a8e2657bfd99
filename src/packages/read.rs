//! Reading one package: its metadata, provenance and manifest, its bytes, and the diff of two
//! packages ("why did my hash change?"). Listings are in `index`.
//!
//! Manifests come from the zip's central directory, fetched with two ranged reads (the tail,
//! then the directory), never a full download. An object under a package key whose end record
//! or central directory cannot be read is [`Error::Corrupt`]: the store holds bad bytes.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::{Error, Packages, Provenance};
use crate::package::manifest::{self, ManifestEntry, ManifestError};
use crate::store::key::{ObjectKey, StoreKey};
use crate::store::{ByteRange, ObjectBody, ObjectMeta, Store};

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
    /// The bucket, with the S3 store (`None`: a local folder).
    pub bucket: Option<String>,
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

impl Packages {
    /// A stored package's metadata and manifest.
    pub async fn get(&self, key: &ObjectKey) -> Result<PackageDetail, Error> {
        let (meta, entries) = self.read_manifest(key).await?;
        Ok(PackageDetail {
            key: key.clone(),
            size: meta.size,
            last_modified: meta.last_modified,
            version_id: meta.version_id,
            location: self.store.location(key),
            bucket: self.store.bucket().map(str::to_owned),
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
