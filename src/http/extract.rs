//! Turning a package request into options and an upload file.
//!
//! The body is one of: a raw archive (format detected later from its bytes, `Content-Type` is
//! not trusted), `multipart/form-data` with a file part `bundle` and option fields, or JSON
//! (`{"git": …}`). Uploads are streamed into memory up to 1 MiB and into an unlinked temp file
//! beyond, so a failed or cut-off request leaves nothing on disk. Whatever the body's shape,
//! what a request holds is bounded while it streams: the body's size and minimum rate
//! (`body::MinRate`), multipart framing (`body::Framed`), and options by number and length
//! ([`MAX_OPTIONS`], [`MAX_OPTION_BYTES`]).

use std::fs::File;
use std::path::Path;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::body::{BodyRefused, Framed, FramingBudget, MinRate, refusal};
use super::error::ApiError;
use super::state::MinBodyRate;
use crate::package::{MEMORY_SPOOL_BYTES, Sha256Hex};
use crate::packages::{BuildError, Error as PackagesError, PrefixPolicy};
use crate::source::select::{MAX_PATTERN_BYTES, MAX_PATTERNS};
use crate::source::{ArchiveBytes, Selection};
use crate::store::key::{FunctionName, KeyPrefix, ObjectKey};

/// Largest JSON request body.
const MAX_JSON_BYTES: usize = 64 * 1024;

/// The `{function}` path segment, validated.
pub(crate) fn function_name(raw: &str) -> Result<FunctionName, ApiError> {
    raw.parse().map_err(ApiError::InvalidFunctionName)
}

/// A `{key}` path segment, validated as a package key.
pub(crate) fn package_key(raw: &str) -> Result<ObjectKey, ApiError> {
    raw.parse().map_err(|source| ApiError::InvalidKey { key: raw.to_owned(), source })
}

/// A request's own key prefix (`?prefix=`). A server that allows none refuses any, well formed
/// or not, before it is parsed.
pub(crate) fn request_prefix(
    policy: &PrefixPolicy,
    raw: Option<&str>,
) -> Result<Option<KeyPrefix>, ApiError> {
    match raw {
        None | Some("") => Ok(None),
        Some(_) if !policy.allow_request => Err(PackagesError::PrefixNotAllowed.into()),
        Some(p) => p.parse().map(Some).map_err(ApiError::InvalidPrefix),
    }
}

/// Most options one request may carry, query parameters, multipart text fields and JSON values
/// together: as many `include` and `exclude` patterns as a selection takes, and each
/// single-valued option once (517).
pub(crate) const MAX_OPTIONS: usize = 2 * MAX_PATTERNS + 5;

/// Longest value of one option, in bytes: a pattern's limit (no other option needs more). A
/// multipart text field is read only up to this, so the options of a request never hold more
/// than `MAX_OPTIONS × MAX_OPTION_BYTES` (about 0.5 MiB), however the body is shaped.
pub(crate) const MAX_OPTION_BYTES: usize = MAX_PATTERN_BYTES;

/// Where a request gave an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OptionSource {
    /// The query string.
    Query,
    /// A multipart text field.
    Multipart,
    /// The JSON body of a git request.
    Json,
}

impl OptionSource {
    fn describe(self) -> &'static str {
        match self {
            Self::Query => "the query string",
            Self::Multipart => "a multipart field",
            Self::Json => "the JSON body",
        }
    }
}

/// An option a package request knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OptionName {
    Path,
    StripComponents,
    Include,
    Exclude,
    DefaultExcludes,
    Prefix,
    DryRun,
}

impl OptionName {
    const ALL: [Self; 7] = [
        Self::Path,
        Self::StripComponents,
        Self::Include,
        Self::Exclude,
        Self::DefaultExcludes,
        Self::Prefix,
        Self::DryRun,
    ];

    /// The name in query strings, multipart fields and JSON bodies.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::StripComponents => "strip_components",
            Self::Include => "include",
            Self::Exclude => "exclude",
            Self::DefaultExcludes => "default_excludes",
            Self::Prefix => "prefix",
            Self::DryRun => "dry_run",
        }
    }

    /// Whether a request may give the option more than once.
    fn repeatable(self) -> bool {
        matches!(self, Self::Include | Self::Exclude)
    }
}

