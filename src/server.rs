//! The service process: configuration → store → packages service → HTTP listeners, until a
//! signal.
//!
//! Kept apart from `http` so that tests build the very same state and listeners, with their own
//! shutdown trigger, as `lambda-packager serve`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::blocking::BlockingPool;
use crate::config::Config;
use crate::http::{self, ApiSettings, AppState};
use crate::package::EntryCache;
use crate::packages::{Packages, PrefixPolicy, Settings};
use crate::source::git::GitSource;
use crate::store::Backend;
use crate::store::config::StoreKind;
use crate::store::local::LocalStore;
use crate::store::s3::{S3Settings, S3Store};

/// Builds the shared state: opens the store (sweeping a local store's stale temp files), then
/// [`state_for`].
pub async fn build_state(config: &Config) -> anyhow::Result<AppState> {
    let store = open_store(config).await?;
    state_for(config, store)
}

/// Opens the configured store: the local directory, or S3 with the standard credential chain.
pub async fn open_store(config: &Config) -> anyhow::Result<Backend> {
    Ok(match config.store.backend {
        StoreKind::Local => {
            let path = config.store.local.path.clone();
            let (store, swept) =
                tokio::task::spawn_blocking(move || LocalStore::open(&path)).await?.with_context(|| {
                    format!("opening the local store at {}", config.store.local.path.display())
                })?;
            tracing::warn!(
                path = %store.root().display(),
                swept_temp_files = swept,
                "using a local directory for packages, not S3 (set store.backend = \"s3\" for production)"
            );
            Backend::Local(store)
        }
        StoreKind::S3 => {
            let s3 = &config.store.s3;
            let store =
                S3Store::connect(s3, S3Settings::default()).await.context("configuring the S3 store")?;
            tracing::info!(
                bucket = %s3.bucket,
                region = store.region().unwrap_or_default(),
                endpoint = s3.endpoint.as_deref().unwrap_or("(AWS)"),
                force_path_style = s3.force_path_style,
                "using S3 for packages"
            );
            Backend::S3(store)
        }
    })
}

/// The shared state over an opened `store` (tests pass their own): sizes the blocking pool,
/// creates the packages service.
pub fn state_for(config: &Config, store: Backend) -> anyhow::Result<AppState> {
    if let Some(dir) = &config.pack.temp_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating pack.temp_dir {}", dir.display()))?;
    }
    let pool =
        BlockingPool::new(config.pack.workers.get(), Duration::from_secs(config.pack.queue_timeout_secs));
    let git = GitSource::new(config.git.clone()).context("configuring git sources")?;
    if git.is_enabled() {
        tracing::info!(
            remotes = ?config.git.allowed_remotes,
            mirror_dir = %config.git.mirror_dir.display(),
            "git sources enabled"
        );
    }
    let settings = Settings {
        limits: config.limits,
        threads: config.pack.threads,
        temp_dir: config.pack.temp_dir.clone(),
        cache: open_cache(&config.pack),
        prefixes: PrefixPolicy {
            operator: config.store.prefix.clone(),
            allow_request: config.store.allow_request_prefix,
        },
        list_page_size: config.store.list_page_size,
    };
    Ok(AppState {
        packages: Arc::new(Packages::new(store, pool, git, settings)),
        settings: Arc::new(ApiSettings::from_config(config).context("configuring auth.tokens")?),
        metrics: crate::telemetry::metrics_handle(),
    })
}

/// The compressed-entry cache, when it is on and its folder can be created: a cache that cannot
/// be had is a warning, never a reason not to serve (packs then deflate every entry).
fn open_cache(pack: &crate::config::PackConfig) -> Option<EntryCache> {
    let dir = pack.cache_dir()?;
    match EntryCache::open(&dir, pack.cache_max_bytes) {
        Ok(cache) => {
            tracing::info!(folder = %cache.folder().display(), max_bytes = pack.cache_max_bytes, "compressed-entry cache on");
            Some(cache)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "compressed-entry cache off: its folder cannot be created");
            None
        }
    }
}

/// Serves the API on `api` and the admin endpoints on `admin` until `shutdown` is cancelled,
/// then drains in-flight requests for at most `server.shutdown_grace_secs`.
///
/// When the grace period is over, the blocking work of every request still in flight is
/// cancelled (it stops at its next check: a decode buffer, a walk step, a git poll, an entry),
/// so that the process can exit instead of waiting for work nobody will read; the listeners stop
/// at the same moment and drop those requests.
pub async fn serve(
    config: &Config,
    state: AppState,
    api: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let header_timeout = Duration::from_secs(config.server.header_read_timeout_secs);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    tokio::spawn(backfill(Arc::clone(&state.packages)));
    tracing::info!(api = %api.local_addr()?, admin = %admin.local_addr()?, "listening");
    let api_server = http::serve(
        api,
        http::router(state.clone()),
        header_timeout,
        grace,
        shutdown.clone().cancelled_owned(),
    );
    let packages = Arc::clone(&state.packages);
    let admin_server =
        http::serve(admin, http::admin_router(state), header_timeout, grace, shutdown.cancelled_owned());
    let (a, b) = tokio::join!(api_server, admin_server);
    // The listeners return when every request was answered or when the grace period is over.
    // Blocking work still running now belongs to requests nobody will read (dropped by the
    // drain, or gone before): cancel it, so that the process can exit.
    let busy = packages.busy_workers();
    if busy > 0 {
        tracing::warn!(busy_workers = busy, "cancelling the work of requests still in flight");
        packages.cancel_in_flight();
    }
    a.context("API listener")?;
    b.context("admin listener")?;
    tracing::info!("stopped");
    Ok(())
}

/// How long the legacy scan waits before it tries again after a failure (the store was down).
const BACKFILL_RETRY: Duration = Duration::from_secs(60);

/// The one-time scan of packages stored before the listing index existed (see
/// `packages::index`), in the background: it ends at once when an earlier run finished, and
/// tries again every minute while the store fails. It stops with the process.
async fn backfill(packages: Arc<Packages>) {
    loop {
        match packages.backfill_legacy().await {
            Ok(done) if done.already_done => return,
            Ok(done) => {
                tracing::info!(
                    packages = done.packages,
                    functions = done.functions,
                    "indexed the packages stored before the listing index"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_secs = BACKFILL_RETRY.as_secs(), "scanning older packages for the listing index failed");
                tokio::time::sleep(BACKFILL_RETRY).await;
            }
        }
    }
}

/// `lambda-packager serve`: binds the configured addresses and serves until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let state = build_state(&config).await?;
    let api = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding server.listen {}", config.server.listen))?;
    let admin = TcpListener::bind(config.server.admin_listen)
        .await
        .with_context(|| format!("binding server.admin_listen {}", config.server.admin_listen))?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    let signal = shutdown_signal()?;
    tokio::spawn(async move {
        signal.await;
        tracing::info!("signal received");
        trigger.cancel();
    });
    serve(&config, state, api, admin, shutdown).await
}

/// Installs the SIGTERM and SIGINT handlers now, before `serve` logs "listening": until a
/// handler exists, a signal's default action kills the process instead of draining it. Returns
/// a future that ends at the first signal.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
