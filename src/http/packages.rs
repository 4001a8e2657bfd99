//! `POST /v1/functions/{function}/package`: upload a source bundle, get its key; and
//! `POST /v1/functions/{function}/package/lookup`: ask whether a zip built elsewhere is stored,
//! to skip its upload.

use axum::Json;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{
    BodyLimits, MAX_LOOKUP_BYTES, OptionSource, PackageOptions, Upload, function_name, read_body,
    read_small_json, request_prefix,
};
use super::middleware::Access;
use super::state::AppState;
use crate::package::{Packed, Sha256Hex};
use crate::packages::{Input, LookupRequest, Outcome, PublishRequest, Published};
use crate::source::SourceFormat;
use crate::source::git::{GitRequest, GitRevision};
use crate::store::key::FunctionName;

/// Where the package is, in the shape of CloudFormation's `AWS::Lambda::Function` `Code`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeLocation {
    /// Bucket.
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: String,
    /// Key.
    #[serde(rename = "S3Key")]
    pub s3_key: String,
    /// Version, on versioned buckets.
    #[serde(rename = "S3ObjectVersion", skip_serializing_if = "Option::is_none")]
    pub s3_object_version: Option<String>,
}

/// The answer to a package request.
#[derive(Debug, Serialize, ToSchema)]
pub struct PackageResponse {
    /// The function name.
    pub function: String,
    /// The bucket (`null` with the local store).
    pub bucket: Option<String>,
    /// `{prefix}lambda-{function}-{sha256}.zip`.
    pub key: String,
    /// SHA-256 of the zip, hex.
    pub sha256: String,
    /// SHA-256 of the zip, base64: what AWS Lambda reports as `CodeSha256`.
    pub code_sha256: String,
    /// Size of the zip in bytes.
    pub size: u64,
    /// Number of files in the zip.
    pub files: u64,
    /// Whether this call stored the object (`false`: it already existed, or dry run).
    pub uploaded: bool,
    /// The S3 version id, on versioned buckets.
    pub version_id: Option<String>,
    /// `s3://bucket/key` or `file:///…`. Absent on a dry run whose key is not stored yet: it
    /// would name an object that does not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Paste-ready CloudFormation `Code` (S3 stores only; `null` on a dry run whose key is not
    /// stored yet).
    pub code: Option<CodeLocation>,
    /// The detected input format.
    pub format: String,
    /// The canonical format version of the bytes.
    pub format_version: u32,
    /// Present on dry runs: whether the key already exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The package's web page (a path on this service: `/ui/packages/{key}`). Absent on a dry
    /// run whose key is not stored yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ui_url: Option<String>,
    /// Present for git sources: the remote, the ref and the 40-hex commit it resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<GitSourceInfo>)]
    pub source: Option<GitRevision>,
}

/// The git revision a package was built from.
#[derive(Debug, Serialize, ToSchema)]
pub struct GitSourceInfo {
    /// The remote URL.
    pub repo: String,
    /// The ref as requested.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The commit it resolved to (40 hex digits).
    pub commit: String,
}

/// A JSON package request: a directory of a commit of an allow-listed git remote, and the same
/// package options as the query string (an option may be given here or in the query, not both).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitPackageRequest {
    /// The remote, the ref (branch, tag or 40-hex commit) and the sub-directory (`path`).
    #[schema(value_type = GitSourceRequest)]
    pub git: GitRequest,
    /// Keep only files matching these gitignore patterns.
    pub include: Option<Vec<String>>,
    /// Remove files matching these gitignore patterns.
    pub exclude: Option<Vec<String>>,
    /// Exclude .git/, __pycache__/ and friends (default true).
    pub default_excludes: Option<bool>,
    /// Leading path components to remove.
    pub strip_components: Option<u32>,
    /// Extra key prefix, if the operator allows it.
    pub prefix: Option<String>,
    /// Compute everything, store nothing (default false).
    pub dry_run: Option<bool>,
}

/// The `git` object of a JSON package request.
#[derive(Debug, ToSchema)]
pub struct GitSourceRequest {
    /// Remote URL (must match an allow-listed prefix).
    pub repo: String,
    /// Branch, tag or 40-hex commit id.
    #[schema(rename = "ref")]
    pub reference: String,
    /// Sub-directory of the commit that becomes the zip root.
    pub path: Option<String>,
}

impl PackageResponse {
    fn new(p: &Published, function: &FunctionName) -> Self {
        let key = p.key.to_string();
        let stored = p.outcome != Outcome::DryRun { exists: false };
        Self {
            function: function.to_string(),
            bucket: p.bucket.clone(),
            code: p.bucket.as_ref().filter(|_| stored).map(|b| CodeLocation {
                s3_bucket: b.clone(),
                s3_key: key.clone(),
                s3_object_version: p.version_id.clone(),
            }),
            location: stored.then(|| p.location.clone()),
            ui_url: stored.then(|| super::ui::package_url(&p.key)),
            key,
            sha256: p.packed.sha256.to_string(),
            code_sha256: p.packed.code_sha256(),
            size: p.packed.size,
            files: p.packed.files,
            uploaded: p.outcome == Outcome::Created,
            version_id: p.version_id.clone(),
            format: p.format.as_str().to_owned(),
            format_version: crate::package::FORMAT_VERSION,
            exists: match p.outcome {
                Outcome::DryRun { exists } => Some(exists),
                _ => None,
            },
            source: p.git.clone(),
        }
    }
}

