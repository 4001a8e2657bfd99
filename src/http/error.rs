//! `ApiError`: the only error type that becomes an HTTP response.
//!
//! Every error of every layer is a typed variant here (the packages service's errors wrapped
//! whole), and [`ApiError::status_and_code`] maps each, once, by one exhaustive `match`, to a
//! status and a stable snake_case code: no code string is written anywhere else in `http/`.
//! The body is always `{"error":{"code":"…","message":"…"}}`. 5xx bodies carry a generic
//! message (the detail goes to the log, under the request id), so bucket names, paths and SDK
//! messages never leak. The error is also put in the response's extensions, where the logging
//! middleware finds it and logs it once.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::state::MinBodyRate;
use crate::auth::Scope;
use crate::blocking::PoolError;
use crate::package;
use crate::packages::{BuildError, Error as PackagesError};
use crate::source::Error as SourceError;
use crate::store;
use crate::store::key::{FunctionName, KeyError};

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A use case of the packages service failed (input, packaging, pool, store, key
    /// conflict, prefix, missing or corrupt package, cursor).
    #[error(transparent)]
    Packages(#[from] PackagesError),
    /// The `{key}` path segment is not a package key.
    #[error("{key:?}: {source}")]
    InvalidKey {
        /// The segment, as given.
        key: String,
        /// What is wrong with it.
        source: KeyError,
    },
    /// The `{function}` path segment is not a Lambda function name.
    #[error(transparent)]
    InvalidFunctionName(KeyError),
    /// The `prefix` option is not a key prefix.
    #[error(transparent)]
    InvalidPrefix(KeyError),
    /// An unknown option, a bad value, an option given twice or in two places, too many.
    #[error("{0}")]
    InvalidParameter(String),
    /// A malformed multipart body (or more framing than allowed).
    #[error("{0}")]
    InvalidMultipart(String),
    /// A multipart body without a file part named `bundle`.
    #[error("{0}")]
    MissingBundle(String),
    /// A JSON body that does not parse, or is not a git request.
    #[error("{0}")]
    InvalidJson(String),
    /// The client stopped sending the body.
    #[error("{0}")]
    UploadInterrupted(String),
    /// No valid bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The token lacks the scope the route needs.
    #[error("token {token:?} may not {}: it lacks the {} scope", match scope { Scope::Read => "read", Scope::Write => "publish" }, match scope { Scope::Read => "read", Scope::Write => "write" })]
    InsufficientScope {
        /// The token's name.
        token: String,
        /// The scope the route needs.
        scope: Scope,
    },
    /// The token is limited to other functions.
    #[error("token {token:?} may not use function {function}")]
    FunctionNotAllowed {
        /// The token's name.
        token: String,
        /// The function it asked for.
        function: FunctionName,
    },
    /// A sign-in or sign-out form posted from another site (`Sec-Fetch-Site`, `Origin`).
    #[error("this form may only be posted from the service's own pages")]
    CrossSiteRequest,
    /// The body is larger than the limit.
    #[error("the request body is larger than {max} bytes")]
    PayloadTooLarge {
        /// The limit.
        max: u64,
    },
    /// More requests in flight than the concurrency limit.
    #[error("too many requests in flight; retry shortly")]
    Overloaded,
    /// The request body arrived slower than the configured minimum rate.
    #[error(
        "the request body arrived slower than {} bytes per second over {} s; send it over a faster link",
        .0.bytes_per_sec,
        .0.window.as_secs()
    )]
    UploadTooSlow(MinBodyRate),
    /// A raw body that is no archive but looks like JSON: a git request without its content type.
    #[error(
        "the body looks like JSON, but {}: send JSON (git requests) with \
         `Content-Type: application/json`, archives as raw tar, tar.gz or zip bytes",
        given_content_type(content_type)
    )]
    JsonWithoutContentType {
        /// The content type the request gave (empty if none).
        content_type: String,
    },
    /// No route for this path.
    #[error("no such route")]
    RouteNotFound,
    /// A bare error status from outside the handlers (an axum rejection, a tower layer such as
    /// the request timeout), with the text it came with.
    #[error("{message}")]
    Rejected {
        /// The status the layer answered.
        status: StatusCode,
        /// Its body text (or the status's reason when it had none).
        message: String,
    },
    /// A handler panicked (the panic's message goes to the log only).
    #[error("a handler panicked: {0}")]
    Panicked(String),
    /// A failure of this service that has no better description.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How an error message names the content type a request gave.
