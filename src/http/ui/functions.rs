//! `GET /ui/`: the functions that have packages, with each one's count and newest package.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Layout, UiError, encode, function_url, package_url, render, short, timestamp};
use crate::http::middleware::Access;
use crate::http::state::AppState;

/// Functions per page.
const PAGE: usize = 50;

/// The query of the functions page.
#[derive(Debug, Deserialize)]
pub(super) struct Params {
    cursor: Option<String>,
}

struct Latest {
    key: String,
    url: String,
    short_sha: String,
    created: String,
}

struct Row {
    name: String,
    url: String,
    packages: u64,
    latest: Option<Latest>,
}

#[derive(Template)]
#[template(path = "functions.html")]
struct FunctionsPage {
    layout: Layout,
    functions: Vec<Row>,
    next_url: Option<String>,
}

/// The functions page: the JSON API's `GET /v1/functions`, as a table.
pub(super) async fn page(
    State(state): State<AppState>,
    access: Access,
    Query(params): Query<Params>,
) -> Result<Response, UiError> {
    let page = state.packages.list_functions(PAGE, params.cursor.as_deref(), &|f| access.sees(f)).await?;
    let functions = page
        .functions
        .into_iter()
        .map(|f| Row {
            name: f.function.to_string(),
            url: function_url(&f.function),
            packages: f.packages,
            latest: f.latest.map(|row| Latest {
                key: row.key.to_string(),
                url: package_url(&row.key),
                short_sha: short(&row.key.sha256().to_string()),
                created: timestamp(row.created),
            }),
        })
        .collect();
    let json = match &params.cursor {
        Some(cursor) => format!("/v1/functions?cursor={}", encode(cursor)),
        None => "/v1/functions".to_owned(),
    };
    Ok(render(&FunctionsPage {
        layout: Layout::new("Functions", access.name(), Some(json)),
        functions,
        next_url: page.next_cursor.map(|c| format!("/ui/?cursor={}", encode(&c))),
    }))
}