/// Options of a package request, from the query string and multipart text fields (or the JSON
/// body of a git request).
#[derive(Debug, Default)]
pub(crate) struct PackageOptions {
    pub(crate) selection: Selection,
    pub(crate) prefix: Option<String>,
    pub(crate) dry_run: bool,
    /// Every option given so far, with where it came from.
    given: Vec<(OptionName, OptionSource)>,
}

fn invalid(name: &str, value: &str, expected: &str) -> ApiError {
    ApiError::InvalidParameter(format!("parameter {name}={value:?}: expected {expected}"))
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(name, value, "true or false")),
    }
}

fn bad_parameter(message: String) -> ApiError {
    ApiError::InvalidParameter(message)
}

fn too_long(name: &str) -> ApiError {
    bad_parameter(format!("parameter {name} is longer than {MAX_OPTION_BYTES} bytes"))
}

impl PackageOptions {
    /// Checks that option `name` may be given (once more) from `from`, and records it. Refused:
    /// an unknown name (a typo must not silently package something else), the option limit, a
    /// second value of a single-valued option (no "last one wins"), and one option given in two
    /// places (query string and body), which would otherwise be resolved silently.
    pub(crate) fn accept(&mut self, name: &str, from: OptionSource) -> Result<OptionName, ApiError> {
        let Some(option) = OptionName::ALL.into_iter().find(|o| o.as_str() == name) else {
            let shown: String = name.chars().take(64).collect();
            return Err(bad_parameter(format!("unknown parameter {shown:?}")));
        };
        if self.given.len() >= MAX_OPTIONS {
            return Err(bad_parameter(format!("more than {MAX_OPTIONS} options in one request")));
        }
        if let Some(&(_, earlier)) = self.given.iter().find(|(given, _)| *given == option) {
            if earlier != from {
                return Err(bad_parameter(format!(
                    "parameter {name} is given both in {} and in {}; give it in one place",
                    earlier.describe(),
                    from.describe()
                )));
            }
            if !option.repeatable() {
                return Err(bad_parameter(format!(
                    "parameter {name} is given more than once; it takes one value"
                )));
            }
        }
        self.given.push((option, from));
        Ok(option)
    }

    /// Applies the value of an option [`accept`](Self::accept) returned.
    pub(crate) fn apply(&mut self, option: OptionName, value: &str) -> Result<(), ApiError> {
        let name = option.as_str();
        if value.len() > MAX_OPTION_BYTES {
            return Err(too_long(name));
        }
        match option {
            OptionName::Path => self.selection.path = Some(value.to_owned()),
            OptionName::StripComponents => {
                self.selection.strip_components =
                    value.parse().map_err(|_| invalid(name, value, "a non-negative integer"))?;
            }
            OptionName::Include => self.selection.include.push(value.to_owned()),
            OptionName::Exclude => self.selection.exclude.push(value.to_owned()),
            OptionName::DefaultExcludes => self.selection.default_excludes = parse_bool(name, value)?,
            OptionName::Prefix => self.prefix = Some(value.to_owned()),
            OptionName::DryRun => self.dry_run = parse_bool(name, value)?,
        }
        Ok(())
    }

    /// Applies one `name=value` option given in `from`.
    pub(crate) fn set(&mut self, name: &str, value: &str, from: OptionSource) -> Result<(), ApiError> {
        let option = self.accept(name, from)?;
        self.apply(option, value)
    }

    /// Options from a query string.
    pub(crate) fn from_query(query: Option<&str>) -> Result<Self, ApiError> {
        let mut options = Self::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            options.set(&name, &value, OptionSource::Query)?;
        }
        Ok(options)
    }
}

/// What the body of a package request carries.
#[derive(Debug)]
pub(crate) enum Upload {
    /// An archive, in memory when small, else in an unlinked temp file, and its SHA-256
    /// (computed as it arrived).
    Archive(ArchiveBytes, Sha256Hex),
    /// A JSON document (git source requests).
    Json(serde_json::Value),
}

/// Largest body of a lookup (`POST /v1/functions/{function}/package/lookup`): a digest, two
/// numbers, a format and a prefix.
pub(crate) const MAX_LOOKUP_BYTES: usize = 4 * 1024;

/// Reads a small JSON body of at most `max` bytes into `T`: 413 `payload_too_large` beyond,
/// 400 `invalid_json` when it does not parse or has unknown fields.
pub(crate) async fn read_small_json<T: serde::de::DeserializeOwned>(
    request: Request,
    max: usize,
) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(request.into_body(), max)
        .await
        .map_err(|e| body_error(&e, max as u64, || ApiError::InvalidJson(e.to_string())))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))
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

