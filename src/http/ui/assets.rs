//! The pages' stylesheet and script, embedded in the binary and served under names that carry
//! a digest of their content (`style.<hash>.css`), so a browser may cache them for a year and
//! still never use a stale one after an upgrade.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::UiError;
use crate::http::error::ApiError;

/// One embedded file.
pub(super) struct Asset {
    url: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

impl Asset {
    /// `/ui/assets/<stem>.<first 16 hex digits of the SHA-256>.<extension>`.
    fn new(stem: &str, extension: &str, content_type: &'static str, bytes: &'static [u8]) -> Self {
        let digest = hex::encode(Sha256::digest(bytes));
        Self { url: format!("/ui/assets/{stem}.{}.{extension}", &digest[..16]), content_type, bytes }
    }

    /// Where the pages link it.
    pub(super) fn url(&'static self) -> &'static str {
        &self.url
    }
}

/// The stylesheet.
pub(super) static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new("style", "css", "text/css; charset=utf-8", include_bytes!("../../../assets/style.css"))
});

/// The copy button's script.
pub(super) static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new("copy", "js", "text/javascript; charset=utf-8", include_bytes!("../../../assets/copy.js"))
});

/// The pages' icon (so that browsers do not ask for a `/favicon.ico` there is none of).
pub(super) static ICON: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("icon", "svg", "image/svg+xml", include_bytes!("../../../assets/icon.svg")));

/// `GET /ui/assets/{file}`: an asset under its current name; any other name (an old hash
/// included) is 404, so a cached page never mixes versions silently.
pub(super) async fn serve(Path(file): Path<String>) -> Result<Response, UiError> {
    let asset = [&*STYLE, &*SCRIPT, &*ICON]
        .into_iter()
        .find(|a| a.url.rsplit('/').next() == Some(file.as_str()))
        .ok_or(UiError(ApiError::RouteNotFound))?;
    let mut response = asset.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    Ok(response)
}
