//! Turning a package request into options and an upload file.
//!
//! The body is one of: a raw archive (format detected later from its bytes, `Content-Type` is
//! not trusted), `multipart/form-data` with a file part `bundle` and option fields, or JSON
//! (`{"git": …}`). Uploads are streamed into an unlinked temp file, never held in memory, so a
//! failed or cut-off request leaves nothing on disk.

use std::fs::File;
use std::path::Path;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::error::ApiError;
use super::state::ApiSettings;
use crate::package::MEMORY_SPOOL_BYTES;
use crate::source::{ArchiveBytes, Selection};
use crate::store::key::{FunctionName, KeyPrefix};

/// Largest JSON request body.
const MAX_JSON_BYTES: usize = 64 * 1024;

/// The `{function}` path segment, validated.
pub(crate) fn function_name(raw: &str) -> Result<FunctionName, ApiError> {
    raw.parse().map_err(|e: crate::store::key::KeyError| ApiError::BadRequest {
        code: "invalid_function_name",
        message: e.to_string(),
    })
}

/// A request's own key prefix (`?prefix=`), which only an operator's permission makes usable.
pub(crate) fn request_prefix(
    settings: &ApiSettings,
    raw: Option<&str>,
) -> Result<Option<KeyPrefix>, ApiError> {
    match raw {
        None | Some("") => Ok(None),
        Some(_) if !settings.allow_request_prefix => Err(ApiError::Forbidden {
            code: "prefix_not_allowed",
            message: "this server does not allow per-request key prefixes".into(),
        }),
        Some(p) => p.parse().map(Some).map_err(|e: crate::store::key::KeyError| ApiError::BadRequest {
            code: "invalid_prefix",
            message: e.to_string(),
        }),
    }
}

/// Options of a package request, from the query string and multipart text fields.
#[derive(Debug, Default)]
pub(crate) struct PackageOptions {
    pub(crate) selection: Selection,
    pub(crate) prefix: Option<String>,
    pub(crate) dry_run: bool,
}

fn invalid(name: &str, value: &str, expected: &str) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_parameter",
        message: format!("parameter {name}={value:?}: expected {expected}"),
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(name, value, "true or false")),
    }
}

impl PackageOptions {
    /// Applies one `name=value` option. Unknown names are refused: a typo must not silently
    /// package something else.
    pub(crate) fn set(&mut self, name: &str, value: &str) -> Result<(), ApiError> {
        match name {
            "path" => self.selection.path = Some(value.to_owned()),
            "strip_components" => {
                self.selection.strip_components =
                    value.parse().map_err(|_| invalid(name, value, "a non-negative integer"))?;
            }
            "include" => self.selection.include.push(value.to_owned()),
            "exclude" => self.selection.exclude.push(value.to_owned()),
            "default_excludes" => self.selection.default_excludes = parse_bool(name, value)?,
            "prefix" => self.prefix = Some(value.to_owned()),
            "dry_run" => self.dry_run = parse_bool(name, value)?,
            _ => {
                return Err(ApiError::BadRequest {
                    code: "invalid_parameter",
                    message: format!("unknown parameter {name:?}"),
                });
            }
        }
        Ok(())
    }

    /// Options from a query string.
    pub(crate) fn from_query(query: Option<&str>) -> Result<Self, ApiError> {
        let mut options = Self::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            options.set(&name, &value)?;
        }
        Ok(options)
    }
}

/// What the body of a package request carries.
#[derive(Debug)]
pub(crate) enum Upload {
    /// An archive, in memory when small, else in an unlinked temp file.
    Archive(ArchiveBytes),
    /// A JSON document (git source requests).
    Json(serde_json::Value),
}

/// Whether a body error came from the body-size limit.
fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

