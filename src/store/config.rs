//! Store configuration (the service's `[store]` table): which backend, its settings, and how
//! keys are prefixed. It lives with the store so that the store never imports `config`: the
//! configuration module imports these types, and the arrow points one way.

use std::path::PathBuf;

use serde::Deserialize;

use super::key::KeyPrefix;

/// Which store backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A local directory (the embedded default).
    #[default]
    Local,
    /// An S3 bucket.
    S3,
}

/// Where packages are stored and how they are named.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `local` (default) or `s3`.
    pub backend: StoreKind,
    /// Operator's key prefix, before every key (empty or ending in `/`).
    #[serde(deserialize_with = "de_prefix")]
    pub prefix: KeyPrefix,
    /// Whether a request may add its own `prefix` (after the operator's). Default false.
    pub allow_request_prefix: bool,
    /// Most names one listing request to the store asks for (1 to 1,000, S3's own maximum):
    /// the page size of the listing index's reads and of the one-time scan of older objects.
    /// Default 1000; smaller values only make more, smaller requests (tests use them).
    pub list_page_size: usize,
    /// The local backend.
    pub local: LocalStoreConfig,
    /// The S3 backend.
    pub s3: S3StoreConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreKind::default(),
            prefix: KeyPrefix::default(),
            allow_request_prefix: false,
            list_page_size: 1000,
            local: LocalStoreConfig::default(),
            s3: S3StoreConfig::default(),
        }
    }
}

fn de_prefix<'de, D: serde::Deserializer<'de>>(d: D) -> Result<KeyPrefix, D::Error> {
    String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
}

/// The local backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalStoreConfig {
    /// Directory holding the packages. Default `./artifacts`.
    pub path: PathBuf,
}

impl Default for LocalStoreConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("artifacts") }
    }
}

/// The S3 backend. Credentials come from the standard AWS chain (environment, profile, web
/// identity/IRSA, instance metadata), never from this file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3StoreConfig {
    /// Bucket name (required with `backend = "s3"`).
    pub bucket: String,
    /// Region. Default: from the AWS chain.
    pub region: Option<String>,
    /// Endpoint URL, for S3-compatible servers. Default: AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), for S3-compatible servers.
    pub force_path_style: bool,
}
