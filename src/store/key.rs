//! Object keys: `{prefix}lambda-{function}-{sha256}.zip`, and the names they are made of.
//!
//! The key is the product's contract with deploy tools (stacker, SAM, CDK, Terraform, Serverless
//! all name packages this way), so it is built and parsed in exactly one place.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::package::Sha256Hex;

/// Longest key prefix, in bytes (S3 keys are at most 1,024 bytes).
pub const MAX_PREFIX_BYTES: usize = 512;

/// The folder, under the operator's prefix, that holds the service's own objects (the listing
/// index). No key prefix may contain it as a component, so no package can be stored inside it.
pub const RESERVED_FOLDER: &str = ".lambda-packager";

/// Why a name or key is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a valid Lambda function name.
    #[error("function names are 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    FunctionName,
    /// Not a valid key prefix.
    #[error(
        "a key prefix is empty or ends with '/', has no empty, '.', '..' or '{RESERVED_FOLDER}' component, no leading '/' and no control character, and is at most {MAX_PREFIX_BYTES} bytes"
    )]
    Prefix,
    /// Not a package key.
    #[error("not a package key of the form [prefix/]lambda-<function>-<sha256>.zip")]
    Key,
}

/// A Lambda function name, as AWS accepts it: `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionName(String);

impl FunctionName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for FunctionName {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok { Ok(Self(s.to_owned())) } else { Err(KeyError::FunctionName) }
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key prefix: empty, or free text ending in `/` with no `.`, `..` or empty components.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Joins two prefixes (an operator's, then a request's).
    pub fn join(&self, other: &KeyPrefix) -> Result<KeyPrefix, KeyError> {
        format!("{}{}", self.0, other.0).parse()
    }
}

impl FromStr for KeyPrefix {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(Self::default());
        }
        let body = s.strip_suffix('/').ok_or(KeyError::Prefix)?;
        let ok = s.len() <= MAX_PREFIX_BYTES
            && !s.chars().any(char::is_control)
            && body.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && c != RESERVED_FOLDER);
        if ok { Ok(Self(s.to_owned())) } else { Err(KeyError::Prefix) }
    }
}

/// The key of one package.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    prefix: KeyPrefix,
    function: FunctionName,
    sha256: Sha256Hex,
}

impl ObjectKey {
    /// The key of `function`'s package with digest `sha256` under `prefix`.
    pub fn package(prefix: &KeyPrefix, function: &FunctionName, sha256: Sha256Hex) -> Self {
        Self { prefix: prefix.clone(), function: function.clone(), sha256 }
    }

    /// The prefix part.
    pub fn prefix(&self) -> &KeyPrefix {
        &self.prefix
    }

    /// The function part.
    pub fn function(&self) -> &FunctionName {
        &self.function
    }

    /// The digest part.
    pub fn sha256(&self) -> Sha256Hex {
        self.sha256
    }

    /// The file name without the prefix.
    pub fn file_name(&self) -> String {
        format!("lambda-{}-{}.zip", self.function, self.sha256)
    }

    /// The MIME type stored with the object.
    pub fn content_type(&self) -> &'static str {
        "application/zip"
    }

    /// Content-addressed objects never change.
    pub fn cache_control(&self) -> &'static str {
        "public, max-age=31536000, immutable"
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}lambda-{}-{}.zip", self.prefix.as_str(), self.function, self.sha256)
    }
}

impl FromStr for ObjectKey {
    type Err = KeyError;

    /// Parses from the end, because function names may contain `-` and prefixes anything.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (prefix, name) = match s.rfind('/') {
            Some(i) => s.split_at(i + 1),
            None => ("", s),
        };
        let stem = name.strip_suffix(".zip").ok_or(KeyError::Key)?;
        let rest = stem.strip_prefix("lambda-").ok_or(KeyError::Key)?;
        let (function, sha) = rest.rsplit_once('-').ok_or(KeyError::Key)?;
        Ok(Self {
            prefix: prefix.parse()?,
            function: function.parse()?,
            sha256: sha.parse().map_err(|_| KeyError::Key)?,
        })
    }
}

/// Everything a store holds, by kind: the one type every [`Store`](super::Store) method takes
/// and every listing returns, so no `&str` key crosses the store's boundary. Each kind's name
/// is built in exactly one place ([`StoreKey::name`]) and parsed back in exactly one place
/// ([`ListPrefix::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoreKey {
    /// A package: `{prefix}lambda-{function}-{sha256}.zip`.
    Package(ObjectKey),
}

