//! Signing in to the pages when tokens are configured.
//!
//! The sign-in form posts the token once (`POST /ui/login`, form-encoded, never in a URL);
//! the answer sets a session cookie, `lp_session`, holding a signed, expiring value that
//! names the token but does not contain it (`Tokens::session_for`). The cookie is `HttpOnly`,
//! `SameSite=Strict`, `Path=/` and `Secure` when the request came over HTTPS (as a proxy in
//! front says with `X-Forwarded-Proto: https`; the service itself speaks plain HTTP). The JSON
//! API accepts the cookie for its GET routes (so the pages' download and JSON links work),
//! never for POST. Sign-in and sign-out refuse cross-site posts (`Sec-Fetch-Site`, else
//! `Origin`), against login CSRF; `SameSite=Strict` keeps other sites' requests cookie-less.

use std::sync::Arc;
use std::time::SystemTime;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Layout, UiError};
use crate::auth::{Caller, SESSION_TTL, Scope, Tokens};
use crate::http::error::{ApiError, Reported};
use crate::http::state::AppState;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "lp_session";

/// Largest sign-in form body.
pub(super) const MAX_FORM_BYTES: usize = 16 * 1024;

/// The caller of a request's session cookie, if it holds a valid session.
pub(crate) fn session_caller(tokens: &Tokens, headers: &HeaderMap) -> Option<Caller> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find_map(|value| tokens.session_caller(value, SystemTime::now()))
        .cloned()
}

/// Requires a session on the pages when tokens are configured: without one, the page is the
/// sign-in form (401), which comes back to the page afterwards. The caller goes into the
/// request's extensions, where [`crate::http::Access`] finds it, and its name on the span.
pub(crate) async fn require_session(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let tokens = &state.settings.tokens;
    if !tokens.enabled() {
        return next.run(request).await;
    }
    let Some(caller) = session_caller(tokens, request.headers()) else {
        let back = request.uri().path_and_query().map_or("/ui/", |p| p.as_str()).to_owned();
        return login_form(StatusCode::UNAUTHORIZED, ApiError::Unauthorized, None, back);
    };
    tracing::Span::current().record("token", caller.name());
    if !caller.has(Scope::Read) {
        return UiError(ApiError::InsufficientScope { token: caller.name().to_owned(), scope: Scope::Read })
            .into_response();
    }
    request.extensions_mut().insert(Arc::new(caller));
    next.run(request).await
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    problem: Option<&'static str>,
    next: String,
}

/// Where to go after signing in: a page of the UI (a path of visible ASCII, as a request's
/// own path is, so that it is a valid `Location`), else the functions page.
fn next_page(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') => {
            n.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

/// The sign-in form, answered with `status` (and `error` for the log, when not 200).
fn login_form(status: StatusCode, error: ApiError, problem: Option<&'static str>, next: String) -> Response {
    let page =
        LoginPage { layout: Layout::new("Sign in", None, None), problem, next: next_page(Some(&next)) };
    match page.render() {
        Ok(html) => {
            let mut response = (status, Html(html)).into_response();
            if status != StatusCode::OK {
                response.extensions_mut().insert(Reported(Arc::new(error)));
            }
            response
        }
        Err(e) => UiError(ApiError::Internal(format!("rendering the sign-in page: {e}"))).into_response(),
    }
}

/// The query of the sign-in page.
#[derive(Debug, Deserialize)]
pub(super) struct LoginParams {
    next: Option<String>,
}

/// `GET /ui/login`: the sign-in form (the functions page when no token is configured).
pub(super) async fn login_page(State(state): State<AppState>, Query(params): Query<LoginParams>) -> Response {
    if !state.settings.tokens.enabled() {
        return Redirect::to("/ui/").into_response();
    }
    login_form(StatusCode::OK, ApiError::Unauthorized, None, next_page(params.next.as_deref()))
}

/// Whether a POST comes from this service's own pages: a browser says so in `Sec-Fetch-Site`,
/// or (older browsers) in `Origin`, which must then name the host the request went to. A
/// request with neither comes from no browser, so it cannot be a cross-site forgery.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Whether the browser reached the service over HTTPS (through a TLS-terminating proxy).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.split(',').next().is_some_and(|first| first.trim().eq_ignore_ascii_case("https")))
}

