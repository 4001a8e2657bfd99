//! The service's own middleware: bearer auth and scopes (and the [`Access`] extractor that
//! gives handlers the caller), load shedding, metrics, and the error envelope that also logs
//! each failure once.

use std::time::Instant;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, Reported};
use super::state::AppState;
use crate::auth::{Caller, Scope};
use crate::store::key::FunctionName;

/// Requires `Authorization: Bearer <token>` with a configured token (or, for GET and HEAD,
/// the web pages' session cookie), when tokens are configured, and the token's scope for the method (`read` for GET and HEAD, `write` for the
/// rest): 401 `unauthorized` without a valid token, 403 `insufficient_scope` without the
/// scope. The caller goes into the request's extensions (where [`Access`] finds it) and its
/// name onto the request's span, so the one line logged per request names the token (never
/// the token itself).
pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let tokens = &state.settings.tokens;
    if !tokens.enabled() {
        return next.run(request).await;
    }
    let authorization = request.headers().get(header::AUTHORIZATION);
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    let caller = match authorization {
        Some(value) => {
            value.to_str().ok().and_then(bearer_token).and_then(|t| tokens.authenticate(t)).cloned()
        }
        // The web pages' session, for reads only (their download and JSON links): a POST
        // always needs the bearer token, so no page, forged or not, can publish.
        None if reads => super::ui::session::session_caller(tokens, request.headers()),
        None => None,
    };
    let Some(caller) = caller else {
        let mut response = ApiError::Unauthorized.into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    };
    tracing::Span::current().record("token", caller.name());
    let scope = match *request.method() {
        Method::GET | Method::HEAD => Scope::Read,
        _ => Scope::Write,
    };
    if !caller.has(scope) {
        return ApiError::InsufficientScope { token: caller.name().to_owned(), scope }.into_response();
    }
    request.extensions_mut().insert(Arc::new(caller));
    next.run(request).await
}

/// Who made a request, for the handlers: the token's caller (`None` without authentication,
/// when every request may do everything).
#[derive(Debug, Clone)]
pub struct Access(Option<Arc<Caller>>);

impl Access {
    /// Refuses a function the token is not limited to (403 `function_not_allowed`).
    pub fn check(&self, function: &FunctionName) -> Result<(), ApiError> {
        match &self.0 {
            Some(caller) if !caller.may_access(function) => Err(ApiError::FunctionNotAllowed {
                token: caller.name().to_owned(),
                function: function.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether the token may see `function` (in the functions list).
    pub fn sees(&self, function: &FunctionName) -> bool {
        self.0.as_ref().is_none_or(|caller| caller.may_access(function))
    }

    /// The token's name, for a package's provenance.
    pub fn name(&self) -> Option<String> {
        self.0.as_ref().map(|caller| caller.name().to_owned())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Access {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<Arc<Caller>>().cloned()))
    }
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

/// Gives every error response the JSON envelope, and logs each failure once, inside the
/// request's span: 5xx at ERROR with the full cause chain, 4xx at INFO. A bare error status
/// from outside the handlers (an axum rejection, a tower layer) becomes
/// [`ApiError::Rejected`], so its code comes from the same match as every other.
pub(crate) async fn error_envelope(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if let Some(Reported(error)) = response.extensions().get::<Reported>() {
        log_failure(status, error);
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
    let message =
        if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    let mut rebuilt = ApiError::Rejected { status, message }.into_response();
    if let Some(Reported(error)) = rebuilt.extensions().get::<Reported>() {
        log_failure(status, error);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    rebuilt.headers_mut().extend(parts.headers);
    rebuilt
}

fn log_failure(status: StatusCode, error: &ApiError) {
    let (_, code) = error.status_and_code();
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), error.code = code, error = %error.report(), "request failed");
    } else {
        tracing::info!(status = status.as_u16(), error.code = code, error = %error.report(), "request refused");
    }
}

/// The answer of a handler that panicked: the JSON 500 envelope (the panic's message goes to
/// the log, through the envelope middleware, never to the client).
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic with no message");
    ApiError::Panicked(message.to_owned()).into_response()
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
