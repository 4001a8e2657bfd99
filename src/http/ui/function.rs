//! `GET /ui/functions/{function}`: a function's packages, newest first, paged, with two radio
//! columns to pick any two for the diff (a plain GET form, so it works without JavaScript).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Layout, UiError, encode, human_size, package_url, render, short, timestamp};
use crate::http::extract::function_name;
use crate::http::middleware::Access;
use crate::http::state::AppState;
use crate::packages::{Error as PackagesError, PackageFilter};

/// Packages per page.
const PAGE: usize = 50;

/// The query of a function's page.
#[derive(Debug, Deserialize)]
pub(super) struct Params {
    cursor: Option<String>,
}

/// Where a package came from, in one cell: a commit or an upload's digest.
struct Source {
    label: &'static str,
    short: String,
    full: String,
}

struct Row {
    key: String,
    url: String,
    short_sha: String,
    size: u64,
    size_text: String,
    files: Option<u64>,
    created: String,
    source: Option<Source>,
    created_by: Option<String>,
    from_checked: bool,
    to_checked: bool,
}

#[derive(Template)]
#[template(path = "function.html")]
struct FunctionPage {
    layout: Layout,
    function: String,
    packages: Vec<Row>,
    next_url: Option<String>,
}

/// A function's page: the JSON API's `GET /v1/functions/{function}/artifacts`, as a table.
/// A function without packages is 404 `artifact_not_found`, as its `latest` is.
pub(super) async fn page(
    State(state): State<AppState>,
    access: Access,
    Path(function): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, UiError> {
    let function = function_name(&function)?;
    access.check(&function)?;
    let page =
        state.packages.list_packages(&function, &PackageFilter::All, PAGE, params.cursor.as_deref()).await?;
    if page.rows.is_empty() && params.cursor.is_none() {
        return Err(PackagesError::NoPackages(function).into());
    }
    // Preselected: the newest package against the one before it.
    let packages = page
        .rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let sha = row.key.sha256().to_string();
            let source = match (row.commit, row.source_sha256) {
                (Some(commit), _) => Some(Source { label: "commit", short: short(&commit), full: commit }),
                (None, Some(digest)) => {
                    let full = digest.to_string();
                    Some(Source { label: "upload", short: short(&full), full })
                }
                (None, None) => None,
            };
            Row {
                key: row.key.to_string(),
                url: package_url(&row.key),
                short_sha: short(&sha),
                size: row.size,
                size_text: human_size(row.size),
                files: row.files,
                created: timestamp(row.created),
                source,
                created_by: row.created_by,
                from_checked: i == 1,
                to_checked: i == 0,
            }
        })
        .collect();
    let base = format!("/functions/{}", encode(function.as_str()));
    let json = match &params.cursor {
        Some(cursor) => format!("/v1{base}/artifacts?cursor={}", encode(cursor)),
        None => format!("/v1{base}/artifacts"),
    };
    Ok(render(&FunctionPage {
        layout: Layout::new(function.to_string(), access.name(), Some(json)),
        function: function.to_string(),
        packages,
        next_url: page.next_cursor.map(|c| format!("/ui{base}?cursor={}", encode(&c))),
    }))
}
