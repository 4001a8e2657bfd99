//! Which git remotes may be fetched: URL grammar, normalization and the allowlist.
//!
//! A request's repository URL is untrusted and ends up on `git`'s command line, so it is parsed
//! by a small strict grammar instead of being checked against a list of bad things:
//!
//! - `https://host[:port]/path`, and `http://` in the same shape when insecure HTTP is allowed;
//! - `file:///abs/path` or `/abs/path`, for local mirrors and tests.
//!
//! Everything else is refused before `git` runs: ssh URLs and scp-like `host:path`, `git://`,
//! transport helpers (`ext::`, `fd::`), option-like strings (`-u...`), credentials in the
//! authority, query strings, fragments, percent escapes, and `.`/`..`/empty path segments (so a
//! prefix cannot be escaped with `platform/../other`). The normalized form (lowercase scheme and
//! host, no default port, no trailing `/`) is what the allowlist compares, on `/` boundaries, and
//! what `git` is given.

use std::path::Path;

/// Longest repository URL accepted.
const MAX_URL_BYTES: usize = 2048;

/// The transport a remote uses; each maps to one `protocol.<name>.allow` of git.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Https,
    Http,
    File,
}

impl Scheme {
    /// git's name for the protocol, as in `protocol.<name>.allow`.
    pub(crate) fn git_protocol(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Http => "http",
            Self::File => "file",
        }
    }
}

/// Why a string is not an acceptable remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UrlError {
    /// A kind of remote that is never fetched (ssh, `ext::`, credentials, options...).
    Refused(String),
    /// Not a well-formed URL of an accepted kind.
    Malformed(String),
}

/// A checked, normalized remote URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteUrl {
    scheme: Scheme,
    normalized: String,
}

impl RemoteUrl {
    /// Parses a request's repository URL.
    pub(crate) fn parse(raw: &str) -> Result<Self, UrlError> {
        parse(raw, false)
    }

    /// Parses an allowlist prefix: the same grammar, but the path may be empty (a whole host).
    pub(crate) fn parse_prefix(raw: &str) -> Result<Self, UrlError> {
        parse(raw, true)
    }

    /// The normalized URL, as given to `git`.
    pub(crate) fn as_str(&self) -> &str {
        &self.normalized
    }

    pub(crate) fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The absolute path of a `file` remote.
    pub(crate) fn local_path(&self) -> Option<&str> {
        match self.scheme {
            Scheme::File => self.normalized.strip_prefix("file://"),
            Scheme::Https | Scheme::Http => None,
        }
    }

    /// Replaces a `file` remote's path by its canonical form (symlinks resolved), when it
    /// exists, so that a link inside an allowed directory cannot point the fetch elsewhere.
    pub(crate) fn canonicalize(self) -> Result<Self, UrlError> {
        let Some(path) = self.local_path() else { return Ok(self) };
        let path = if path.is_empty() { "/" } else { path };
        match Path::new(path).canonicalize() {
            Ok(real) => {
                let real = real
                    .to_str()
                    .ok_or_else(|| UrlError::Malformed("the repository path is not valid UTF-8".into()))?;
                let normalized = normalize_path(real, true)?;
                Ok(Self { scheme: Scheme::File, normalized: format!("file://{normalized}") })
            }
            Err(_) => Ok(self),
        }
    }

    /// Whether `self` is `prefix` itself or below it, on a `/` boundary:
    /// `https://h/platform` allows `https://h/platform/x` but not `https://h/platform-evil/x`.
    pub(crate) fn is_under(&self, prefix: &Self) -> bool {
        self.scheme == prefix.scheme
            && match self.normalized.strip_prefix(&prefix.normalized) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            }
    }
}

