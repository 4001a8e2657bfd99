//! Reading stored packages over HTTP: list a function's packages, show one package's manifest,
//! stream its bytes, and diff two packages ("why did my hash change?"). Each handler parses its
//! request, calls one method of the packages service and maps the answer.
//!
//! Keys that contain a prefix (`ci/lambda-…zip`) are passed URL-encoded in one path segment
//! (`ci%2Flambda-…zip`).

use std::time::SystemTime;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{function_name, package_key};
use super::middleware::Access;
use super::packages::CodeLocation;
use super::state::AppState;
use super::ui;
use crate::package::manifest::ManifestEntry;
use crate::packages;

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
    /// Files in the zip; `null` for packages stored before the listing index existed.
    pub files: Option<u64>,
    /// When it was stored (RFC 3339, UTC).
    pub created: String,
    /// The name of the token that stored it; `null` without authentication (and for packages
    /// stored before provenance was recorded).
    pub created_by: Option<String>,
    /// The input format (`tar`, `tar.gz`, `zip`, `git`); `null` for packages stored before
    /// provenance was recorded.
    pub format: Option<String>,
    /// The git commit it was built from (40 hex digits); `null` for archives.
    pub commit: Option<String>,
    /// SHA-256 of the uploaded archive it was built from; `null` for git.
    pub source_sha256: Option<String>,
    /// S3 version id, on versioned buckets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The package's web page (a path on this service: `/ui/packages/{key}`).
    pub ui_url: String,
}

impl From<packages::Row> for ArtifactSummary {
    fn from(row: packages::Row) -> Self {
        Self {
            ui_url: ui::package_url(&row.key),
            sha256: row.key.sha256().to_string(),
            key: row.key.to_string(),
            size: row.size,
            files: row.files,
            created: humantime::format_rfc3339_millis(row.created).to_string(),
            created_by: row.created_by,
            format: row.format,
            commit: row.commit,
            source_sha256: row.source_sha256.map(|s| s.to_string()),
            version_id: row.version_id,
        }
    }
}

/// A page of a function's packages.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactList {
    /// The function.
    pub function: String,
    /// This page: newest first (with `commit`, by commit, then newest first).
    pub artifacts: Vec<ArtifactSummary>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Most rows one listing page holds.
pub const MAX_PAGE: usize = 100;

/// A listing's page size: `limit`, 1 to [`MAX_PAGE`] (default 50).
pub(crate) fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(50);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::InvalidParameter(format!("limit must be 1 to {MAX_PAGE}")))
    }
}

/// Paging and filter parameters of a function's listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 100 (default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (of the same listing, with the same filter).
    pub cursor: Option<String>,
    /// Only packages built from this git commit: the 40 hex digits, or at least the first 7.
    /// Packages of every commit starting with them are listed, by commit, then newest first.
    pub commit: Option<String>,
    /// Only packages built from an uploaded archive with this SHA-256 (64 hex digits).
    pub source_sha256: Option<String>,
}