/// Whether an error came out of the request body stream itself (the client went away, or the
/// connection failed), rather than from parsing what arrived.
fn is_body_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<axum::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The answer to a failure while reading the body: over the size limit (413), stopped by a
/// body guard (408 too slow; multipart framing over its budget), the client stopped sending,
/// or else `malformed` (what the body's parser found wrong).
fn body_error(
    e: &(dyn std::error::Error + 'static),
    max: u64,
    malformed: impl FnOnce() -> ApiError,
) -> ApiError {
    if is_length_limit(e) {
        return ApiError::PayloadTooLarge { max };
    }
    match refusal(e) {
        Some(BodyRefused::TooSlow(rate)) => ApiError::UploadTooSlow(*rate),
        Some(refused @ BodyRefused::MultipartFraming) => ApiError::InvalidMultipart(refused.to_string()),
        None if is_body_failure(e) => ApiError::UploadInterrupted(format!("reading the request body: {e}")),
        None => malformed(),
    }
}

/// An I/O failure while keeping the upload: 507 `insufficient_storage` when the disk is full
/// (the client may retry later, as for any other full disk), else an internal error.
fn upload_io_error(what: &'static str) -> impl Fn(std::io::Error) -> ApiError {
    move |e| {
        if crate::package::is_storage_full(&e) {
            let full = std::io::Error::new(e.kind(), format!("{what}: {e}"));
            PackagesError::Build(BuildError::Source(crate::source::Error::StorageFull(full))).into()
        } else {
            ApiError::Internal(format!("{what}: {e}"))
        }
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
    .map_err(upload_io_error("creating an upload file"))
}

/// How many leading bytes of an upload [`Spooled::head`] keeps (what format detection reads).
const HEAD_BYTES: usize = 512;

/// An upload, its first bytes, and its digest.
struct Spooled {
    bytes: ArchiveBytes,
    head: Vec<u8>,
    sha256: Sha256Hex,
}

/// Collects chunks in memory up to [`MEMORY_SPOOL_BYTES`], and into a new unlinked temp file
/// beyond: small bundles (the common case) never touch the file system. Each chunk is hashed
/// on its way through, so the upload's SHA-256 (its provenance) costs no second read.
async fn spool<S, E>(
    mut chunks: S,
    dir: Option<&Path>,
    max: u64,
    chunk_error: impl Fn(E) -> ApiError,
) -> Result<Spooled, ApiError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    let write_error = upload_io_error("writing the upload");
    let mut memory = Vec::new();
    let mut head = Vec::new();
    let mut total = 0u64;
    let mut on_disk = None;
    let mut hasher = Sha256::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(&chunk_error)?;
        hasher.update(&chunk);
        total += chunk.len() as u64;
        if total > max {
            return Err(ApiError::PayloadTooLarge { max });
        }
        if head.len() < HEAD_BYTES {
            head.extend_from_slice(&chunk[..chunk.len().min(HEAD_BYTES - head.len())]);
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
                writer.write_all(&std::mem::take(&mut memory)).await.map_err(&write_error)?;
                on_disk.insert((file, writer))
            }
        };
        writer.write_all(&chunk).await.map_err(&write_error)?;
    }
    let bytes = match on_disk {
        Some((file, mut writer)) => {
            writer.flush().await.map_err(&write_error)?;
            ArchiveBytes::File(file)
        }
        None => memory.into(),
    };
    Ok(Spooled { bytes, head, sha256: Sha256Hex::from_bytes(hasher.finalize().into()) })
}

/// Where the body of a package request goes, and how it may arrive.
pub(crate) struct BodyLimits<'a> {
    /// Directory for uploads past [`MEMORY_SPOOL_BYTES`] (`None`: the system temp directory).
    pub(crate) temp_dir: Option<&'a Path>,
    /// Largest body.
    pub(crate) max: u64,
    /// Slowest accepted body.
    pub(crate) min_rate: Option<MinBodyRate>,
}

