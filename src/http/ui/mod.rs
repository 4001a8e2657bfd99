//! The web pages under `/ui/`: server-rendered HTML for people (functions, a function's
//! packages, one package, the diff of two), on the same packages-service calls as the JSON
//! API, so there is no second path to the store.
//!
//! Templates (`templates/`) are compiled and checked by askama, which escapes every value;
//! nothing is marked safe. The stylesheet and the copy-button script (`assets/`) are embedded
//! in the binary and served under content-hashed names. Every response carries a strict
//! Content-Security-Policy (only this origin's stylesheet and script, no inline code, no
//! framing). With tokens configured, the pages need a session (`session`).

mod assets;
mod diff;
mod function;
mod functions;
mod package;
pub(crate) mod session;

use askama::Template;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::error::{ApiError, Reported};
use super::middleware::shed_load;
use super::state::AppState;
use crate::store::key::{FunctionName, ObjectKey};

/// The policy of every `/ui/` response: this origin's stylesheet, script and images only, no
/// inline script or style, forms posting only here, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The page routes (behind a session when tokens are configured) and the open ones (sign-in,
/// sign-out, assets), all with the security headers.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/ui/", get(functions::page))
        .route("/ui/functions/{function}", get(function::page))
        .route("/ui/packages/{key}", get(package::page))
        .route("/ui/diff", get(diff::page))
        .route("/ui/{*rest}", get(not_found))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), shed_load))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), session::require_session));
    let open = Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/login",
            get(session::login_page)
                .post(session::login)
                .layer(axum::extract::DefaultBodyLimit::max(session::MAX_FORM_BYTES)),
        )
        .route("/ui/logout", post(session::logout))
        .route("/ui/assets/{file}", get(assets::serve));
    pages.merge(open).layer(axum::middleware::from_fn(security_headers))
}

/// Adds the CSP and the other hardening headers to every `/ui/` response.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// What every page's frame shows: its title, the stylesheet and script, who is signed in, and
/// the JSON the page is made from.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    title: String,
    style: &'static str,
    script: &'static str,
    icon: &'static str,
    signed_in: Option<String>,
    json_url: Option<String>,
}

impl Layout {
    fn new(title: impl Into<String>, signed_in: Option<String>, json_url: Option<String>) -> Self {
        Self {
            title: title.into(),
            style: assets::STYLE.url(),
            script: assets::SCRIPT.url(),
            icon: assets::ICON.url(),
            signed_in,
            json_url,
        }
    }
}

/// A rendered page, or the error page if rendering fails.
fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => UiError(ApiError::Internal(format!("rendering a page: {e}"))).into_response(),
    }
}

/// A failure shown as an HTML page, with the status and stable code the JSON API gives for
/// it (and logged once, as every failure, by the error envelope middleware).
#[derive(Debug)]
pub(crate) struct UiError(pub(crate) ApiError);

impl<E: Into<ApiError>> From<E> for UiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    heading: &'static str,
    code: &'static str,
    message: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, code) = self.0.status_and_code();
        let heading = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            s if s.is_client_error() => "Bad request",
            StatusCode::BAD_GATEWAY => "The store holds something unreadable",
            StatusCode::SERVICE_UNAVAILABLE => "Busy: try again shortly",
            _ => "Something went wrong",
        };
        let page = ErrorPage {
            layout: Layout::new(heading, None, None),
            heading,
            code,
            message: self.0.public_message(status),
        };
        let html = page.render().unwrap_or_else(|_| format!("{status}: {code}"));
        let mut response = (status, Html(html)).into_response();
        response.extensions_mut().insert(Reported(std::sync::Arc::new(self.0)));
        response
    }
}

/// `/ui/` paths that are no page.
async fn not_found() -> UiError {
    UiError(ApiError::RouteNotFound)
}

/// Characters escaped in a path segment or query value: everything but RFC 3986's unreserved
/// set, so a key's `/` (of its prefix) stays inside one segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `value` escaped for one path segment or query value.
fn encode(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

/// The page of a function (also the `ui_url` of the JSON API's functions).
pub(crate) fn function_url(function: &FunctionName) -> String {
    format!("/ui/functions/{}", encode(function.as_str()))
}

/// The page of a package (also the `ui_url` of the JSON API's artifacts).
pub(crate) fn package_url(key: &ObjectKey) -> String {
    format!("/ui/packages/{}", encode(&key.to_string()))
}

/// The diff page of two packages (also the `ui_url` of the JSON API's diff).
pub(crate) fn diff_url(from: &ObjectKey, to: &ObjectKey) -> String {
    format!("/ui/diff?from={}&to={}", encode(&from.to_string()), encode(&to.to_string()))
}

/// The JSON of a package, in the API.
fn artifact_json_url(key: &ObjectKey) -> String {
    format!("/v1/artifacts/{}", encode(&key.to_string()))
}

/// The first 12 hex digits of a digest or commit: enough to tell packages apart on a page.
fn short(hex: &str) -> String {
    hex.chars().take(12).collect()
}

/// A size for people: bytes below 1 KiB, else KiB, MiB or GiB with one decimal.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[expect(clippy::cast_precision_loss, reason = "one decimal shown")]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A time as the JSON API writes it, to the second.
fn timestamp(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_size(3 << 40), "3072.0 GiB");
    }

    #[test]
    fn a_prefixed_key_stays_one_path_segment() {
        let key: ObjectKey = format!("ci/lambda-orders-{}.zip", "a".repeat(64)).parse().expect("a key");
        assert_eq!(package_url(&key), format!("/ui/packages/ci%2Flambda-orders-{}.zip", "a".repeat(64)));
    }
}