fn parse(raw: &str, is_prefix: bool) -> Result<RemoteUrl, UrlError> {
    let refused = |why: &str| Err(UrlError::Refused(why.to_owned()));
    let malformed = |why: &str| Err(UrlError::Malformed(why.to_owned()));
    if raw.is_empty() {
        return malformed("the repository URL is empty");
    }
    if raw.len() > MAX_URL_BYTES {
        return malformed("the repository URL is too long");
    }
    // Checked first: these are attacks on git's command line, whatever else the string holds.
    if raw.starts_with('-') {
        return refused("a URL starting with '-' would be read as an option");
    }
    // git's `<transport>::<address>` syntax runs a remote helper (`ext::` runs a command).
    let helper = raw.split_once("::").is_some_and(|(transport, _)| {
        transport.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
    });
    if helper {
        return refused("git transport helpers such as ext:: and fd:: are never allowed");
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return malformed("the repository URL contains whitespace or control characters");
    }
    let lower = raw.to_ascii_lowercase();
    if lower.starts_with("https://") {
        web(Scheme::Https, &raw["https://".len()..], is_prefix)
    } else if lower.starts_with("http://") {
        web(Scheme::Http, &raw["http://".len()..], is_prefix)
    } else if lower.starts_with("file://") {
        let rest = &raw["file://".len()..];
        if !rest.starts_with('/') {
            return refused("file:// URLs with a host are not allowed");
        }
        local(rest, is_prefix)
    } else if raw.starts_with('/') {
        local(raw, is_prefix)
    } else if let Some((scheme, _)) = lower.split_once("://") {
        if scheme.starts_with("ssh") || scheme.ends_with("ssh") {
            refused("ssh remotes are not allowed; use https")
        } else {
            refused("only https remotes (and allow-listed local paths) are allowed")
        }
    } else if raw.split('/').next().is_some_and(|first| first.contains(':')) {
        refused("scp-like ssh remotes (host:path) are not allowed; use https")
    } else {
        refused("relative paths are not allowed; use an https URL or an absolute path")
    }
}

fn web(scheme: Scheme, rest: &str, is_prefix: bool) -> Result<RemoteUrl, UrlError> {
    let malformed = |why: &str| Err(UrlError::Malformed(why.to_owned()));
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(UrlError::Refused("credentials in the URL are not allowed".into()));
    }
    if authority.contains(['?', '#']) || path.contains(['?', '#']) {
        return malformed("query strings and fragments are not allowed in a repository URL");
    }
    if authority.starts_with('[') {
        return malformed("IPv6 address literals are not supported");
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host = host.to_ascii_lowercase();
    let valid_host = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid_host {
        return malformed("the host name is not valid");
    }
    let default_port = match scheme {
        Scheme::Https => 443,
        Scheme::Http => 80,
        Scheme::File => 0,
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => (n != default_port).then_some(n),
            _ => return malformed("the port is not valid"),
        },
    };
    let path = normalize_path(path, is_prefix)?;
    let mut normalized = format!("{}://{host}", scheme.git_protocol());
    if let Some(port) = port {
        normalized.push_str(&format!(":{port}"));
    }
    normalized.push_str(&path);
    Ok(RemoteUrl { scheme, normalized })
}

fn local(path: &str, is_prefix: bool) -> Result<RemoteUrl, UrlError> {
    let path = normalize_path(path, is_prefix)?;
    Ok(RemoteUrl { scheme: Scheme::File, normalized: format!("file://{path}") })
}

