//! Who may do what: named bearer tokens, each with scopes (`read`: the GET routes, `write`: the
//! POST route) and, optionally, the functions it is limited to (name patterns such as
//! `orders-*`), so that one service can serve several teams.
//!
//! `auth.tokens` lists plain strings (a token that may do everything, named `token-1`,
//! `token-2`, … by its place in the list) and tables `{name, token, scopes, functions}`. A
//! token's name, never the token, is what the logs and a package's provenance (`created_by`)
//! show. Tokens are compared as SHA-256 digests in constant time, so neither their content nor
//! their length leaks through timing; the tokens themselves are not kept. The web pages' sessions
//! ([`Tokens::session_for`]) are signed with those digests, so they need no state of their own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use globset::{Glob, GlobSet, GlobSetBuilder};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::key::FunctionName;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The read routes (`GET`).
    Read,
    /// Publishing (`POST`).
    Write,
}

fn all_scopes() -> Vec<Scope> {
    vec![Scope::Read, Scope::Write]
}

/// One entry of `auth.tokens`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenConfig {
    /// A token that may do everything, named by its place in the list (`token-1`, …).
    Plain(SecretString),
    /// A named token with scopes and, optionally, functions.
    Named(NamedToken),
}

impl From<String> for TokenConfig {
    /// A plain token.
    fn from(token: String) -> Self {
        Self::Plain(token.into())
    }
}

/// A named token: `{name = "ci-orders", token = "…", scopes = ["write"], functions = ["orders-*"]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    /// What logs and provenance call it: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// The bearer token.
    pub token: SecretString,
    /// `read`, `write`, or both (the default).
    #[serde(default = "all_scopes")]
    pub scopes: Vec<Scope>,
    /// Function name patterns (`*` any run of characters, `?` one, `[a-z]` a class); empty
    /// (the default): every function.
    #[serde(default)]
    pub functions: Vec<String>,
}

/// Bearer-token authentication (the `[auth]` table).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted tokens. Empty: no authentication. Health endpoints are always open.
    pub tokens: Vec<TokenConfig>,
}

/// Why `auth.tokens` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth.tokens[{index}]: {reason}")]
pub struct TokenConfigError {
    /// The entry's place in the list (0-based).
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Who made a request: a token's name, what it may do, and the functions it may touch.
#[derive(Debug, Clone)]
pub struct Caller {
    name: String,
    read: bool,
    write: bool,
    /// `None`: every function.
    functions: Option<GlobSet>,
}

impl Caller {
    /// The token's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the token has `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        match scope {
            Scope::Read => self.read,
            Scope::Write => self.write,
        }
    }

    /// Whether the token may touch `function`'s packages.
    pub fn may_access(&self, function: &FunctionName) -> bool {
        self.functions.as_ref().is_none_or(|set| set.is_match(function.as_str()))
    }
}

/// The configured tokens, as digests.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Caller)>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Tokens {
    /// The tokens of `auth.tokens`, checked: names valid and unique, tokens non-empty and
    /// unique, at least one scope, patterns that parse.
    pub fn new(config: &AuthConfig) -> Result<Self, TokenConfigError> {
        let mut entries: Vec<([u8; 32], Caller)> = Vec::new();
        for (index, entry) in config.tokens.iter().enumerate() {
            let error = |reason: String| TokenConfigError { index, reason };
            let (token, caller) = match entry {
                TokenConfig::Plain(token) => (
                    token,
                    Caller { name: format!("token-{}", index + 1), read: true, write: true, functions: None },
                ),
                TokenConfig::Named(named) => {
                    if !valid_name(&named.name) {
                        return Err(error(format!(
                            "name {:?} is not 1 to 64 of A-Z a-z 0-9 . _ -",
                            named.name.chars().take(80).collect::<String>()
                        )));
                    }
                    if named.scopes.is_empty() {
                        return Err(error("scopes is empty: give read, write or both".into()));
                    }
                    let functions = if named.functions.is_empty() {
                        None
                    } else {
                        let mut set = GlobSetBuilder::new();
                        for pattern in &named.functions {
                            let glob = Glob::new(pattern).map_err(|e| error(format!("functions: {e}")))?;
                            set.add(glob);
                        }
                        Some(set.build().map_err(|e| error(format!("functions: {e}")))?)
                    };
                    let caller = Caller {
                        name: named.name.clone(),
                        read: named.scopes.contains(&Scope::Read),
                        write: named.scopes.contains(&Scope::Write),
                        functions,
                    };
                    (&named.token, caller)
                }
            };
            if token.expose_secret().is_empty() {
                return Err(error("the token is empty".into()));
            }
            let digest: [u8; 32] = Sha256::digest(token.expose_secret().as_bytes()).into();
            if entries.iter().any(|(d, _)| *d == digest) {
                return Err(error("the same token is listed twice".into()));
            }
            if entries.iter().any(|(_, c)| c.name == caller.name) {
                return Err(error(format!("the name {:?} is used twice", caller.name)));
            }
            entries.push((digest, caller));
        }
        Ok(Self { entries })
    }

    /// Whether authentication is on (some token is configured).
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The caller a presented token belongs to, compared with every configured one in constant
    /// time.
    pub fn authenticate(&self, presented: &str) -> Option<&Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (d, caller) in &self.entries {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(caller);
            }
        }
        found
    }
}