fn given_content_type(content_type: &str) -> String {
    match content_type {
        "" => "the request has no Content-Type".to_owned(),
        given => format!("its Content-Type is {given:?}"),
    }
}

/// The JSON error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside the envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (see the README's table).
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// Marks a response whose body is already the JSON envelope, and carries the error to the log.
#[derive(Debug, Clone)]
pub struct Reported(pub Arc<ApiError>);

/// Status of an input error: malformed → 400, too big → 413, unsupported media → 415, a
/// well-formed archive whose content cannot become a package → 422.
fn source_status(e: &SourceError) -> StatusCode {
    use SourceError as S;
    match e {
        S::UnsupportedFormat(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        S::Corrupt(_) | S::InvalidPattern { .. } | S::InvalidSelection(_) => StatusCode::BAD_REQUEST,
        S::HeaderTooLarge { .. }
        | S::TooManyEntries { .. }
        | S::UnpackedTooLarge { .. }
        | S::ArchiveTooLarge { .. }
        | S::CompressionRatio { .. }
        | S::TooManySymlinks { .. }
        | S::TooManyDirectories { .. }
        | S::TooManyWalkSteps { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        S::InvalidPath { .. }
        | S::PathTooLong { .. }
        | S::PathTooDeep { .. }
        | S::UnsupportedEntryType { .. }
        | S::SparseEntry { .. }
        | S::DuplicatePath { .. }
        | S::PathConflict { .. }
        | S::SymlinkEscapes { .. }
        | S::SymlinkBroken { .. }
        | S::SymlinkLoop { .. }
        | S::InvalidHardLink { .. }
        | S::SubPathNotFound { .. }
        | S::SubPathNotDirectory { .. }
        | S::EmptyPackage
        | S::UnsupportedCompression { .. }
        | S::EncryptedEntry { .. }
        | S::SubmoduleNotSupported { .. }
        | S::GitRepoTooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        S::InvalidGitRequest(_) => StatusCode::BAD_REQUEST,
        S::GitRemoteNotAllowed { .. } => StatusCode::FORBIDDEN,
        S::GitRefNotFound { .. } => StatusCode::NOT_FOUND,
        S::GitFetchFailed { .. } => StatusCode::BAD_GATEWAY,
        S::GitFetchTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        // Only a request that went away (or a shutdown) is cancelled: nobody reads this answer.
        S::Cancelled => StatusCode::REQUEST_TIMEOUT,
        S::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        S::Io(_) | S::GitRead(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn store_status(e: &store::Error) -> (StatusCode, &'static str) {
    match e {
        store::Error::NotFound => (StatusCode::NOT_FOUND, "artifact_not_found"),
        store::Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        store::Error::Denied(_) => (StatusCode::BAD_GATEWAY, "store_access_denied"),
        store::Error::Backend(_) => (StatusCode::BAD_GATEWAY, "store_error"),
        store::Error::Io(e) if package::is_storage_full(e) => {
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        }
        store::Error::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_io_error"),
    }
}

/// The code of a bare status that a layer outside the handlers answered.
fn rejected_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "error",
    }
}

fn packages_status(e: &PackagesError) -> (StatusCode, &'static str) {
    match e {
        PackagesError::Build(BuildError::Source(SourceError::Cancelled))
        | PackagesError::Build(BuildError::Package(package::Error::Cancelled)) => {
            (StatusCode::REQUEST_TIMEOUT, "request_timeout")
        }
        PackagesError::Build(BuildError::Source(s)) => (source_status(s), s.code()),
        PackagesError::Build(BuildError::Package(package::Error::Write(e)))
            if package::is_storage_full(e) =>
        {
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        }
        PackagesError::Build(b @ BuildError::Package(_)) => (StatusCode::INTERNAL_SERVER_ERROR, b.code()),
        PackagesError::Pool(PoolError::Busy { .. }) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        PackagesError::Pool(PoolError::Panicked) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        PackagesError::Store(s) => store_status(s),
        PackagesError::KeyConflict { .. } => (StatusCode::CONFLICT, "key_conflict"),
        PackagesError::InvalidPrefix(_) => (StatusCode::BAD_REQUEST, "invalid_prefix"),
        PackagesError::PrefixNotAllowed => (StatusCode::FORBIDDEN, "prefix_not_allowed"),
        PackagesError::GitSourceDisabled => (StatusCode::UNPROCESSABLE_ENTITY, "git_source_disabled"),
        PackagesError::InsufficientStorage { .. } => {
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        }
        PackagesError::InvalidCursor => (StatusCode::BAD_REQUEST, "invalid_cursor"),
        PackagesError::NotFound(_) | PackagesError::NoPackages(_) => {
            (StatusCode::NOT_FOUND, "artifact_not_found")
        }
        PackagesError::Shared(inner) => packages_status(inner),
        PackagesError::Corrupt { .. } => (StatusCode::BAD_GATEWAY, "artifact_corrupt"),
        PackagesError::IndexCorrupt(_) => (StatusCode::BAD_GATEWAY, "index_corrupt"),
        PackagesError::IndexContention(_) => (StatusCode::SERVICE_UNAVAILABLE, "index_contended"),
    }
}

impl ApiError {
    /// The status and the stable code: the one place that says which error is which.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Packages(p) => packages_status(p),
            Self::InvalidKey { .. } => (StatusCode::BAD_REQUEST, "invalid_key"),
            Self::InvalidFunctionName(_) => (StatusCode::BAD_REQUEST, "invalid_function_name"),
            Self::InvalidPrefix(_) => (StatusCode::BAD_REQUEST, "invalid_prefix"),
            Self::InvalidParameter(_) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            Self::InvalidMultipart(_) => (StatusCode::BAD_REQUEST, "invalid_multipart"),
            Self::MissingBundle(_) => (StatusCode::BAD_REQUEST, "missing_bundle"),
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            Self::UploadInterrupted(_) => (StatusCode::BAD_REQUEST, "upload_interrupted"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::InsufficientScope { .. } => (StatusCode::FORBIDDEN, "insufficient_scope"),
            Self::FunctionNotAllowed { .. } => (StatusCode::FORBIDDEN, "function_not_allowed"),
            Self::CrossSiteRequest => (StatusCode::FORBIDDEN, "cross_site_request"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::UploadTooSlow(_) => (StatusCode::REQUEST_TIMEOUT, "upload_too_slow"),
            Self::JsonWithoutContentType { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_format"),
            Self::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::Rejected { status, .. } => (*status, rejected_code(*status)),
            Self::Panicked(_) | Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// Seconds a client should wait before retrying, for 503s.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Overloaded | Self::Packages(PackagesError::Pool(PoolError::Busy { .. })) => Some(1),
            Self::Packages(
                PackagesError::Store(store::Error::Unavailable(_)) | PackagesError::IndexContention(_),
            ) => Some(5),
            _ => None,
        }
    }

    /// What a client may read. Client errors explain themselves; server errors never carry
    /// internal details (bucket names, paths, SDK or credential-chain messages), which stay in
    /// the log under the request id.
    pub(crate) fn public_message(&self, status: StatusCode) -> String {
        match self {
            _ if !status.is_server_error() => self.report(),
            Self::Overloaded | Self::Packages(PackagesError::Pool(PoolError::Busy { .. })) => self.report(),
            Self::Rejected { message, .. } if status == StatusCode::SERVICE_UNAVAILABLE => message.clone(),
            Self::Packages(PackagesError::Store(store::Error::Unavailable(_))) => {
                "the package store is unavailable; retry after the Retry-After delay".to_owned()
            }
            Self::Packages(PackagesError::Corrupt { key, .. }) => format!(
                "the stored object under {key} is not a readable zip; the x-request-id header identifies this request in the logs"
            ),
            _ if status == StatusCode::INSUFFICIENT_STORAGE => {
                "the packager's storage is full; retry later (the x-request-id header identifies this request in the logs)"
                    .to_owned()
            }
            _ => {
                "the service failed to handle this request; the x-request-id header identifies it in the logs"
                    .to_owned()
            }
        }
    }

    /// The message with its whole `source()` chain, for logs.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let text = c.to_string();
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cause = c.source();
        }
        out
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        Self::Packages(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = self.public_message(status);
        let retry_after = self.retry_after();
        let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message } };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(Reported(Arc::new(self)));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status and the `{"error":{"code","message"}}` body a client reads.
    async fn answer(error: ApiError) -> (StatusCode, serde_json::Value, Response) {
        let response = error.into_response();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 64 * 1024).await.expect("a small body");
        let json = serde_json::from_slice(&bytes).expect("a JSON body");
        (parts.status, json, Response::from_parts(parts, axum::body::Body::empty()))
    }

    #[tokio::test]
    async fn server_errors_do_not_leak_details_but_client_errors_explain() {
        let detail =
            "bucket secret-bucket at /var/lib/packager/.staging: AccessDenied by arn:aws:iam::123:role/x";
        let boxed = || -> Box<dyn std::error::Error + Send + Sync> { detail.into() };
        let server_errors = [
            (ApiError::Internal(detail.into()), 500, "internal_error"),
            (ApiError::Panicked(detail.into()), 500, "internal_error"),
            (ApiError::Packages(PackagesError::Store(store::Error::Backend(boxed()))), 502, "store_error"),
            (
                ApiError::Packages(PackagesError::Store(store::Error::Denied(boxed()))),
                502,
                "store_access_denied",
            ),
            (
                ApiError::Packages(PackagesError::Store(store::Error::Unavailable(boxed()))),
                503,
                "store_unavailable",
            ),
            (
                ApiError::Packages(PackagesError::Build(BuildError::Source(SourceError::StorageFull(
                    std::io::Error::other(detail),
                )))),
                507,
                "insufficient_storage",
            ),
            (
                ApiError::Rejected { status: StatusCode::INTERNAL_SERVER_ERROR, message: detail.into() },
                500,
                "internal_error",
            ),
        ];
        for (error, status, code) in server_errors {
            let (got, json, response) = answer(error).await;
            assert_eq!((got.as_u16(), json["error"]["code"].as_str()), (status, Some(code)), "{json}");
            let message = json["error"]["message"].as_str().expect("a message");
            for secret in ["secret-bucket", "/var/lib", "AccessDenied", "arn:aws"] {
                assert!(
                    !message.contains(secret) && !json.to_string().contains(secret),
                    "{code} leaks: {json}"
                );
            }
            assert!(
                message.contains("the package store is unavailable") || message.contains("x-request-id"),
                "{json}"
            );
            let reported = response.extensions().get::<Reported>().expect("marked for the log");
            assert!(reported.0.report().contains(detail), "the log keeps the detail of {code}");
        }

        let key: crate::store::key::ObjectKey =
            format!("lambda-f-{}.zip", "0".repeat(64)).parse().expect("a package key");
        let conflict =
            ApiError::Packages(PackagesError::KeyConflict { key: key.clone(), stored_size: 1, size: 2 });
        let (status, json, _) = answer(conflict).await;
        assert_eq!((status, json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("key_conflict")));
        assert_eq!(
            json["error"]["message"],
            format!("{key} already exists with different content (1 bytes stored, 2 bytes built)"),
            "a client error explains itself"
        );
    }

    /// Every code this module answers: the `(StatusCode::…, "code")` pairs of its matches and
    /// the codes of bare statuses.
    fn codes_in_this_file() -> Vec<String> {
        let source = include_str!("error.rs").split("#[cfg(test)]").next().expect("the code");
        let mut codes = Vec::new();
        for (i, _) in source.match_indices("StatusCode::") {
            let rest = &source[i..];
            let Some(end) = rest.find(')') else { continue };
            if let Some((_, code)) = rest[..end].split_once(", \"") {
                codes.push(code.trim_end_matches('"').to_owned());
            }
        }
        let bare = source
            .split("fn rejected_code")
            .nth(1)
            .and_then(|f| f.split("\n}\n").next())
            .expect("rejected_code");
        codes.extend(bare.split("=> \"").skip(1).filter_map(|c| c.split('"').next()).map(str::to_owned));
        codes.sort();
        codes.dedup();
        codes
    }

    #[test]
    fn the_readme_error_table_lists_every_code() {
        let readme = include_str!("../../README.md");
        let table =
            readme.split("## Error codes").nth(1).and_then(|t| t.split("\n## ").next()).expect("the table");
        let codes = codes_in_this_file();
        for code in [
            "artifact_corrupt",
            "insufficient_scope",
            "function_not_allowed",
            "index_corrupt",
            "unauthorized",
        ] {
            assert!(codes.iter().any(|c| c == code), "{code} not found in error.rs: {codes:?}");
        }
        for code in &codes {
            if code == "error" || code == "unavailable" || code == "unsupported_media_type" {
                // Statuses no layer of this service answers bare (a catch-all, kept for safety).
                continue;
            }
            assert!(table.contains(&format!("`{code}`")), "the README's error table lacks `{code}`");
        }
    }

    #[test]
    fn unavailable_answers_carry_retry_after() {
        let busy = ApiError::from(PoolError::Busy { workers: 1, waited: Default::default() }).into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
    }
}