/// Checks a `/`-rooted path (or an empty one) and drops trailing slashes. Only characters that
/// need no escaping anywhere are accepted.
fn normalize_path(path: &str, is_prefix: bool) -> Result<String, UrlError> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if is_prefix {
            Ok(String::new())
        } else {
            Err(UrlError::Malformed("the URL names no repository path".into()))
        };
    }
    for segment in trimmed[1..].split('/') {
        match segment {
            "" => return Err(UrlError::Malformed("the repository path has an empty segment".into())),
            "." | ".." => {
                return Err(UrlError::Malformed("the repository path has a '.' or '..' segment".into()));
            }
            _ => {}
        }
        if let Some(c) =
            segment.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '+' | '-')))
        {
            return Err(UrlError::Malformed(format!(
                "the character {c:?} is not allowed in a repository path"
            )));
        }
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> String {
        RemoteUrl::parse(raw).expect("accepted").as_str().to_owned()
    }

    #[test]
    fn urls_are_normalized_before_comparison() {
        assert_eq!(
            norm("HTTPS://Git.Example.COM:443/Platform/Repo.git/"),
            "https://git.example.com/Platform/Repo.git"
        );
        assert_eq!(norm("https://git.example.com:8443/a"), "https://git.example.com:8443/a");
        assert_eq!(norm("http://127.0.0.1:80/a"), "http://127.0.0.1/a");
        assert_eq!(norm("/srv/git/repo.git"), "file:///srv/git/repo.git");
        assert_eq!(norm("file:///srv/git/repo.git//"), "file:///srv/git/repo.git");
    }

    #[test]
    fn dangerous_urls_are_refused() {
        for raw in [
            "-uhttps://x/y",
            "--upload-pack=touch /tmp/pwned",
            "ext::sh -c touch% /tmp/pwned",
            "fd::3",
            "ssh://git@git.example.com/platform/repo.git",
            "git+ssh://git.example.com/platform/repo.git",
            "git@git.example.com:platform/repo.git",
            "git.example.com:platform/repo.git",
            "git://git.example.com/platform/repo.git",
            "https://user:token@git.example.com/platform/repo.git",
            "https://token@git.example.com/platform/repo.git",
            "file://otherhost/srv/repo.git",
            "repo.git",
        ] {
            assert!(matches!(RemoteUrl::parse(raw), Err(UrlError::Refused(_))), "{raw}");
        }
    }

    #[test]
    fn malformed_urls_are_rejected() {
        for raw in [
            "",
            "https://",
            "https://git.example.com",
            "https://git.example.com/a/../b",
            "https://git.example.com/a/./b",
            "https://git.example.com/a//b",
            "https://git.example.com/a%2F..%2Fb",
            "https://git.example.com/a?b",
            "https://git.example.com/a#b",
            "https://git.example.com:0/a",
            "https://git.example.com:99999/a",
            "https://git.example.com:+1/a",
            "https://[::1]/a",
            "https://bad_host/a",
            "https://git.example.com/a b",
            "/srv/../etc",
        ] {
            assert!(matches!(RemoteUrl::parse(raw), Err(UrlError::Malformed(_))), "{raw:?}");
        }
    }

    #[test]
    fn prefixes_match_on_component_boundaries_only() {
        let prefix = RemoteUrl::parse_prefix("https://git.example.com/platform/").expect("valid");
        let under = |raw: &str| RemoteUrl::parse(raw).expect("valid").is_under(&prefix);
        assert!(under("https://git.example.com/platform/orders.git"));
        assert!(under("https://GIT.example.com:443/platform/team/orders"));
        assert!(!under("https://git.example.com/platform-evil/orders.git"));
        assert!(!under("https://git.example.com.evil.com/platform/orders.git"));
        assert!(!under("https://git.example.com:8443/platform/orders.git"));
        assert!(!under("http://git.example.com/platform/orders.git"));
        let host = RemoteUrl::parse_prefix("https://git.example.com").expect("valid");
        assert!(RemoteUrl::parse("https://git.example.com/x").expect("valid").is_under(&host));
        assert!(!RemoteUrl::parse("https://git.example.community/x").expect("valid").is_under(&host));
        let local = RemoteUrl::parse_prefix("/srv/mirrors/").expect("valid");
        assert!(RemoteUrl::parse("file:///srv/mirrors/a.git").expect("valid").is_under(&local));
        assert!(!RemoteUrl::parse("/srv/mirrors2/a.git").expect("valid").is_under(&local));
    }
}