fn body_error(e: &(dyn std::error::Error + 'static), max: u64) -> ApiError {
    if is_length_limit(e) {
        ApiError::PayloadTooLarge { max }
    } else {
        ApiError::BadRequest { code: "upload_interrupted", message: format!("reading the request body: {e}") }
    }
}

async fn temp_file(dir: Option<&Path>) -> Result<File, ApiError> {
    let dir = dir.map(Path::to_owned);
    tokio::task::spawn_blocking(move || match dir {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("creating an upload file: {e}")))
}

/// Collects chunks in memory up to [`MEMORY_SPOOL_BYTES`], and into a new unlinked temp file
/// beyond: small bundles (the common case) never touch the file system.
async fn spool<S, E>(
    mut chunks: S,
    dir: Option<&Path>,
    max: u64,
    chunk_error: impl Fn(E) -> ApiError,
) -> Result<ArchiveBytes, ApiError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    let write_error = |e: std::io::Error| ApiError::Internal(format!("writing the upload: {e}"));
    let mut memory = Vec::new();
    let mut total = 0u64;
    let mut on_disk = None;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(&chunk_error)?;
        total += chunk.len() as u64;
        if total > max {
            return Err(ApiError::PayloadTooLarge { max });
        }
        if on_disk.is_none() && memory.len() + chunk.len() <= MEMORY_SPOOL_BYTES {
            memory.extend_from_slice(&chunk);
            continue;
        }
        let (_, writer) = match &mut on_disk {
            Some(open) => open,
            None => {
                let file = temp_file(dir).await?;
                let copy = file.try_clone().map_err(|e| ApiError::Internal(e.to_string()))?;
                let mut writer =
                    tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(copy));
                writer.write_all(&std::mem::take(&mut memory)).await.map_err(write_error)?;
                on_disk.insert((file, writer))
            }
        };
        writer.write_all(&chunk).await.map_err(write_error)?;
    }
    match on_disk {
        Some((file, mut writer)) => {
            writer.flush().await.map_err(write_error)?;
            Ok(ArchiveBytes::File(file))
        }
        None => Ok(memory.into()),
    }
}

/// Reads the body of a package request, adding multipart text fields to `options`.
pub(crate) async fn read_body(
    request: Request,
    options: &mut PackageOptions,
    temp_dir: Option<&Path>,
    max: u64,
) -> Result<Upload, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        return read_multipart(request, options, temp_dir, max).await;
    }
    if content_type.starts_with("application/json") {
        let bytes = axum::body::to_bytes(request.into_body(), MAX_JSON_BYTES).await.map_err(|e| {
            if is_length_limit(&e) {
                ApiError::PayloadTooLarge { max: MAX_JSON_BYTES as u64 }
            } else {
                ApiError::BadRequest { code: "invalid_json", message: e.to_string() }
            }
        })?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest { code: "invalid_json", message: e.to_string() })?;
        return Ok(Upload::Json(value));
    }
    let body: Body = request.into_body();
    let stream = body.into_data_stream();
    Ok(Upload::Archive(spool(stream, temp_dir, max, |e| body_error(&e, max)).await?))
}

async fn read_multipart(
    request: Request,
    options: &mut PackageOptions,
    temp_dir: Option<&Path>,
    max: u64,
) -> Result<Upload, ApiError> {
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { max }
        } else {
            ApiError::BadRequest { code: "invalid_multipart", message: e.body_text() }
        }
    };
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::BadRequest { code: "invalid_multipart", message: e.body_text() })?;
    let mut bundle = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "bundle" {
            if bundle.is_some() {
                return Err(ApiError::BadRequest {
                    code: "invalid_multipart",
                    message: "more than one `bundle` part".into(),
                });
            }
            bundle = Some(spool(field, temp_dir, max, multipart_error).await?);
        } else {
            let value = field.text().await.map_err(multipart_error)?;
            options.set(&name, &value)?;
        }
    }
    bundle.map(Upload::Archive).ok_or_else(|| ApiError::BadRequest {
        code: "missing_bundle",
        message: "a multipart request needs a file part named `bundle`".into(),
    })
}
