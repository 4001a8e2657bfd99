//! Reading stored packages: list a function's packages, show one package's manifest, stream its
//! bytes, and diff two packages ("why did my hash change?").
//!
//! Keys that contain a prefix (`ci/lambda-…zip`) are passed URL-encoded in one path segment
//! (`ci%2Flambda-…zip`). Manifests come from the zip's central directory, fetched with two
//! ranged reads (the tail, then the directory), never a full download.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{function_name, request_prefix};
use super::state::AppState;
use crate::package::manifest::{self, ManifestEntry};
use crate::store::key::ObjectKey;
use crate::store::{ByteRange, ObjectMeta, Store};

/// Most objects of one function the list endpoint reads before sorting.
pub const MAX_LISTED: usize = 10_000;

fn parse_key(key: &str) -> Result<ObjectKey, ApiError> {
    key.parse().map_err(|e: crate::store::key::KeyError| ApiError::BadRequest {
        code: "invalid_key",
        message: format!("{key:?}: {e}"),
    })
}

fn rfc3339(t: Option<SystemTime>) -> Option<String> {
    t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
}

/// One stored package in a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactSummary {
    /// The key.
    pub key: String,
    /// SHA-256 of the zip (from the key).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored (RFC 3339).
    pub last_modified: Option<String>,
    /// S3 version id, on versioned buckets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// A page of a function's packages, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactList {
    /// The function.
    pub function: String,
    /// This page.
    pub artifacts: Vec<ArtifactSummary>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// A request key prefix to list under (after the operator's), if the operator allows them.
    pub prefix: Option<String>,
}

/// Sort position of a listed object: newest first, then by key.
fn sort_key(meta: &ObjectMeta) -> (std::cmp::Reverse<u128>, String) {
    let nanos = meta
        .last_modified
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    (std::cmp::Reverse(nanos), meta.key.clone())
}

fn encode_cursor(pos: &(std::cmp::Reverse<u128>, String)) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{}", pos.0.0, pos.1))
}

fn decode_cursor(cursor: &str) -> Result<(std::cmp::Reverse<u128>, String), ApiError> {
    let bad =
        || ApiError::BadRequest { code: "invalid_cursor", message: "not a cursor from this API".into() };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (nanos, key) = text.split_once(':').ok_or_else(bad)?;
    Ok((std::cmp::Reverse(nanos.parse().map_err(|_| bad())?), key.to_owned()))
}

/// List a function's stored packages, newest first.
#[utoipa::path(
    get,
    path = "/v1/functions/{function}/artifacts",
    tag = "artifacts",
    params(("function" = String, Path, description = "Lambda function name"), ListParams),
    responses(
        (status = 200, description = "A page of packages", body = ArtifactList),
        (status = 400, description = "Bad function name, cursor or limit", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn list_artifacts(
    State(state): State<AppState>,
    Path(function): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Json<ArtifactList>, ApiError> {
    let function = function_name(&function)?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_parameter",
            message: "limit must be 1 to 1000".into(),
        });
    }
    let mut prefix = state.publisher.prefix().clone();
    if let Some(p) = request_prefix(&state.settings, params.prefix.as_deref())? {
        prefix = prefix
            .join(&p)
            .map_err(|e| ApiError::BadRequest { code: "invalid_prefix", message: e.to_string() })?;
    }
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let listed =
        state.publisher.store().list(&ObjectKey::function_prefix(&prefix, &function), MAX_LISTED).await?;
    // `lambda-orders-` also starts `lambda-orders-api-…` keys: keep only this function's.
    let mut mine: Vec<(ObjectMeta, ObjectKey)> = listed
        .into_iter()
        .filter_map(|m| {
            let key = m.key.parse::<ObjectKey>().ok()?;
            (key.function() == &function && key.prefix() == &prefix).then_some((m, key))
        })
        .collect();
    mine.sort_by_cached_key(|(m, _)| sort_key(m));
    let start = after.map_or(0, |a| mine.partition_point(|(m, _)| sort_key(m) <= a));
    let page: Vec<_> = mine.iter().skip(start).take(limit).collect();
    let next_cursor = (start + page.len() < mine.len())
        .then(|| page.last().map(|(m, _)| encode_cursor(&sort_key(m))))
        .flatten();
    Ok(Json(ArtifactList {
        function: function.to_string(),
        artifacts: page
            .into_iter()
            .map(|(m, k)| ArtifactSummary {
                key: m.key.clone(),
                sha256: k.sha256().to_string(),
                size: m.size,
                last_modified: rfc3339(m.last_modified),
                version_id: m.version_id.clone(),
            })
            .collect(),
        next_cursor,
    }))
}