/// Package a source bundle and store it exactly once.
///
/// The body is a raw tar, tar.gz or zip (detected from its bytes), or `multipart/form-data` with
/// a file part `bundle` (and the options as text fields), or a JSON git request. Options: `path`,
/// `strip_components`, `include` and `exclude` (repeatable), `default_excludes`, `prefix` (if
/// the operator allows it), `dry_run`; each in one place (query string or body), single-valued
/// ones once.
#[utoipa::path(
    post,
    path = "/v1/functions/{function}/package",
    tag = "packages",
    params(
        ("function" = String, Path, description = "Lambda function name, [A-Za-z0-9_-]{1,64}"),
        ("path" = Option<String>, Query, description = "Directory of the input that becomes the zip root"),
        ("strip_components" = Option<u32>, Query, description = "Leading path components to remove"),
        ("include" = Option<Vec<String>>, Query, description = "Keep only files matching these gitignore patterns"),
        ("exclude" = Option<Vec<String>>, Query, description = "Remove files matching these gitignore patterns"),
        ("default_excludes" = Option<bool>, Query, description = "Exclude .git/, __pycache__/ and friends (default true)"),
        ("prefix" = Option<String>, Query, description = "Extra key prefix, if the operator allows it"),
        ("dry_run" = Option<bool>, Query, description = "Compute everything, store nothing"),
    ),
    request_body(content_type = "application/octet-stream", description = "The source bundle: a raw tar, tar.gz or zip (detected from its bytes), or multipart/form-data with a file part `bundle`"),
    responses(
        (status = 201, description = "Stored by this call", body = PackageResponse),
        (status = 200, description = "Already stored (or dry run)", body = PackageResponse),
        (status = 400, description = "Malformed request or archive", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Prefix not allowed (`prefix_not_allowed`), a token without the write scope (`insufficient_scope`) or limited to other functions (`function_not_allowed`), a git remote not allowed", body = ErrorBody),
        (status = 408, description = "Request timeout, or the upload arrived slower than the minimum body rate", body = ErrorBody),
        (status = 409, description = "The key holds other bytes", body = ErrorBody),
        (status = 413, description = "Body or unpacked size over a limit", body = ErrorBody),
        (status = 415, description = "Not a tar, tar.gz or zip", body = ErrorBody),
        (status = 422, description = "The archive cannot become a package", body = ErrorBody),
        (status = 503, description = "Busy, overloaded or store unavailable; see Retry-After", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn create_package(
    State(state): State<AppState>,
    access: Access,
    Path(function): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<(StatusCode, Json<PackageResponse>), ApiError> {
    let function = function_name(&function)?;
    // Before the upload: a token limited to other functions sends no bytes for nothing.
    access.check(&function)?;
    let mut options = PackageOptions::from_query(query.as_deref())?;
    let packages = &state.packages;
    let limits = BodyLimits {
        temp_dir: state.settings.upload_dir.as_deref(),
        max: state.settings.max_body_bytes,
        min_rate: state.settings.min_body_rate,
    };
    let upload = read_body(request, &mut options, &limits).await?;
    let (input, source_sha256) = match upload {
        Upload::Archive(file, sha256) => (Input::Archive(file), Some(sha256)),
        Upload::Json(value) => (git_input(&state, value, &mut options)?, None),
    };
    let prefix = request_prefix(packages.prefixes(), options.prefix.as_deref())?;
    let published = packages
        .publish(PublishRequest {
            function: function.clone(),
            prefix,
            selection: options.selection,
            input,
            dry_run: options.dry_run,
            source_sha256,
            created_by: access.name(),
        })
        .await?;
    let status = if published.outcome == Outcome::Created { StatusCode::CREATED } else { StatusCode::OK };
    record_on_span(&published);
    Ok((status, Json(PackageResponse::new(&published, &function))))
}

/// Puts the package's key, size and outcome on the request span, so the one line logged per
/// request carries them.
fn record_on_span(published: &Published) {
    let span = tracing::Span::current();
    span.record("key", tracing::field::display(&published.key));
    span.record("size_bytes", published.packed.size);
    span.record("outcome", tracing::field::debug(&published.outcome));
}

/// A JSON body: `{"git": {...}, "include": [...], ...}`. Checked against the allow-list here,
/// before any worker or network is used.
fn git_input(
    state: &AppState,
    value: serde_json::Value,
    options: &mut PackageOptions,
) -> Result<Input, ApiError> {
    if value.get("git").is_none() {
        return Err(ApiError::InvalidJson(
            "a JSON body must be {\"git\": {...}}; send archives as raw bytes or multipart".into(),
        ));
    }
    if !state.packages.accepts_git() {
        return Err(crate::packages::Error::GitSourceDisabled.into());
    }
    let request: GitPackageRequest =
        serde_json::from_value(value).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    state.packages.check_git(&request.git)?;
    // The same checks as query parameters: known, counted, capped, and given in one place only.
    let json = OptionSource::Json;
    for (name, patterns) in [("include", request.include), ("exclude", request.exclude)] {
        if let Some(patterns) = patterns {
            if patterns.is_empty() {
                // `"include": []` still counts as giving the option here.
                let _ = options.accept(name, json)?;
            }
            for pattern in patterns {
                options.set(name, &pattern, json)?;
            }
        }
    }
    let scalars = [
        ("default_excludes", request.default_excludes.map(|b| b.to_string())),
        ("strip_components", request.strip_components.map(|n| n.to_string())),
        ("prefix", request.prefix),
        ("dry_run", request.dry_run.map(|b| b.to_string())),
    ];
    for (name, value) in scalars {
        if let Some(value) = value {
            options.set(name, &value, json)?;
        }
    }
    Ok(Input::Git(request.git))
}

/// A lookup: the zip a client built (with the code the server uses, so the same input gives the
/// same digest), and the options of the post it would otherwise make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupBody {
    /// SHA-256 of the zip, hex.
    pub sha256: String,
    /// Size of the zip in bytes.
    pub size: u64,
    /// Number of files in the zip (echoed in the answer).
    pub files: u64,
    /// The format of the input the client would upload: `tar`, `tar.gz` or `zip` (echoed in
    /// the answer, as a post reports the format it detected).
    pub format: String,
    /// Extra key prefix, if the operator allows it (as the post's `prefix`).
    pub prefix: Option<String>,
    /// Answer as a dry-run post would (default false).
    pub dry_run: Option<bool>,
}

/// The formats a client uploads.
fn upload_format(raw: &str) -> Result<SourceFormat, ApiError> {
    [SourceFormat::Tar, SourceFormat::TarGz, SourceFormat::Zip]
        .into_iter()
        .find(|f| f.as_str() == raw)
        .ok_or_else(|| {
            let shown: String = raw.chars().take(64).collect();
            ApiError::InvalidParameter(format!("parameter format={shown:?}: expected tar, tar.gz or zip"))
        })
}

/// Whether a package is already stored, without uploading it.
///
/// The client packs the input itself (`lambda-packager pack`, whose bytes equal the server's)
/// and sends the zip's digest, size and file count with the post's `prefix` and `dry_run`; the
/// server computes the key with its own `store.prefix` and prefix policy. When the object is
/// there with that size, the answer is what a re-post of the input would answer (200,
/// `uploaded: false`); else 404 `artifact_not_found`, and the client uploads. Same scope,
/// function and prefix checks as a post.
#[utoipa::path(
    post,
    path = "/v1/functions/{function}/package/lookup",
    tag = "packages",
    params(("function" = String, Path, description = "Lambda function name, [A-Za-z0-9_-]{1,64}")),
    request_body(content = LookupBody, description = "The zip the client built: {\"sha256\", \"size\", \"files\", \"format\", \"prefix\"?, \"dry_run\"?}"),
    responses(
        (status = 200, description = "Stored: the answer a re-post would get", body = PackageResponse),
        (status = 400, description = "Malformed body (`invalid_json`), digest or format (`invalid_parameter`), or prefix (`invalid_prefix`)", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Prefix not allowed (`prefix_not_allowed`), a token without the write scope (`insufficient_scope`) or limited to other functions (`function_not_allowed`)", body = ErrorBody),
        (status = 404, description = "Not stored, or other bytes under the key (`artifact_not_found`): upload it", body = ErrorBody),
        (status = 413, description = "Body over 4 KiB", body = ErrorBody),
        (status = 503, description = "Overloaded or store unavailable; see Retry-After", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn lookup_package(
    State(state): State<AppState>,
    access: Access,
    Path(function): Path<String>,
    request: Request,
) -> Result<Json<PackageResponse>, ApiError> {
    let function = function_name(&function)?;
    access.check(&function)?;
    let body: LookupBody = read_small_json(request, MAX_LOOKUP_BYTES).await?;
    let sha256: Sha256Hex = body.sha256.parse().map_err(|_| {
        ApiError::InvalidParameter("parameter sha256: expected 64 lowercase hex digits".to_owned())
    })?;
    let format = upload_format(&body.format)?;
    let packages = &state.packages;
    let prefix = request_prefix(packages.prefixes(), body.prefix.as_deref())?;
    let published = packages
        .lookup(LookupRequest {
            function: function.clone(),
            prefix,
            packed: Packed { sha256, size: body.size, files: body.files },
            format,
            dry_run: body.dry_run.unwrap_or(false),
        })
        .await?;
    record_on_span(&published);
    Ok(Json(PackageResponse::new(&published, &function)))
}
