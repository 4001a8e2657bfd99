//! Git input: a directory of a commit of an allow-listed remote, read from git objects.
//!
//! Two halves with different tools (see `docs/git-source.md`):
//!
//! - **Fetching** (`mirror`) runs the `git` CLI into one bare mirror per remote, isolated from
//!   the host's configuration, bounded by a timeout and a size cap, serialized per remote by a
//!   file lock. Only a remote accepted by `remote`'s URL grammar and matching an allow-listed
//!   prefix is ever given to git.
//! - **Reading** (`tree`) uses gix in-process: the commit's tree, with its modes and blob
//!   bytes, nothing checked out, no filters.
//!
//! The tree is then walked by the same code as every other input, which is why a commit packs
//! to the same bytes as a tarball of its files.
//!
//! Everything here is synchronous and waits for processes and disks: call it inside
//! `spawn_blocking()` from async code.

mod mirror;
mod remote;
mod tree;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use self::mirror::Fetched;
use self::mirror::Want;
use self::remote::{RemoteUrl, UrlError};
pub(crate) use self::tree::GitNamespace;
use crate::source::Error;

/// Configuration of git sources (the service's `[git]` table). Git sources are off until
/// [`GitConfig::allowed_remotes`] lists at least one prefix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitConfig {
    /// URL prefixes of the remotes that may be fetched, such as
    /// `https://git.example.com/platform/`. A remote matches a prefix only on a `/` boundary,
    /// after both are normalized (lowercase host, no default port, no trailing `/`). `file://`
    /// URLs and absolute paths are allowed only under an allow-listed local prefix. Default:
    /// empty, which turns git sources off.
    pub allowed_remotes: Vec<String>,
    /// Directory of the bare mirrors (one per remote), their lock files and the empty HOME
    /// given to git. Created if missing. Default: `lambda-packager-git` in the system temp
    /// directory.
    pub mirror_dir: PathBuf,
    /// Longest time one request may spend waiting for the remote's lock, listing and fetching;
    /// git is killed when it passes. In configuration files `fetch_timeout_secs`, a number of
    /// seconds. Default 120.
    #[serde(rename = "fetch_timeout_secs", with = "seconds")]
    pub fetch_timeout: Duration,
    /// Most bytes one fetch may add to a mirror (the received pack). Fetches are shallow (depth
    /// 1), so this is about the compressed size of one commit's tree. Default 536,870,912
    /// (512 MiB).
    pub max_fetch_bytes: u64,
    /// Also accept `http://` remotes (still only under an allow-listed prefix). Meant for tests
    /// against a server on 127.0.0.1; never turn it on for real remotes. Default false.
    pub allow_insecure_http: bool,
    /// The git executable. Default `git` (looked up in `PATH`).
    pub git_binary: PathBuf,
}

impl Default for GitConfig {
    fn default() -> Self {
        Self {
            allowed_remotes: Vec::new(),
            mirror_dir: std::env::temp_dir().join("lambda-packager-git"),
            fetch_timeout: Duration::from_secs(120),
            max_fetch_bytes: 512 * 1024 * 1024,
            allow_insecure_http: false,
            git_binary: PathBuf::from("git"),
        }
    }
}

/// A [`GitConfig`] that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GitConfigError {
    /// An allow-listed prefix is not an accepted kind of URL.
    #[error("git.allowed_remotes: {prefix:?} is not allowed: {reason}")]
    InvalidPrefix {
        /// The prefix.
        prefix: String,
        /// Why.
        reason: String,
    },
    /// The mirror directory cannot be created.
    #[error("git.mirror_dir: cannot create {path}")]
    MirrorDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// What a request asks to package: the JSON object `{"repo", "ref", "path"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitRequest {
    /// The remote: `https://host/path`, or an allow-listed absolute path or `file://` URL.
    pub repo: String,
    /// A branch, a tag (peeled to its commit), `refs/heads/...`, `refs/tags/...`, or a full
    /// 40-hex commit id.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The directory of the commit that becomes the package root (the selection's `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// What was packaged: the request's remote and ref, and the commit they resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitRevision {
    /// The remote, as requested.
    pub repo: String,
    /// The ref, as requested.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The resolved commit, 40 lowercase hex digits.
    pub commit: String,
}

/// Git sources, ready to fetch: a checked [`GitConfig`].
///
/// Cheap to clone; share one per process. Concurrent use (threads or processes) on one mirror
/// directory is safe: each remote's fetches are serialized by a file lock.
#[derive(Debug, Clone)]
pub struct GitSource {
    config: GitConfig,
    allowed: Vec<RemoteUrl>,
    home: PathBuf,
}

impl GitSource {
    /// Checks every allow-listed prefix and creates the mirror directory.
    pub fn new(config: GitConfig) -> Result<Self, GitConfigError> {
        let mut allowed = Vec::with_capacity(config.allowed_remotes.len());
        for prefix in &config.allowed_remotes {
            let invalid = |e: UrlError| GitConfigError::InvalidPrefix {
                prefix: prefix.clone(),
                reason: match e {
                    UrlError::Refused(r) | UrlError::Malformed(r) => r,
                },
            };
            let url = RemoteUrl::parse_prefix(prefix).and_then(RemoteUrl::canonicalize).map_err(invalid)?;
            if url.scheme() == remote::Scheme::Http && !config.allow_insecure_http {
                return Err(invalid(UrlError::Refused(
                    "http:// prefixes need git.allow_insecure_http = true".into(),
                )));
            }
            allowed.push(url);
        }
        let mirror_error = |source| GitConfigError::MirrorDir { path: config.mirror_dir.clone(), source };
        fs::create_dir_all(config.mirror_dir.join(".home")).map_err(mirror_error)?;
        // git runs with HOME as its working directory, so every path given to it is absolute.
        let mirror_dir = config.mirror_dir.canonicalize().map_err(mirror_error)?;
        let home = mirror_dir.join(".home");
        Ok(Self { config: GitConfig { mirror_dir, ..config }, allowed, home })
    }