/// One entry of a package's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EntryInfo {
    /// Path in the zip.
    pub path: String,
    /// Permissions: `0644` or `0755`.
    pub mode: String,
    /// Uncompressed size.
    pub size: u64,
    /// CRC-32 of the content, 8 hex digits.
    pub crc32: String,
}

impl From<&ManifestEntry> for EntryInfo {
    fn from(e: &ManifestEntry) -> Self {
        Self {
            path: e.path.clone(),
            mode: format!("{:04o}", e.mode & 0o7777),
            size: e.size,
            crc32: format!("{:08x}", e.crc32),
        }
    }
}

/// A stored package and its manifest.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactDetail {
    /// The key.
    pub key: String,
    /// The function (from the key).
    pub function: String,
    /// SHA-256 of the zip (from the key).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored (RFC 3339).
    pub last_modified: Option<String>,
    /// S3 version id, on versioned buckets.
    pub version_id: Option<String>,
    /// `s3://…` or `file://…`.
    pub location: String,
    /// Number of files.
    pub files: usize,
    /// Every file, in zip order.
    pub entries: Vec<EntryInfo>,
}

async fn read_manifest(
    state: &AppState,
    key: &ObjectKey,
) -> Result<(ObjectMeta, Vec<ManifestEntry>), ApiError> {
    let store = state.publisher.store();
    let text = key.to_string();
    let meta = store.head(&text).await?.ok_or_else(|| ApiError::NotFound {
        code: "artifact_not_found",
        message: format!("no package under {text}"),
    })?;
    let corrupt =
        |e: manifest::ManifestError| ApiError::Internal(format!("{text}: unreadable central directory: {e}"));
    let tail = store.read_range(&text, ByteRange::Tail(manifest::TAIL_BYTES.min(meta.size))).await?;
    let cd = manifest::locate(&tail, meta.size).map_err(corrupt)?;
    if cd.size > manifest::MAX_CENTRAL_DIRECTORY_BYTES {
        return Err(ApiError::Internal(format!("{text}: central directory of {} bytes", cd.size)));
    }
    let bytes =
        store.read_range(&text, ByteRange::Span { start: cd.offset, end: cd.offset + cd.size }).await?;
    let entries = manifest::parse(&bytes, cd.entries).map_err(corrupt)?;
    Ok((meta, entries))
}

