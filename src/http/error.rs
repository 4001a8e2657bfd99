//! `ApiError`: the only error type that becomes an HTTP response.
//!
//! Every error of every layer is mapped here, once, by an exhaustive `match`, to a status and a
//! stable snake_case code; the body is always `{"error":{"code":"…","message":"…"}}`. 5xx bodies
//! carry a generic message (the detail goes to the log, under the request id), so bucket names,
//! paths and SDK messages never leak. The error is also put in the response's extensions, where
//! the logging middleware finds it and logs it once.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::state::MinBodyRate;
use crate::blocking::PoolError;
use crate::package;
use crate::publish::{Error as BuildError, PublishError};
use crate::source::Error as SourceError;
use crate::store;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Publishing failed (input, packaging, pool, store, key conflict).
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A store operation of a read endpoint failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A malformed request: bad parameter, key, multipart, JSON.
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The request names something that does not exist.
    #[error("{message}")]
    NotFound {
        /// Stable code.
        code: &'static str,
        /// What is missing.
        message: String,
    },
    /// The request asks for something the operator does not allow.
    #[error("{message}")]
    Forbidden {
        /// Stable code.
        code: &'static str,
        /// What is not allowed.
        message: String,
    },
    /// No valid bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The body is larger than the limit.
    #[error("the request body is larger than {max} bytes")]
    PayloadTooLarge {
        /// The limit.
        max: u64,
    },
    /// A git source was requested but git sources are not enabled.
    #[error("git sources are not enabled on this server")]
    GitSourceDisabled,
    /// More requests in flight than the concurrency limit.
    #[error("too many requests in flight; retry shortly")]
    Overloaded,
    /// The request took longer than the request timeout.
    #[error("the request took longer than the request timeout")]
    RequestTimeout,
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
    /// The route exists, but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
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

impl ApiError {
    /// The status and the stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Publish(p) => match p {
                PublishError::Build(BuildError::Source(SourceError::Cancelled))
                | PublishError::Build(BuildError::Package(package::Error::Cancelled)) => {
                    (StatusCode::REQUEST_TIMEOUT, "request_timeout")
                }
                PublishError::Build(BuildError::Source(s)) => (source_status(s), s.code()),
                PublishError::Build(BuildError::Package(package::Error::Write(e)))
                    if package::is_storage_full(e) =>
                {
                    (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
                }
                PublishError::Build(b @ BuildError::Package(_)) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, b.code())
                }
                PublishError::Pool(PoolError::Busy { .. }) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
                PublishError::Pool(PoolError::Panicked) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
                }
                PublishError::Store(s) => store_status(s),
                PublishError::KeyConflict { .. } => (StatusCode::CONFLICT, "key_conflict"),
                PublishError::Prefix(_) => (StatusCode::BAD_REQUEST, "invalid_prefix"),
                PublishError::InsufficientStorage { .. } => {
                    (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
                }
            },
            Self::Store(s) => store_status(s),
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            Self::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::GitSourceDisabled => (StatusCode::UNPROCESSABLE_ENTITY, "git_source_disabled"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::UploadTooSlow(_) => (StatusCode::REQUEST_TIMEOUT, "upload_too_slow"),
            Self::JsonWithoutContentType { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_format"),
            Self::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// Seconds a client should wait before retrying, for 503s.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Overloaded | Self::Publish(PublishError::Pool(PoolError::Busy { .. })) => Some(1),
            Self::Store(store::Error::Unavailable(_))
            | Self::Publish(PublishError::Store(store::Error::Unavailable(_))) => Some(5),
            _ => None,
        }
    }

    /// What a client may read. Client errors explain themselves; server errors never carry
    /// internal details (bucket names, paths, SDK or credential-chain messages), which stay in
    /// the log under the request id.
    fn public_message(&self, status: StatusCode) -> String {
        match self {
            _ if !status.is_server_error() => self.report(),
            Self::Overloaded | Self::Publish(PublishError::Pool(PoolError::Busy { .. })) => self.report(),
            Self::Store(store::Error::Unavailable(_))
            | Self::Publish(PublishError::Store(store::Error::Unavailable(_))) => {
                "the package store is unavailable; retry after the Retry-After delay".to_owned()
            }
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
            (ApiError::Store(store::Error::Backend(boxed())), 502, "store_error"),
            (ApiError::Store(store::Error::Denied(boxed())), 502, "store_access_denied"),
            (
                ApiError::Publish(PublishError::Store(store::Error::Unavailable(boxed()))),
                503,
                "store_unavailable",
            ),
            (
                ApiError::Publish(PublishError::Build(crate::publish::Error::Source(
                    crate::source::Error::StorageFull(std::io::Error::other(detail)),
                ))),
                507,
                "insufficient_storage",
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

        let conflict =
            ApiError::Publish(PublishError::KeyConflict { key: "k".into(), stored_size: 1, size: 2 });
        let (status, json, _) = answer(conflict).await;
        assert_eq!((status, json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("key_conflict")));
        assert_eq!(
            json["error"]["message"],
            "k already exists with different content (1 bytes stored, 2 bytes built)",
            "a client error explains itself"
        );
    }

    #[test]
    fn unavailable_answers_carry_retry_after() {
        let busy =
            ApiError::Publish(PublishError::Pool(PoolError::Busy { workers: 1, waited: Default::default() }))
                .into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
    }
}