    /// Git sources that allow exactly one remote: what the CLI uses, where the user names the
    /// remote on their own machine. `repo` must still be an accepted kind of URL (https, a
    /// local path or `file://`); the error is the one a request for it would get.
    pub fn for_remote(repo: &str, config: GitConfig) -> Result<Self, Error> {
        RemoteUrl::parse(repo).map_err(url_error)?;
        let source = Self::new(GitConfig { allowed_remotes: vec![repo.to_owned()], ..config }).map_err(
            |e| match e {
                GitConfigError::InvalidPrefix { reason, .. } => Error::GitRemoteNotAllowed { reason },
                GitConfigError::MirrorDir { source, .. } => Error::io(source),
            },
        )?;
        Ok(source)
    }

    /// The configuration.
    pub fn config(&self) -> &GitConfig {
        &self.config
    }

    /// Whether any remote is allowed.
    pub fn is_enabled(&self) -> bool {
        !self.allowed.is_empty()
    }

    /// Checks a request without any network I/O: the remote is accepted and allow-listed, the
    /// ref is well formed. [`super::from_git`] checks again; this lets a caller answer 400/403
    /// before queueing the work.
    pub fn check(&self, request: &GitRequest) -> Result<(), Error> {
        self.allowed_remote(&request.repo)?;
        Want::parse(&request.reference)?;
        Ok(())
    }

    /// Fetches what `request` names into its mirror and resolves it to a commit, unless
    /// `cancel` stops it first.
    pub(crate) fn fetch(
        &self,
        request: &GitRequest,
        cancel: &crate::package::CancelFlag,
    ) -> Result<Fetched, Error> {
        let remote = self.allowed_remote(&request.repo)?;
        let want = Want::parse(&request.reference)?;
        self.fetch_into_mirror(&remote, &want, cancel)
    }

    fn allowed_remote(&self, repo: &str) -> Result<RemoteUrl, Error> {
        let url = RemoteUrl::parse(repo).and_then(RemoteUrl::canonicalize).map_err(url_error)?;
        if url.scheme() == remote::Scheme::Http && !self.config.allow_insecure_http {
            return Err(Error::GitRemoteNotAllowed { reason: "only https remotes are allowed".into() });
        }
        if self.allowed.is_empty() {
            return Err(Error::GitRemoteNotAllowed { reason: "git sources are not enabled".into() });
        }
        if !self.allowed.iter().any(|prefix| url.is_under(prefix)) {
            return Err(Error::GitRemoteNotAllowed {
                reason: "the remote is not under an allow-listed prefix".into(),
            });
        }
        Ok(url)
    }
}

impl Fetched {
    /// The revision to report for `request`.
    pub(crate) fn revision(&self, request: &GitRequest) -> GitRevision {
        GitRevision {
            repo: request.repo.clone(),
            reference: request.reference.clone(),
            commit: self.commit.to_string(),
        }
    }
}

fn url_error(e: UrlError) -> Error {
    match e {
        UrlError::Refused(reason) => Error::GitRemoteNotAllowed { reason },
        UrlError::Malformed(reason) => Error::InvalidGitRequest(format!("repo: {reason}")),
    }
}

/// `Duration` as a number of seconds in configuration files.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fields_default_and_the_timeout_is_in_seconds() {
        let config: GitConfig = serde_json::from_str(
            r#"{"allowed_remotes": ["https://git.example.com/platform/"], "fetch_timeout_secs": 30}"#,
        )
        .expect("valid config");
        assert_eq!(config.allowed_remotes, ["https://git.example.com/platform/"]);
        assert_eq!(config.fetch_timeout, Duration::from_secs(30));
        assert_eq!(config.max_fetch_bytes, GitConfig::default().max_fetch_bytes);
        assert!(!config.allow_insecure_http);
        assert!(serde_json::from_str::<GitConfig>(r#"{"allowed_remote": []}"#).is_err());
    }

    #[test]
    fn requests_and_revisions_use_the_api_field_names() {
        let request: GitRequest =
            serde_json::from_str(r#"{"repo": "https://h/r.git", "ref": "main", "path": "fn"}"#)
                .expect("valid");
        assert_eq!(request.reference, "main");
        assert_eq!(request.path.as_deref(), Some("fn"));
        assert!(serde_json::from_str::<GitRequest>(r#"{"repo": "x", "ref": "y", "depth": 1}"#).is_err());
        let revision = GitRevision { repo: "r".into(), reference: "main".into(), commit: "c".into() };
        assert_eq!(
            serde_json::to_value(&revision).expect("serializes"),
            serde_json::json!({"repo": "r", "ref": "main", "commit": "c"})
        );
    }

    #[test]
    fn invalid_prefixes_and_http_without_the_flag_are_configuration_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = |prefix: &str, http: bool| GitConfig {
            allowed_remotes: vec![prefix.to_owned()],
            mirror_dir: dir.path().to_owned(),
            allow_insecure_http: http,
            ..GitConfig::default()
        };
        for bad in ["ssh://h/x", "git@h:x", "https://user:pw@h/x", "https://h/a/../b"] {
            assert!(
                matches!(GitSource::new(config(bad, false)), Err(GitConfigError::InvalidPrefix { .. })),
                "{bad}"
            );
        }
        assert!(GitSource::new(config("http://127.0.0.1:8080/", false)).is_err());
        assert!(GitSource::new(config("http://127.0.0.1:8080/", true)).is_ok());
        assert!(GitSource::new(config("https://git.example.com", false)).is_ok());
    }
}