/// A stored package's metadata and manifest (path, mode, size, CRC-32 of every file).
#[utoipa::path(
    get,
    path = "/v1/artifacts/{key}",
    tag = "artifacts",
    params(("key" = String, Path, description = "The package key, URL-encoded (`/` as `%2F`)")),
    responses(
        (status = 200, description = "Metadata and manifest", body = ArtifactDetail),
        (status = 400, description = "Not a package key", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_artifact(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<ArtifactDetail>, ApiError> {
    let key = parse_key(&key)?;
    let (meta, entries) = read_manifest(&state, &key).await?;
    Ok(Json(ArtifactDetail {
        key: key.to_string(),
        function: key.function().to_string(),
        sha256: key.sha256().to_string(),
        size: meta.size,
        last_modified: rfc3339(meta.last_modified),
        version_id: meta.version_id,
        location: state.publisher.store().location(&key),
        files: entries.len(),
        entries: entries.iter().map(EntryInfo::from).collect(),
    }))
}

/// A stored package's bytes.
#[utoipa::path(
    get,
    path = "/v1/artifacts/{key}/zip",
    tag = "artifacts",
    params(("key" = String, Path, description = "The package key, URL-encoded (`/` as `%2F`)")),
    responses(
        (status = 200, description = "The zip", content_type = "application/zip"),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_artifact_zip(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let key = parse_key(&key)?;
    let body = state.publisher.store().get(&key.to_string()).await.map_err(|e| match e {
        crate::store::Error::NotFound => {
            ApiError::NotFound { code: "artifact_not_found", message: format!("no package under {key}") }
        }
        other => other.into(),
    })?;
    let mut response = Body::from_stream(body.stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.size));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", key.file_name())) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", key.sha256())) {
        headers.insert(header::ETAG, v);
    }
    Ok(response)
}

/// An entry present in both packages with different content or mode.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangedEntry {
    /// Path in the zip.
    pub path: String,
    /// What changed: `content`, `mode`, or both.
    pub changes: Vec<String>,
    /// In the first package.
    pub before: EntryInfo,
    /// In the second package.
    pub after: EntryInfo,
}

/// The difference between two packages.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactDiff {
    /// The first package.
    pub from: String,
    /// The second package.
    pub to: String,
    /// Whether the two manifests are the same.
    pub identical: bool,
    /// Only in the second package.
    pub added: Vec<EntryInfo>,
    /// Only in the first package.
    pub removed: Vec<EntryInfo>,
    /// In both, with another content or mode.
    pub changed: Vec<ChangedEntry>,
}

/// Entries added, removed and changed (content or mode) from one package to another.
#[utoipa::path(
    get,
    path = "/v1/artifacts/{key}/diff/{other_key}",
    tag = "artifacts",
    params(
        ("key" = String, Path, description = "The first package key, URL-encoded"),
        ("other_key" = String, Path, description = "The second package key, URL-encoded"),
    ),
    responses(
        (status = 200, description = "The difference", body = ArtifactDiff),
        (status = 404, description = "A package does not exist", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn diff_artifacts(
    State(state): State<AppState>,
    Path((key, other_key)): Path<(String, String)>,
) -> Result<Json<ArtifactDiff>, ApiError> {
    let (from, to) = (parse_key(&key)?, parse_key(&other_key)?);
    let (_, before) = read_manifest(&state, &from).await?;
    let (_, after) = read_manifest(&state, &to).await?;
    Ok(Json(diff(from.to_string(), to.to_string(), &before, &after)))
}

/// Compares two manifests entry by entry.
pub fn diff(from: String, to: String, before: &[ManifestEntry], after: &[ManifestEntry]) -> ArtifactDiff {
    let old: BTreeMap<&str, EntryInfo> = before.iter().map(|e| (e.path.as_str(), e.into())).collect();
    let new: BTreeMap<&str, EntryInfo> = after.iter().map(|e| (e.path.as_str(), e.into())).collect();
    let added: Vec<EntryInfo> =
        new.iter().filter(|(p, _)| !old.contains_key(*p)).map(|(_, e)| e.clone()).collect();
    let removed: Vec<EntryInfo> =
        old.iter().filter(|(p, _)| !new.contains_key(*p)).map(|(_, e)| e.clone()).collect();
    let changed: Vec<ChangedEntry> = old
        .iter()
        .filter_map(|(p, b)| {
            let a = new.get(p)?;
            let mut changes = Vec::new();
            if (a.size, &a.crc32) != (b.size, &b.crc32) {
                changes.push("content".to_owned());
            }
            if a.mode != b.mode {
                changes.push("mode".to_owned());
            }
            (!changes.is_empty()).then(|| ChangedEntry {
                path: (*p).to_owned(),
                changes,
                before: b.clone(),
                after: a.clone(),
            })
        })
        .collect();
    ArtifactDiff {
        identical: added.is_empty() && removed.is_empty() && changed.is_empty(),
        from,
        to,
        added,
        removed,
        changed,
    }
}
