//! The state shared by every handler, built once from the configuration.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use crate::auth::{TokenConfigError, Tokens};
use crate::config::Config;
use crate::packages::Packages;

/// Settings of the HTTP layer itself.
#[derive(Debug)]
pub struct ApiSettings {
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Where uploads past 1 MiB are kept while they arrive (`None`: the system temp directory).
    pub upload_dir: Option<std::path::PathBuf>,
    /// The accepted bearer tokens (as digests), with their names, scopes and functions.
    pub tokens: Tokens,
    /// Slots for requests in flight; a request that finds none gets 503.
    pub in_flight: Arc<Semaphore>,
    /// Longest time for one request.
    pub request_timeout: Duration,
    /// Slowest accepted request body (`None`: no minimum).
    pub min_body_rate: Option<MinBodyRate>,
}

/// The slowest upload the service waits for: at least `bytes_per_sec × window` bytes in every
/// `window` of the body (a window with fewer ends the request with 408 `upload_too_slow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinBodyRate {
    /// Bytes per second, averaged over the window.
    pub bytes_per_sec: u64,
    /// How long each measurement lasts.
    pub window: Duration,
}

impl MinBodyRate {
    /// Bytes that must arrive within each window.
    pub fn bytes_per_window(&self) -> u64 {
        self.bytes_per_sec.saturating_mul(self.window.as_secs().max(1))
    }
}

impl ApiSettings {
    /// The HTTP settings of a configuration.
    pub fn from_config(config: &Config) -> Result<Self, TokenConfigError> {
        Ok(Self {
            max_body_bytes: config.server.max_body_bytes,
            upload_dir: config.pack.temp_dir.clone(),
            tokens: Tokens::new(&config.auth)?,
            in_flight: Arc::new(Semaphore::new(config.server.concurrency_limit)),
            request_timeout: Duration::from_secs(config.server.request_timeout_secs),
            min_body_rate: (config.server.min_body_rate_bytes_per_sec > 0).then(|| MinBodyRate {
                bytes_per_sec: config.server.min_body_rate_bytes_per_sec,
                window: Duration::from_secs(config.server.min_body_rate_window_secs.max(1)),
            }),
        })
    }
}

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The packages service: every use case (and through it the store, the pool, git).
    pub packages: Arc<Packages>,
    /// HTTP settings.
    pub settings: Arc<ApiSettings>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}
