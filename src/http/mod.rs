//! The HTTP API: the only module that knows axum. Routes live next to their handlers
//! (`packages`, `functions`, `artifacts`, `health`, the web pages in `ui`); this module assembles them, applies the middleware
//! stack, documents them (OpenAPI, generated from the handlers by utoipa-axum, so the spec
//! cannot drift from the routes) and serves them with graceful shutdown.

pub mod artifacts;
mod body;
pub mod error;
mod extract;
pub mod functions;
pub mod health;
mod middleware;
pub mod packages;
pub mod state;
mod ui;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode};
use axum::response::Redirect;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use self::middleware::Access;
pub use self::state::{ApiSettings, AppState, MinBodyRate};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(title = "lambda-packager", description = "Reproducible AWS Lambda zips, named by their SHA-256, stored exactly once."),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API routes and their OpenAPI document, before state and middleware.
fn api(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let max_body = usize::try_from(state.settings.max_body_bytes).unwrap_or(usize::MAX);
    // Uploads are streamed, so the body limit is enforced by RequestBodyLimitLayer on this
    // route; axum's default 2 MB limit (for buffered extractors) is turned off here only.
    let upload = OpenApiRouter::new()
        .routes(routes!(packages::create_package))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(DefaultBodyLimit::disable());
    // A lookup's body is a few hundred bytes of JSON, read with its own small limit.
    let lookup = OpenApiRouter::new().routes(routes!(packages::lookup_package));
    let reads = OpenApiRouter::new()
        .routes(routes!(functions::list_functions))
        .routes(routes!(functions::latest_package))
        .routes(routes!(artifacts::list_artifacts))
        .routes(routes!(artifacts::get_artifact))
        .routes(routes!(artifacts::get_artifact_zip))
        .routes(routes!(artifacts::diff_artifacts));
    // Authentication wraps load shedding, so a caller without a valid token is answered 401
    // and never takes one of the `concurrency_limit` slots: only authenticated requests can
    // crowd each other out.
    let v1 = upload
        .merge(lookup)
        .merge(reads)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), middleware::shed_load))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), middleware::require_token));
    let probes = OpenApiRouter::new().routes(routes!(health::healthz)).routes(routes!(health::readyz));
    OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(v1).merge(probes).split_for_parts()
}

/// The OpenAPI document of the API.
pub fn openapi(state: &AppState) -> utoipa::openapi::OpenApi {
    api(state).1
}

/// The API router with its middleware stack.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = api(&state);
    let doc = axum::Json(doc);
    let routes = routes
        .route("/openapi.json", get(move || async move { doc }))
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .merge(ui::routes(&state));
    with_middleware(routes, state)
}

/// `routes` with the fallback, the state and the middleware stack: what [`router`] serves (and
/// what tests wrap around routes of their own).
fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let timeout = state.settings.request_timeout;
    routes
        .fallback(middleware::not_found)
        .with_state(state)
        // Layers wrap what is above them, so they run bottom-up for requests. From the outside
        // in: request id → trace span → propagate the id to the response → JSON error envelope
        // and the one failure log line (inside the span, so it carries the request id) →
        // metrics → catch panics (inside the envelope and the metrics, so a panic is answered,
        // logged and counted as the JSON 500 any other failure is) → request timeout (a bare
        // 408 the envelope turns into JSON).
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn(middleware::track_metrics))
        .layer(axum::middleware::from_fn(middleware::error_envelope))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let route = request
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or(request.uri().path(), |p| p.as_str());
                    let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                    // The bare address (`127.0.0.1`), or no field when unknown.
                    let client = request
                        .extensions()
                        .get::<ConnectInfo<SocketAddr>>()
                        .map(|c| tracing::field::display(c.0.ip()));
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        route,
                        request_id = id,
                        client,
                        token = tracing::field::Empty,
                        key = tracing::field::Empty,
                        size_bytes = tracing::field::Empty,
                        outcome = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The admin router: `/metrics` in Prometheus text format, and the probes.
pub fn admin_router(state: AppState) -> Router {
    let handle = state.metrics.clone();
    Router::new()
        .route("/metrics", get(move || async move { handle.render() }))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` completes, then drains in-flight requests for at
/// most `grace`. Connections that send their headers slower than `header_read_timeout` are
/// closed (slow-loris guard).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let addr = listener.local_addr()?;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, client = %peer, "connection closed with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(%addr, "shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(%addr, "all requests drained"),
        () = tokio::time::sleep(grace) => tracing::warn!(%addr, "grace period over; dropping requests in flight"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;

    use super::*;
    use crate::config::Config;
    use crate::store::Backend;
    use crate::store::local::LocalStore;

    #[tokio::test]
    async fn a_handler_that_panics_answers_the_json_500_envelope() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.git.mirror_dir = dir.path().join("git");
        let (store, _) = LocalStore::open(&dir.path().join("store")).expect("a local store");
        let state = crate::server::state_for(&config, Backend::Local(store)).expect("the state");
        // The real routes and middleware, plus one route whose handler panics.
        let (routes, _) = api(&state);
        async fn panics() -> &'static str {
            panic!("the secret detail of a bug")
        }
        let panicking = routes.route("/v1/panics", get(panics));
        let app = with_middleware(panicking, state);
        let response = app
            .oneshot(Request::get("/v1/panics").body(Body::empty()).expect("a request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers().clone();
        assert_eq!(headers.get("content-type").map(|v| v.as_bytes()), Some(&b"application/json"[..]));
        assert!(headers.get(REQUEST_ID).is_some(), "the request id identifies it in the logs");
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.expect("a body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
        assert_eq!(json["error"]["code"], "internal_error", "{json}");
        let message = json["error"]["message"].as_str().expect("a message");
        assert!(message.contains("x-request-id"), "{json}");
        assert!(!json.to_string().contains("secret detail"), "the panic's message stays in the log: {json}");
    }
}
