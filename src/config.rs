//! Service configuration: built-in defaults, overlaid by a TOML file, overlaid by environment
//! variables (`LAMBDA_PACKAGER_<SECTION>__<KEY>`), via figment.
//!
//! With no file and no variable the service runs on its embedded default: a local store in
//! `./artifacts`, listening on 127.0.0.1:8080. `config/packager.toml` documents every key.
//! Invalid configuration stops startup with a message that names the key. Secrets (bearer
//! tokens) are `SecretString`s, so they never reach logs or `Debug` output.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

pub use crate::auth::AuthConfig;
use crate::package::Limits;
use crate::store::config::{StoreConfig, StoreKind};

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "LAMBDA_PACKAGER_";

/// Environment variable holding the path of the configuration file.
pub const CONFIG_PATH_ENV: &str = "LAMBDA_PACKAGER_CONFIG";

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listeners, timeouts and load limits.
    pub server: ServerConfig,
    /// Bearer-token authentication.
    pub auth: AuthConfig,
    /// The packaging worker pool.
    pub pack: PackConfig,
    /// Limits on each request's input.
    pub limits: Limits,
    /// Where packages are stored and how they are named.
    pub store: StoreConfig,
    /// Log output.
    pub log: LogConfig,
    /// Git sources (off until `git.allowed_remotes` lists a remote).
    pub git: crate::source::git::GitConfig,
}

/// Listeners, timeouts and load limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// API listener. Default `127.0.0.1:8080` (use `0.0.0.0:8080` in a container).
    pub listen: SocketAddr,
    /// Admin listener for `/metrics` (and the health probes). Default `127.0.0.1:9090`.
    pub admin_listen: SocketAddr,
    /// Longest time to receive a request's headers, in seconds. Default 10.
    pub header_read_timeout_secs: u64,
    /// Longest time for a whole request, upload included, in seconds. Default 300.
    pub request_timeout_secs: u64,
    /// Largest request body, in bytes. Default 269,484,032 (Lambda's 250 MB plus 1 MiB).
    pub max_body_bytes: u64,
    /// Most requests handled at once; more get 503 with `Retry-After`. Default 64.
    pub concurrency_limit: usize,
    /// Longest drain of in-flight requests on SIGTERM/SIGINT, in seconds. Default 30.
    pub shutdown_grace_secs: u64,
    /// Slowest accepted upload, in bytes per second, averaged over each
    /// `min_body_rate_window_secs`; a slower request body is cut off with 408 `upload_too_slow`,
    /// so slow or stalled clients cannot hold `concurrency_limit` slots for the whole request
    /// timeout. 0 turns the check off. Default 1024 (a 250 MB bundle at that rate would take
    /// three days: no real CI link is that slow).
    pub min_body_rate_bytes_per_sec: u64,
    /// The window over which the minimum body rate is measured, in seconds; also how long a
    /// stalled upload keeps its slot. Default 20.
    pub min_body_rate_window_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            header_read_timeout_secs: 10,
            request_timeout_secs: 300,
            max_body_bytes: crate::package::limits::LAMBDA_UNZIPPED_LIMIT + 7 * 1024 * 1024,
            concurrency_limit: 64,
            shutdown_grace_secs: 30,
            min_body_rate_bytes_per_sec: 1024,
            min_body_rate_window_secs: 20,
        }
    }
}

/// The packaging worker pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackConfig {
    /// Packages built at once (the blocking pool's size). Default: the number of cores.
    pub workers: NonZeroUsize,
    /// Compression threads per package (bytes do not depend on it). Default 1: requests are the
    /// parallelism of a busy service.
    pub threads: NonZeroUsize,
    /// Longest wait for a free worker before 503, in seconds. Default 30.
    pub queue_timeout_secs: u64,
    /// Directory for uploads, spools and zips being built. Default: the system temp directory.
    pub temp_dir: Option<PathBuf>,
    /// The compressed-entry cache's folder (`package::cache`). Default: `cache/` in `temp_dir`,
    /// or `lambda-packager-cache/` in the system temp directory.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the compressed-entry cache keeps (least recently used evicted); 0 disables
    /// it. Default 1 GiB.
    pub cache_max_bytes: u64,
}