/// List a function's stored packages, newest first.
///
/// Every package of the function is listed, whatever its request prefix (each row carries its
/// whole key), packages stored before the listing index existed included, after the others.
/// A page costs the store a bounded number of requests, however many packages there are.
#[utoipa::path(
    get,
    path = "/v1/functions/{function}/artifacts",
    tag = "artifacts",
    params(("function" = String, Path, description = "Lambda function name"), ListParams),
    responses(
        (status = 200, description = "A page of packages", body = ArtifactList),
        (status = 400, description = "Bad function name, cursor, limit, commit or digest", body = ErrorBody),
        (status = 403, description = "The token may not read this function (`function_not_allowed`), or lacks the read scope (`insufficient_scope`)", body = ErrorBody),
        (status = 502, description = "The listing index is damaged (`index_corrupt`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn list_artifacts(
    State(state): State<AppState>,
    access: Access,
    Path(function): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Json<ArtifactList>, ApiError> {
    let function = function_name(&function)?;
    access.check(&function)?;
    let limit = page_size(params.limit)?;
    let filter = match (params.commit.as_deref(), params.source_sha256.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidParameter("give commit or source_sha256, not both".into()));
        }
        (Some(commit), None) => packages::PackageFilter::Commit(commit.parse().map_err(|_| {
            ApiError::InvalidParameter(format!("commit={commit:?}: expected 7 to 40 hex digits"))
        })?),
        (None, Some(sha)) => {
            packages::PackageFilter::Source(sha.to_ascii_lowercase().parse().map_err(|_| {
                ApiError::InvalidParameter(format!("source_sha256={sha:?}: expected 64 hex digits"))
            })?)
        }
        (None, None) => packages::PackageFilter::All,
    };
    let page = state.packages.list_packages(&function, &filter, limit, params.cursor.as_deref()).await?;
    Ok(Json(ArtifactList {
        function: function.to_string(),
        artifacts: page.rows.into_iter().map(ArtifactSummary::from).collect(),
        next_cursor: page.next_cursor,
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
    /// Where the package came from; `null` for packages stored before provenance was
    /// recorded.
    pub provenance: Option<ProvenanceInfo>,
    /// Paste-ready CloudFormation `Code` (S3 stores only; `null` with the local store).
    pub code: Option<CodeLocation>,
    /// The package's web page (a path on this service: `/ui/packages/{key}`).
    pub ui_url: String,
    /// Every file, in zip order.
    pub entries: Vec<EntryInfo>,
}

/// Where a package came from, recorded when its object was created.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProvenanceInfo {
    /// The canonical format version of the bytes.
    pub format_version: u32,
    /// The lambda-packager version that built it.
    pub packager_version: String,
    /// The input format: `tar`, `tar.gz`, `zip` or `git`.
    pub input_format: String,
    /// SHA-256 of the archive as uploaded (hex); `null` for git.
    pub source_sha256: Option<String>,
    /// The git revision, for git input; `null` otherwise.
    pub git: Option<GitProvenanceInfo>,
    /// When the object was created (RFC 3339, UTC).
    pub created: String,
    /// The name of the token that created it; `null` without authentication.
    pub created_by: Option<String>,
    /// Fields whose values were too long to store whole and were cut (`git.repo`,
    /// `git.ref`, `git.path`, `created_by`); absent when none was.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<String>,
}

/// The git revision a package was built from.
#[derive(Debug, Serialize, ToSchema)]
pub struct GitProvenanceInfo {
    /// The remote, as requested.
    pub repo: String,
    /// The ref, as requested.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The commit it resolved to (40 hex digits).
    pub commit: String,
    /// The sub-directory packaged (`git.path`); `null` for the whole tree.
    pub path: Option<String>,
}

impl From<&packages::Provenance> for ProvenanceInfo {
    fn from(p: &packages::Provenance) -> Self {
        Self {
            format_version: p.format_version,
            packager_version: p.packager_version.clone(),
            input_format: p.input_format.clone(),
            source_sha256: p.source_sha256.map(|s| s.to_string()),
            git: p.git.as_ref().map(|g| GitProvenanceInfo {
                repo: g.repo.clone(),
                reference: g.reference.clone(),
                commit: g.commit.clone(),
                path: g.path.clone(),
            }),
            created: humantime::format_rfc3339_millis(p.created).to_string(),
            created_by: p.created_by.clone(),
            truncated: p.truncated.clone(),
        }
    }
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
        (status = 403, description = "The token may not read this function (`function_not_allowed`), or lacks the read scope (`insufficient_scope`)", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
        (status = 502, description = "The object under the key is not a readable zip (`artifact_corrupt`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_artifact(
    State(state): State<AppState>,
    access: Access,
    Path(key): Path<String>,
) -> Result<Json<ArtifactDetail>, ApiError> {
    let key = package_key(&key)?;
    access.check(key.function())?;
    let detail = state.packages.get(&key).await?;
    Ok(Json(ArtifactDetail {
        key: key.to_string(),
        function: key.function().to_string(),
        sha256: key.sha256().to_string(),
        size: detail.size,
        last_modified: rfc3339(detail.last_modified),
        version_id: detail.version_id.clone(),
        location: detail.location,
        files: detail.entries.len(),
        provenance: detail.provenance.as_ref().map(ProvenanceInfo::from),
        code: detail.bucket.as_ref().map(|b| CodeLocation {
            s3_bucket: b.clone(),
            s3_key: key.to_string(),
            s3_object_version: detail.version_id.clone(),
        }),
        ui_url: ui::package_url(&key),
        entries: detail.entries.iter().map(EntryInfo::from).collect(),
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
        (status = 403, description = "The token may not read this function (`function_not_allowed`), or lacks the read scope (`insufficient_scope`)", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_artifact_zip(
    State(state): State<AppState>,
    access: Access,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let key = package_key(&key)?;
    access.check(key.function())?;
    let body = state.packages.download(&key).await?.body;
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
    /// The diff's web page (a path on this service: `/ui/diff?from=…&to=…`).
    pub ui_url: String,
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
        (status = 403, description = "The token may not read a function of the two (`function_not_allowed`), or lacks the read scope (`insufficient_scope`)", body = ErrorBody),
        (status = 404, description = "A package does not exist", body = ErrorBody),
        (status = 502, description = "An object is not a readable zip (`artifact_corrupt`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn diff_artifacts(
    State(state): State<AppState>,
    access: Access,
    Path((key, other_key)): Path<(String, String)>,
) -> Result<Json<ArtifactDiff>, ApiError> {
    let (from, to) = (package_key(&key)?, package_key(&other_key)?);
    access.check(from.function())?;
    access.check(to.function())?;
    let diff = state.packages.diff(&from, &to).await?;
    Ok(Json(ArtifactDiff::from(&diff)))
}

impl From<&packages::ArtifactDiff> for ArtifactDiff {
    fn from(d: &packages::ArtifactDiff) -> Self {
        let changes = |c: &packages::ChangedEntry| {
            [(c.content, "content"), (c.mode, "mode")]
                .into_iter()
                .filter(|(changed, _)| *changed)
                .map(|(_, what)| what.to_owned())
                .collect()
        };
        Self {
            from: d.from.to_string(),
            to: d.to.to_string(),
            ui_url: ui::diff_url(&d.from, &d.to),
            identical: d.identical(),
            added: d.added.iter().map(EntryInfo::from).collect(),
            removed: d.removed.iter().map(EntryInfo::from).collect(),
            changed: d
                .changed
                .iter()
                .map(|c| ChangedEntry {
                    path: c.path.clone(),
                    changes: changes(c),
                    before: EntryInfo::from(&c.before),
                    after: EntryInfo::from(&c.after),
                })
                .collect(),
        }
    }
}