/// The `Set-Cookie` value for `value`, kept `max_age` seconds.
fn cookie(value: &str, max_age: u64, secure: bool) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .map_err(|_| ApiError::Internal("a session cookie that is no header value".into()))
}

/// `POST /ui/login` (form: `token`, `next`): checks the token and, for one with the read
/// scope, sets the session cookie and goes back to `next`.
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, UiError> {
    if !same_origin(&headers) {
        return Err(UiError(ApiError::CrossSiteRequest));
    }
    let tokens = &state.settings.tokens;
    if !tokens.enabled() {
        return Ok(Redirect::to("/ui/").into_response());
    }
    let (mut token, mut next) = (None, None);
    for (name, value) in form_urlencoded::parse(&body) {
        match &*name {
            "token" => token = Some(value),
            "next" => next = Some(value),
            _ => {}
        }
    }
    let next = next_page(next.as_deref());
    let Some(caller) = token.as_deref().and_then(|t| tokens.authenticate(t.trim())) else {
        let problem = Some("That token is not accepted here.");
        return Ok(login_form(StatusCode::UNAUTHORIZED, ApiError::Unauthorized, problem, next));
    };
    tracing::Span::current().record("token", caller.name());
    if !caller.has(Scope::Read) {
        let error = ApiError::InsufficientScope { token: caller.name().to_owned(), scope: Scope::Read };
        let problem = Some("That token lacks the read scope the pages need.");
        return Ok(login_form(StatusCode::FORBIDDEN, error, problem, next));
    }
    let value = tokens
        .session_for(caller, SystemTime::now())
        .ok_or_else(|| ApiError::Internal("a signed-in token without a session key".into()))?;
    let mut response = Redirect::to(&next).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&value, SESSION_TTL.as_secs(), over_tls(&headers))?);
    Ok(response)
}

/// `POST /ui/logout`: clears the session cookie. (The value is stateless: a copy taken before
/// sign-out stays valid until it expires, as a bearer token does until it is removed.)
pub(super) async fn logout(headers: HeaderMap) -> Result<Response, UiError> {
    if !same_origin(&headers) {
        return Err(UiError(ApiError::CrossSiteRequest));
    }
    let mut response = Redirect::to("/ui/").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie("", 0, over_tls(&headers))?);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn only_same_origin_posts_are_taken() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://a"),
            ("host", "a")
        ])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")])));
        assert!(!same_origin(&headers(&[("origin", "http://evil.example"), ("host", "127.0.0.1:8080")])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[])), "no browser, no forgery");
    }

    #[test]
    fn sign_in_only_goes_back_to_a_page_of_the_ui() {
        assert_eq!(next_page(Some("/ui/functions/f?cursor=x")), "/ui/functions/f?cursor=x");
        for elsewhere in [
            "https://evil.example/ui/",
            "//evil.example",
            "/v1/functions",
            "/ui",
            "/ui/\\x",
            "/ui/é",
            "/ui/a b",
            "/ui/\r\n",
        ] {
            assert_eq!(next_page(Some(elsewhere)), "/ui/", "{elsewhere}");
        }
        assert_eq!(next_page(None), "/ui/");
    }

    #[test]
    fn the_cookie_is_secure_behind_a_tls_proxy_only() {
        assert!(over_tls(&headers(&[("x-forwarded-proto", "https")])));
        assert!(over_tls(&headers(&[("x-forwarded-proto", "HTTPS, http")])));
        assert!(!over_tls(&headers(&[("x-forwarded-proto", "http")])));
        assert!(!over_tls(&headers(&[])));
        let value = cookie("v", 60, true).expect("a header");
        assert_eq!(value, "lp_session=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure");
    }
}