impl PackConfig {
    /// Where the compressed-entry cache is, if it is on.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.cache_max_bytes == 0 {
            return None;
        }
        Some(match (&self.cache_dir, &self.temp_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(temp)) => temp.join("cache"),
            (None, None) => std::env::temp_dir().join("lambda-packager-cache"),
        })
    }
}

impl Default for PackConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            threads: NonZeroUsize::MIN,
            queue_timeout_secs: 30,
            temp_dir: None,
            cache_dir: None,
            cache_max_bytes: crate::package::cache::DEFAULT_MAX_BYTES,
        }
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Compact,
    /// One JSON object per event.
    Json,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `compact` (default) or `json`.
    pub format: LogFormat,
    /// `tracing` filter directives. Default `info`; `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Compact, filter: "info".into() }
    }
}

/// Invalid configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key has a bad value or is unknown; figment's message names it.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults, then the TOML file at `path` (if any), then `LAMBDA_PACKAGER_*`
    /// variables, and checks what serde cannot.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!("config file {} not found", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(env_provider());
        // `auth.tokens` from the environment may also be JSON (`[{"name": "ci", ...}]`), as a
        // Kubernetes Secret or a CI variable holds it; figment's own syntax for a table in a
        // variable is `{name="ci", ...}`.
        let tokens_var = format!("{ENV_PREFIX}AUTH__TOKENS");
        if let Some(json) = std::env::var(&tokens_var)
            .ok()
            .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
            .filter(serde_json::Value::is_array)
        {
            figment = figment.merge(figment::providers::Serialized::default("auth.tokens", json));
        }
        Self::from_figment(figment)
    }

    /// Extracts and validates a configuration from any figment (tests use this directly).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Self = figment.extract().map_err(|e| {
            ConfigError::Invalid(e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.store.backend == StoreKind::S3 && self.store.s3.bucket.is_empty() {
            return invalid("store.s3.bucket is required when store.backend = \"s3\"");
        }
        if !(1..=1000).contains(&self.store.list_page_size) {
            return invalid("store.list_page_size must be 1 to 1000");
        }
        if self.server.concurrency_limit == 0 {
            return invalid("server.concurrency_limit must be at least 1");
        }
        if self.server.request_timeout_secs == 0 || self.server.header_read_timeout_secs == 0 {
            return invalid(
                "server.request_timeout_secs and server.header_read_timeout_secs must be at least 1",
            );
        }
        if self.server.min_body_rate_bytes_per_sec > 0 && self.server.min_body_rate_window_secs == 0 {
            return invalid(
                "server.min_body_rate_window_secs must be at least 1 when a minimum body rate is set",
            );
        }
        if self.limits.max_entries == 0 || self.limits.max_unpacked_bytes == 0 {
            return invalid("limits.max_entries and limits.max_unpacked_bytes must be at least 1");
        }
        crate::auth::Tokens::new(&self.auth).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }
}

/// `LAMBDA_PACKAGER_SERVER__LISTEN=0.0.0.0:8080` sets `server.listen`. Every key lives in a
/// section, so only variables with a `__` are configuration; the others of the prefix belong to
/// the CLI (`LAMBDA_PACKAGER_CONFIG`, `LAMBDA_PACKAGER_TOKEN`, ...) and are not an error here.
fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX).filter(|key| key.as_str().contains("__")).split("__")
}

#[cfg(test)]
mod tests {
    use figment::providers::Serialized;
    use secrecy::ExposeSecret;

    use super::*;

