//! Probes: `/healthz` (the process answers) and `/readyz` (the store is usable).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::state::AppState;
use crate::packages::Error as PackagesError;

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: the store is reachable and usable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses((status = 200, body = Status), (status = 503, description = "Store unavailable", body = ErrorBody))
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    match state.packages.ready().await {
        Ok(()) => Ok(Json(Status { status: "ready" })),
        Err(e) => Err(PackagesError::Store(crate::store::Error::Unavailable(Box::new(e))).into()),
    }
}
