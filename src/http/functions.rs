//! `GET /v1/functions` (which functions have packages, how many, the newest) and
//! `GET /v1/functions/{function}/latest` (a function's newest package).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::artifacts::{ArtifactSummary, page_size};
use super::error::{ApiError, ErrorBody};
use super::extract::function_name;
use super::middleware::Access;
use super::state::AppState;
use crate::packages::Error as PackagesError;

/// A function's newest package.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestPackage {
    /// Its key.
    pub key: String,
    /// When it was stored (RFC 3339, UTC).
    pub created: String,
}

/// A function that has packages.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionInfo {
    /// The function's name.
    pub function: String,
    /// How many packages it has (request-prefixed ones and those stored before the listing
    /// index existed included).
    pub packages: u64,
    /// Its newest package.
    pub latest: Option<LatestPackage>,
    /// The function's web page (a path on this service: `/ui/functions/{function}`).
    pub ui_url: String,
}

/// A page of the functions list.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionList {
    /// This page, sorted by name.
    pub functions: Vec<FunctionInfo>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging parameters of the functions list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FunctionParams {
    /// Page size, 1 to 100 (default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List the functions that have packages, by name, with each one's package count and newest
/// package.
///
/// A page costs the store one listing request plus at most four requests per function on it.
/// With a token limited to some functions, only those are listed (a page may then hold fewer
/// than `limit`: follow `next_cursor` until it is `null`).
#[utoipa::path(
    get,
    path = "/v1/functions",
    tag = "functions",
    params(FunctionParams),
    responses(
        (status = 200, description = "A page of functions", body = FunctionList),
        (status = 400, description = "Bad cursor or limit", body = ErrorBody),
        (status = 403, description = "The token lacks the read scope (`insufficient_scope`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn list_functions(
    State(state): State<AppState>,
    access: Access,
    Query(params): Query<FunctionParams>,
) -> Result<Json<FunctionList>, ApiError> {
    let limit = page_size(params.limit)?;
    let page = state.packages.list_functions(limit, params.cursor.as_deref(), &|f| access.sees(f)).await?;
    Ok(Json(FunctionList {
        functions: page
            .functions
            .into_iter()
            .map(|f| FunctionInfo {
                ui_url: super::ui::function_url(&f.function),
                function: f.function.to_string(),
                packages: f.packages,
                latest: f.latest.map(|row| LatestPackage {
                    key: row.key.to_string(),
                    created: humantime::format_rfc3339_millis(row.created).to_string(),
                }),
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A function's newest package.
#[utoipa::path(
    get,
    path = "/v1/functions/{function}/latest",
    tag = "functions",
    params(("function" = String, Path, description = "Lambda function name")),
    responses(
        (status = 200, description = "The newest package", body = ArtifactSummary),
        (status = 400, description = "Bad function name", body = ErrorBody),
        (status = 403, description = "The token may not read this function (`function_not_allowed`), or lacks the read scope (`insufficient_scope`)", body = ErrorBody),
        (status = 404, description = "The function has no package (`artifact_not_found`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn latest_package(
    State(state): State<AppState>,
    access: Access,
    Path(function): Path<String>,
) -> Result<Json<ArtifactSummary>, ApiError> {
    let function = function_name(&function)?;
    access.check(&function)?;
    match state.packages.latest(&function).await? {
        Some(row) => Ok(Json(row.into())),
        None => Err(PackagesError::NoPackages(function).into()),
    }
}