/// How long a web session lasts from its sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// What a session value's MAC covers before its expiry and token name, so that the value can
/// never be taken for another HMAC the service computes.
const SESSION_CONTEXT: &[u8] = b"lambda-packager ui session v1";

type SessionMac = Hmac<sha2::Sha256>;

/// The MAC of a session of `name` until `expiry`, keyed by the digest of the token it
/// signed in with.
fn session_mac(key: &[u8; 32], name: &str, expiry: u64) -> SessionMac {
    // HMAC pads a key shorter than the hash's block to the block with zeros (RFC 2104 §2), so
    // this is HMAC keyed by the 32 bytes, through the infallible fixed-size constructor.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = <SessionMac as KeyInit>::new(&block.into());
    mac.update(SESSION_CONTEXT);
    mac.update(b"\n");
    mac.update(expiry.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(name.as_bytes());
    mac
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Tokens {
    /// A web session for `caller`, valid until `now` + [`SESSION_TTL`]: `<expiry>.<mac>.<name>`.
    ///
    /// Stateless, so that every replica accepts every replica's sessions: the MAC is keyed by
    /// the digest of the caller's token (which each replica holds, and which never leaves the
    /// process), so the value carries the token's name but nothing from which the token can be
    /// recovered, and removing or rotating a token ends its sessions.
    pub fn session_for(&self, caller: &Caller, now: SystemTime) -> Option<String> {
        let (key, _) = self.entries.iter().find(|(_, c)| c.name == caller.name)?;
        let expiry = unix_secs(now + SESSION_TTL);
        let mac = session_mac(key, &caller.name, expiry).finalize().into_bytes();
        Some(format!("{expiry}.{}.{}", hex::encode(mac), caller.name))
    }

    /// The caller of a session value made by [`Tokens::session_for`], if its MAC is right, it
    /// has not expired at `now`, and its token is still configured.
    pub fn session_caller(&self, value: &str, now: SystemTime) -> Option<&Caller> {
        let mut parts = value.splitn(3, '.');
        let (expiry, mac, name) = (parts.next()?, parts.next()?, parts.next()?);
        let expiry: u64 = expiry.parse().ok()?;
        let mac = hex::decode(mac).ok()?;
        if expiry <= unix_secs(now) {
            return None;
        }
        let (key, caller) = self.entries.iter().find(|(_, c)| c.name == name)?;
        session_mac(key, name, expiry).verify_slice(&mac).ok()?;
        Some(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> AuthConfig {
        use figment::providers::Format as _;
        figment::Figment::new()
            .merge(figment::providers::Toml::string(toml))
            .extract()
            .expect("an [auth] table")
    }

    #[test]
    fn plain_tokens_may_do_everything_and_are_named_by_place() {
        let tokens = Tokens::new(&config(
            r#"tokens = ["first", {name = "ci", token = "second", scopes = ["read"]}, "third"]"#,
        ))
        .expect("valid");
        let third = tokens.authenticate("third").expect("known");
        assert_eq!(third.name(), "token-3");
        assert!(third.has(Scope::Read) && third.has(Scope::Write));
        let ci = tokens.authenticate("second").expect("known");
        assert_eq!(ci.name(), "ci");
        assert!(ci.has(Scope::Read) && !ci.has(Scope::Write));
        assert!(tokens.authenticate("fourth").is_none());
        assert!(tokens.authenticate("").is_none());
    }

    #[test]
    fn function_patterns_limit_a_token() {
        let tokens = Tokens::new(&config(
            r#"tokens = [{name = "orders", token = "t", functions = ["orders-*", "billing"]}]"#,
        ))
        .expect("valid");
        let caller = tokens.authenticate("t").expect("known");
        for (function, allowed) in [
            ("orders-api", true),
            ("orders-", true),
            ("billing", true),
            ("orders", false),
            ("billing-x", false),
        ] {
            assert_eq!(caller.may_access(&function.parse().expect("a name")), allowed, "{function}");
        }
    }

    #[test]
    fn a_session_names_its_token_expires_and_cannot_be_forged() {
        let tokens = Tokens::new(&config(
            r#"tokens = [{name = "ci", token = "s3cret-one"}, {name = "web", token = "s3cret-two", scopes = ["read"]}]"#,
        ))
        .expect("valid");
        let web = tokens.authenticate("s3cret-two").expect("known");
        let now = SystemTime::now();
        let value = tokens.session_for(web, now).expect("a session");
        assert!(value.ends_with(".web") && !value.contains("s3cret"), "{value}");
        assert_eq!(tokens.session_caller(&value, now).map(Caller::name), Some("web"));
        assert_eq!(
            tokens.session_caller(&value, now + SESSION_TTL - Duration::from_secs(1)).map(Caller::name),
            Some("web")
        );
        assert!(tokens.session_caller(&value, now + SESSION_TTL).is_none(), "expired");
        // Another name, another expiry or another MAC under the same value: all refused.
        let (expiry, rest) = value.split_once('.').expect("expiry");
        let mac = rest.strip_suffix(".web").expect("name");
        for forged in [
            format!("{expiry}.{mac}.ci"),
            format!("{}.{mac}.web", expiry.parse::<u64>().expect("a number") + 3600),
            format!("{expiry}.{}.web", "0".repeat(64)),
            format!("{expiry}..web"),
            "web".to_owned(),
            String::new(),
        ] {
            assert!(tokens.session_caller(&forged, now).is_none(), "{forged}");
        }
        // A service whose token of that name changed refuses the old sessions.
        let rotated =
            Tokens::new(&config(r#"tokens = [{name = "web", token = "s3cret-three"}]"#)).expect("valid");
        assert!(rotated.session_caller(&value, now).is_none());
        // Another replica with the same tokens accepts it.
        let replica = Tokens::new(&config(
            r#"tokens = [{name = "ci", token = "s3cret-one"}, {name = "web", token = "s3cret-two", scopes = ["read"]}]"#,
        ))
        .expect("valid");
        assert_eq!(replica.session_caller(&value, now).map(Caller::name), Some("web"));
    }

    #[test]
    fn bad_entries_name_their_place_and_never_the_token() {
        for (toml, expected) in [
            (r#"tokens = [{name = "a b", token = "s3cret"}]"#, "auth.tokens[0]: name"),
            (r#"tokens = ["x", {name = "n", token = "s3cret", scopes = []}]"#, "auth.tokens[1]: scopes"),
            (r#"tokens = [{name = "n", token = "s3cret", functions = ["[a"]}]"#, "auth.tokens[0]: functions"),
            (r#"tokens = ["s3cret", {name = "n", token = "s3cret"}]"#, "auth.tokens[1]: the same token"),
            (
                r#"tokens = [{name = "n", token = "s3cret"}, {name = "n", token = "other"}]"#,
                "auth.tokens[1]: the name",
            ),
            (r#"tokens = [""]"#, "auth.tokens[0]: the token is empty"),
        ] {
            let e = Tokens::new(&config(toml)).expect_err(toml).to_string();
            assert!(e.starts_with(expected), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