impl StoreKey {
    /// The object's name in the store.
    pub fn name(&self) -> String {
        match self {
            Self::Package(key) => key.to_string(),
        }
    }

    /// The MIME type stored with the object.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Package(key) => key.content_type(),
        }
    }

    /// The `Cache-Control` stored with the object: every object the service writes is
    /// immutable (content-addressed packages; index entries are never rewritten).
    pub fn cache_control(&self) -> &'static str {
        "public, max-age=31536000, immutable"
    }

    /// The package key, if this is one.
    pub fn as_package(&self) -> Option<&ObjectKey> {
        match self {
            Self::Package(key) => Some(key),
        }
    }
}

impl From<ObjectKey> for StoreKey {
    fn from(key: ObjectKey) -> Self {
        Self::Package(key)
    }
}

impl From<&ObjectKey> for StoreKey {
    fn from(key: &ObjectKey) -> Self {
        Self::Package(key.clone())
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// What a [`Store::list`](super::Store::list) call lists: a typed prefix, which decides the
/// raw prefix, whether deeper "folders" are included, and how returned names are parsed
/// (names that parse as no key of the expected kind are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListPrefix {
    /// One function's packages directly under `prefix` (not in deeper folders): names
    /// `{prefix}lambda-{function}-{sha256}.zip` of exactly this function (`lambda-orders-` also
    /// starts `lambda-orders-api-…` keys, which are skipped).
    Packages {
        /// The key prefix.
        prefix: KeyPrefix,
        /// The function.
        function: FunctionName,
    },
}

impl ListPrefix {
    /// The raw prefix every listed name starts with.
    pub fn raw(&self) -> String {
        match self {
            Self::Packages { prefix, function } => format!("{}lambda-{function}-", prefix.as_str()),
        }
    }

    /// Whether names in deeper folders than the prefix's are listed too (no delimiter).
    pub fn recursive(&self) -> bool {
        match self {
            Self::Packages { .. } => false,
        }
    }

    /// The key a listed name stands for, if it is one this listing returns.
    pub fn parse(&self, name: &str) -> Option<StoreKey> {
        match self {
            Self::Packages { prefix, function } => {
                let key = name.parse::<ObjectKey>().ok()?;
                (key.function() == function && key.prefix() == prefix).then_some(StoreKey::Package(key))
            }
        }
    }
}

impl Serialize for ObjectKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn function_names_follow_lambdas_rules() {
        for ok in ["a", "my-fn_2", &"x".repeat(64)] {
            assert!(ok.parse::<FunctionName>().is_ok(), "{ok}");
        }
        for bad in ["", &"x".repeat(65), "a.b", "a/b", "a b", "fn:1", "é"] {
            assert_eq!(bad.parse::<FunctionName>(), Err(KeyError::FunctionName), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_empty_or_end_with_a_slash_and_never_climb() {
        for ok in ["", "lambda/", "team a/builds/"] {
            assert!(ok.parse::<KeyPrefix>().is_ok(), "{ok:?}");
        }
        for bad in [
            "x",
            "/x/",
            "a//",
            "../",
            "a/../",
            "./",
            "a\n/",
            ".lambda-packager/",
            "ci/.lambda-packager/",
            &format!("{}/", "x".repeat(512)),
        ] {
            assert_eq!(bad.parse::<KeyPrefix>(), Err(KeyError::Prefix), "{bad:?}");
        }
    }

    #[test]
    fn keys_round_trip_through_their_string_form() {
        let prefix: KeyPrefix = "ci/builds/".parse().expect("prefix");
        let function: FunctionName = "orders-api".parse().expect("name");
        let key = ObjectKey::package(&prefix, &function, SHA.parse().expect("sha"));
        let text = key.to_string();
        assert_eq!(text, format!("ci/builds/lambda-orders-api-{SHA}.zip"));
        assert_eq!(text.parse::<ObjectKey>().expect("parses"), key);
        assert_eq!(format!("lambda-f-{SHA}.zip").parse::<ObjectKey>().expect("parses").prefix().as_str(), "");
        for bad in [
            format!("lambda-f-{SHA}.tar"),
            format!("f-{SHA}.zip"),
            "lambda-f-abc.zip".into(),
            format!("../lambda-f-{SHA}.zip"),
        ] {
            assert!(bad.parse::<ObjectKey>().is_err(), "{bad}");
        }
    }
}