/// Reads the body of a package request, adding multipart text fields to `options`.
pub(crate) async fn read_body(
    request: Request,
    options: &mut PackageOptions,
    limits: &BodyLimits<'_>,
) -> Result<Upload, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (parts, body) = request.into_parts();
    let body = match limits.min_rate {
        Some(rate) => Body::from_stream(MinRate::new(body.into_data_stream(), rate)),
        None => body,
    };
    if content_type.starts_with("multipart/form-data") {
        return read_multipart(Request::from_parts(parts, body), options, limits).await;
    }
    if content_type.starts_with("application/json") {
        let bytes = axum::body::to_bytes(body, MAX_JSON_BYTES)
            .await
            .map_err(|e| body_error(&e, MAX_JSON_BYTES as u64, || ApiError::InvalidJson(e.to_string())))?;
        let value = serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        return Ok(Upload::Json(value));
    }
    let max = limits.max;
    let spooled = spool(body.into_data_stream(), limits.temp_dir, max, |e| {
        body_error(&e, max, || ApiError::UploadInterrupted(format!("reading the request body: {e}")))
    })
    .await?;
    if looks_like_json(&spooled.head) {
        return Err(ApiError::JsonWithoutContentType {
            content_type: content_type.chars().take(100).collect(),
        });
    }
    Ok(Upload::Archive(spooled.bytes, spooled.sha256))
}

/// A raw body that no archive format claims, but that starts like a JSON object: a git request
/// sent without `Content-Type: application/json` (curl's `-d` says
/// `application/x-www-form-urlencoded`).
fn looks_like_json(head: &[u8]) -> bool {
    crate::source::detect(head).is_err() && head.trim_ascii_start().first() == Some(&b'{')
}

/// The name a multipart request gives its archive part.
const BUNDLE_PART: &str = "bundle";

fn missing_bundle(message: String) -> ApiError {
    ApiError::MissingBundle(message)
}

/// Reads a multipart text field, refusing it as soon as it passes [`MAX_OPTION_BYTES`]: the
/// rest of the field (and of the body) is never read.
async fn read_text_field(
    field: &mut axum::extract::multipart::Field<'_>,
    name: &str,
    budget: &FramingBudget,
    multipart_error: impl Fn(axum::extract::multipart::MultipartError) -> ApiError,
) -> Result<String, ApiError> {
    let mut value = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(&multipart_error)? {
        budget.delivered(chunk.len());
        if value.len() + chunk.len() > MAX_OPTION_BYTES {
            return Err(too_long(name));
        }
        value.extend_from_slice(&chunk);
    }
    String::from_utf8(value).map_err(|_| bad_parameter(format!("parameter {name} is not UTF-8")))
}

async fn read_multipart(
    request: Request,
    options: &mut PackageOptions,
    limits: &BodyLimits<'_>,
) -> Result<Upload, ApiError> {
    let max = limits.max;
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        body_error(&e, max, || ApiError::InvalidMultipart(e.body_text()))
    };
    let budget = FramingBudget::default();
    let (parts, body) = request.into_parts();
    let body = Body::from_stream(Framed::new(body.into_data_stream(), budget.clone()));
    let mut multipart = Multipart::from_request(Request::from_parts(parts, body), &())
        .await
        .map_err(|e| ApiError::InvalidMultipart(e.body_text()))?;
    let mut bundle = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == BUNDLE_PART {
            if bundle.is_some() {
                return Err(ApiError::InvalidMultipart("more than one `bundle` part".into()));
            }
            let counted = budget.clone();
            let field = field.inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    counted.delivered(chunk.len());
                }
            });
            let spooled = spool(field, limits.temp_dir, max, multipart_error).await?;
            bundle = Some((spooled.bytes, spooled.sha256));
        } else if field.file_name().is_some() {
            let shown: String = name.chars().take(64).collect();
            return Err(missing_bundle(format!(
                "the archive must be the file part named `{BUNDLE_PART}`, not {shown:?} \
                 (curl -F {BUNDLE_PART}=@fn.tar.gz)"
            )));
        } else {
            let option = options.accept(&name, OptionSource::Multipart)?;
            let value = read_text_field(&mut field, option.as_str(), &budget, multipart_error).await?;
            options.apply(option, &value)?;
        }
    }
    bundle.map(|(bytes, sha256)| Upload::Archive(bytes, sha256)).ok_or_else(|| {
        missing_bundle(format!(
            "a multipart request needs a file part named `{BUNDLE_PART}` (curl -F {BUNDLE_PART}=@fn.tar.gz)"
        ))
    })
}