    fn toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_figment(Figment::new().merge(Toml::string(text)))
    }

    #[test]
    fn no_configuration_means_the_embedded_default() {
        let c = toml("").expect("defaults are valid");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.store.backend, StoreKind::Local);
        assert_eq!(c.store.local.path, PathBuf::from("artifacts"));
        assert!(c.auth.tokens.is_empty());
    }

    /// The keys serde accepts in the table at `section` (`""` for the top level), read from
    /// its "unknown field" error, so the list cannot drift from the structs.
    fn accepted_keys(section: &str) -> Vec<String> {
        let probe = if section.is_empty() {
            "no_such_key = 0\n".to_owned()
        } else {
            format!("[{section}]\nno_such_key = 0\n")
        };
        // "unknown field: found `no_such_key`, expected `one of `a`, `b`` for key …", or
        // "expected ``a` or `b``", or "expected ``a``".
        let error = toml(&probe).expect_err("an unknown key").to_string();
        let expected = error
            .split_once(", expected ")
            .and_then(|(_, e)| e.split_once(" for key "))
            .map(|(e, _)| e)
            .unwrap_or_else(|| panic!("no list of expected keys in {error:?}"));
        let keys: Vec<String> = expected
            .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .filter(|w| !["", "one", "of", "or"].contains(w))
            .map(str::to_owned)
            .collect();
        assert!(!keys.is_empty(), "no keys in {error:?}");
        keys
    }

    /// `key = value`, as opposed to prose.
    fn is_assignment(line: &str) -> bool {
        line.split_once(" = ")
            .is_some_and(|(key, _)| key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    }

    /// `[section]` of the example file: its lines, up to the next table header.
    fn example_section<'a>(text: &'a str, section: &str) -> Option<Vec<&'a str>> {
        let header = format!("[{section}]");
        let mut lines = text.lines().skip_while(|l| l.trim() != header).skip(1).peekable();
        lines.peek()?;
        Some(lines.take_while(|l| !l.starts_with('[')).collect())
    }

    #[test]
    fn the_example_file_documents_every_key_with_its_default() {
        let text = include_str!("../config/packager.toml");
        // Every value it sets is the default...
        let c = toml(text).expect("config/packager.toml is valid");
        assert_eq!(
            format!("{c:?}"),
            format!("{:?}", Config::default()),
            "the example sets non-default values"
        );
        // ...its commented-out examples are valid keys with valid values...
        let uncommented: String = text
            .lines()
            .map(|l| l.strip_prefix("# ").filter(|rest| is_assignment(rest)).unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        toml(&uncommented).expect("the commented-out examples are valid");
        // ...and every key of every section and sub-section appears, set or commented out.
        let mut sections: Vec<String> = accepted_keys("");
        while let Some(section) = sections.pop() {
            let lines = example_section(text, &section).unwrap_or_else(|| panic!("no [{section}] table"));
            for key in accepted_keys(&section) {
                let sub = format!("{section}.{key}");
                if example_section(text, &sub).is_some() {
                    sections.push(sub);
                    continue;
                }
                let (set, commented) = (format!("{key} = "), format!("# {key} = "));
                assert!(
                    lines.iter().any(|l| l.starts_with(&set) || l.starts_with(&commented)),
                    "config/packager.toml does not document {sub}"
                );
            }
        }
    }

    #[test]
    fn the_minimum_body_rate_is_on_by_default_and_can_be_turned_off() {
        let c = toml("").expect("defaults");
        assert_eq!((c.server.min_body_rate_bytes_per_sec, c.server.min_body_rate_window_secs), (1024, 20));
        let off = toml("[server]\nmin_body_rate_bytes_per_sec = 0\nmin_body_rate_window_secs = 0\n")
            .expect("0 turns the check off, and then the window does not matter");
        assert_eq!(off.server.min_body_rate_bytes_per_sec, 0);
        let e = toml("[server]\nmin_body_rate_window_secs = 0\n").expect_err("no window").to_string();
        assert!(e.contains("server.min_body_rate_window_secs"), "{e}");
    }

    #[test]
    fn errors_name_the_bad_key() {
        let e = toml("[server]\nlisten = \"not an address\"\n").expect_err("invalid").to_string();
        assert!(e.contains("server.listen"), "{e}");
        let e = toml("[store]\nbakend = \"s3\"\n").expect_err("unknown key").to_string();
        assert!(e.contains("bakend"), "{e}");
        let e = toml("[store]\nprefix = \"../x/\"\n").expect_err("bad prefix").to_string();
        assert!(e.contains("store.prefix"), "{e}");
        let e = toml("[store]\nbackend = \"s3\"\n").expect_err("no bucket").to_string();
        assert!(e.contains("store.s3.bucket"), "{e}");
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail's closure returns figment::Error")]
    fn environment_variables_set_nested_keys_and_cli_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LAMBDA_PACKAGER_SERVER__CONCURRENCY_LIMIT", "7");
            jail.set_env("LAMBDA_PACKAGER_STORE__LOCAL__PATH", "/srv/packages");
            jail.set_env("LAMBDA_PACKAGER_TOKEN", "for-push-only");
            jail.set_env("LAMBDA_PACKAGER_CONFIG", "ignored-here");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.server.concurrency_limit, 7);
            assert_eq!(c.store.local.path, PathBuf::from("/srv/packages"));
            jail.set_env("LAMBDA_PACKAGER_SERVER__CONCURRENCY_LIMT", "7");
            let e = Config::load(None).expect_err("a typo in a key is an error").to_string();
            assert!(e.contains("concurrency_limt"), "{e}");
            Ok(())
        });
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail's closure returns figment::Error")]
    fn named_tokens_come_from_the_file_or_from_one_variable_in_json_or_figments_syntax() {
        figment::Jail::expect_with(|jail| {
            let named = |c: &Config| -> Vec<String> {
                let tokens = crate::auth::Tokens::new(&c.auth).expect("valid tokens");
                ["plain-secret", "ci-secret"]
                    .iter()
                    .map(|t| tokens.authenticate(t).map(|c| c.name().to_owned()).unwrap_or_default())
                    .collect()
            };
            jail.create_file(
                "packager.toml",
                "[auth]\ntokens = [\"plain-secret\", {name = \"ci\", token = \"ci-secret\", scopes = [\"write\"], functions = [\"orders-*\"]}]\n",
            )?;
            let c = Config::load(Some(std::path::Path::new("packager.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(named(&c), ["token-1", "ci"]);
            jail.set_env(
                "LAMBDA_PACKAGER_AUTH__TOKENS",
                r#"["plain-secret", {"name": "ci", "token": "ci-secret", "scopes": ["read"]}]"#,
            );
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(named(&c), ["token-1", "ci"]);
            jail.set_env(
                "LAMBDA_PACKAGER_AUTH__TOKENS",
                r#"["plain-secret", {name="ci", token="ci-secret"}]"#,
            );
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(named(&c), ["token-1", "ci"]);
            jail.set_env("LAMBDA_PACKAGER_AUTH__TOKENS", r#"[{"name": "c i", "token": "ci-secret"}]"#);
            let e = Config::load(None).expect_err("a bad name").to_string();
            assert!(e.contains("auth.tokens[0]") && !e.contains("ci-secret"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn dotted_keys_set_nested_values_and_tokens_never_appear_in_debug_output() {
        let figment = Figment::new()
            .merge(Serialized::default("server.listen", "0.0.0.0:1"))
            .merge(Serialized::default("auth.tokens", vec!["s3cret"]));
        let c = Config::from_figment(figment).expect("valid");
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:1");
        assert!(
            matches!(&c.auth.tokens[0], crate::auth::TokenConfig::Plain(t) if t.expose_secret() == "s3cret")
        );
        assert!(!format!("{c:?}").contains("s3cret"), "tokens never appear in Debug output");
    }
}
