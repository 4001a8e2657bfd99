//! The service's own middleware: bearer auth, load shedding, metrics, and the error envelope
//! that also logs each failure once.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ErrorBody, ErrorDetail, Reported};
use super::state::AppState;

/// Requires `Authorization: Bearer <token>` with a configured token, when tokens are
/// configured. Tokens are compared as SHA-256 digests in constant time, so neither their
/// content nor their length leaks through timing.
pub(crate) async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let digests = &state.settings.token_digests;
    if digests.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(|t| <[u8; 32]>::from(Sha256::digest(t.as_bytes())));
    let valid = presented
        .is_some_and(|p| digests.iter().fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(&p)).into());
    if !valid {
        let mut response = ApiError::Unauthorized.into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110 §11.1: `bearer` and `BEARER` are the same scheme), followed by one or more spaces.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Refuses at once, with 503 and `Retry-After`, a request beyond the concurrency limit, instead
/// of queueing it: a client retrying later is better than a replica running out of memory.
pub(crate) async fn shed_load(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.settings.in_flight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            metrics::counter!("http_requests_shed_total").increment(1);
            ApiError::Overloaded.into_response()
        }
    }
}

/// Counts requests by route template and status, and times them.
///
/// Every label has a bounded set of values, so no request can add a series: the route is the
/// matched template or `unmatched`, the method one of the standard methods or `other`, the
/// status a number. (Labelling by raw path or by any method token would let each odd request
/// grow the registry and `/metrics` for the life of the process.)
pub(crate) async fn track_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method.to_owned()), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// The metric label of a request method: the RFC 9110 methods and PATCH by name, any other
/// token as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The code of a bare error status produced outside the handlers (axum rejections, tower
/// layers, panics).
fn code_for(status: StatusCode) -> &'static str {
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

/// Gives every error response the JSON envelope, and logs each failure once, inside the
/// request's span: 5xx at ERROR with the full cause chain, 4xx at INFO.
pub(crate) async fn error_envelope(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if let Some(Reported(error)) = response.extensions().get::<Reported>() {
        let (_, code) = error.status_and_code();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error.code = code, error = %error.report(), "request failed");
        } else {
            tracing::info!(status = status.as_u16(), error.code = code, error = %error.report(), "request refused");
        }
        return response;
    }
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = code_for(status);
    let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        tracing::error!(status = status.as_u16(), error = %text, "request failed");
        "the service failed to handle this request; the x-request-id header identifies it in the logs"
            .to_owned()
    } else {
        tracing::info!(status = status.as_u16(), error.code = code, error = %text, "request refused");
        if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let body = axum::Json(ErrorBody { error: ErrorDetail { code: code.to_owned(), message } });
    let mut rebuilt = (status, body).into_response();
    rebuilt.headers_mut().extend(parts.headers);
    rebuilt
}

/// The answer for paths that match no route.
pub(crate) async fn not_found() -> ApiError {
    ApiError::RouteNotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR   t0k ", "Bearer t0k\t"] {
            assert_eq!(bearer_token(value), Some("t0k"), "{value:?}");
        }
        for value in ["Basic t0k", "Bearer", "Bearer ", "Bearert0k", "t0k", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn only_standard_methods_are_metric_labels() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for odd in ["QZXV", "get", "PROPFIND", "BREW"] {
            assert_eq!(method_label(&Method::from_bytes(odd.as_bytes()).expect("a token")), "other", "{odd}");
        }
    }
}
