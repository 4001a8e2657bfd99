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
    /// Not a commit id.
    #[error("a commit is 7 to 40 hex digits")]
    Commit,
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
    /// An entry of the listing index, under the operator's prefix.
    Index(IndexKey),
}

/// The listing index's folder below the operator's prefix.
const INDEX_FOLDER: &str = ".lambda-packager/index/v1/";

/// Which part of a function's log a slot belongs to: packages indexed when they were created
/// (`a…`, listed first), and packages stored before the index existed (`b…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// Packages indexed as they are created.
    Live,
    /// Packages found by the one-time scan of objects stored before the index existed.
    Legacy,
}

impl Segment {
    fn letter(self) -> char {
        match self {
            Self::Live => 'a',
            Self::Legacy => 'b',
        }
    }

    fn of(letter: char) -> Option<Self> {
        match letter {
            'a' => Some(Self::Live),
            'b' => Some(Self::Legacy),
            _ => None,
        }
    }
}

/// A package's identity in the index: the SHA-256 of its whole key (the same bytes under two
/// request prefixes are two packages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackageId(Sha256Hex);

impl PackageId {
    /// The id of `key`.
    pub fn of(key: &ObjectKey) -> Self {
        Self(Sha256Hex::of_bytes(key.to_string().as_bytes()))
    }
}

/// Hex digits of a git commit id: 7 to 40 lowercase hex digits (a full id, or an abbreviation
/// as `git log --oneline` shows it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommitPrefix(String);

impl CommitPrefix {
    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a whole commit id (40 digits).
    pub fn is_full(&self) -> bool {
        self.0.len() == 40
    }
}

impl FromStr for CommitPrefix {
    type Err = KeyError;

    /// Uppercase digits are accepted and lowercased, as git accepts them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
        if ok { Ok(Self(s.to_ascii_lowercase())) } else { Err(KeyError::Commit) }
    }
}

/// Where an index entry is, after the index's folder. See `packages::index` for what each
/// holds and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexEntry {
    /// `legacy/cutover`: its time divides objects stored before the index from the others.
    Cutover,
    /// `legacy/done`: the one-time scan of older objects finished.
    LegacyDone,
    /// `functions/{function}`: the function has index entries.
    Function(FunctionName),
    /// `fn/{function}/log/{a|b}{u64::MAX - k, 20 digits}`: the `k`-th slot of a segment of the
    /// function's log (inverted, so that ascending names are newest first).
    Slot {
        /// The function.
        function: FunctionName,
        /// Live or legacy.
        segment: Segment,
        /// The slot's number, from 1.
        k: u64,
    },
    /// `fn/{function}/claim/{id}.{generation, 2 digits}`: who indexes a package.
    Claim {
        /// The function.
        function: FunctionName,
        /// The package.
        package: PackageId,
        /// 0, or a takeover's number.
        generation: u8,
    },
    /// `fn/{function}/done/{id}`: the package is indexed.
    Indexed {
        /// The function.
        function: FunctionName,
        /// The package.
        package: PackageId,
    },
    /// `fn/{function}/commit/{commit}.{inverted k}.{row, 4 digits}`: a package built from a
    /// commit, by slot and row (newest first within a commit).
    Commit {
        /// The function.
        function: FunctionName,
        /// The whole commit id (40 hex digits).
        commit: CommitPrefix,
        /// The live slot holding the package's row.
        k: u64,
        /// The row within the slot.
        row: u16,
    },
    /// `fn/{function}/source/{sha256}.{inverted k}.{row}`: a package built from an upload with
    /// this digest.
    Source {
        /// The function.
        function: FunctionName,
        /// The upload's SHA-256.
        source: Sha256Hex,
        /// The live slot holding the package's row.
        k: u64,
        /// The row within the slot.
        row: u16,
    },
}

/// An index entry under an operator's prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexKey {
    /// The operator's prefix (`store.prefix`): one index per prefix.
    pub root: KeyPrefix,
    /// Which entry.
    pub entry: IndexEntry,
}

fn inverted(k: u64) -> String {
    format!("{:020}", u64::MAX - k)
}

fn uninverted(digits: &str) -> Option<u64> {
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse::<u64>().ok())
        .flatten()
        .map(|n| u64::MAX - n)
}

/// `{inverted k}.{row}` of a lookup entry's name.
fn slot_and_row(rest: &str) -> Option<(u64, u16)> {
    let (k, row) = rest.split_once('.')?;
    let row = (row.len() == 4 && row.bytes().all(|b| b.is_ascii_digit())).then(|| row.parse().ok())??;
    Some((uninverted(k)?, row))
}

impl IndexEntry {
    fn name(&self) -> String {
        match self {
            Self::Cutover => "legacy/cutover".to_owned(),
            Self::LegacyDone => "legacy/done".to_owned(),
            Self::Function(f) => format!("functions/{f}"),
            Self::Slot { function, segment, k } => {
                format!("fn/{function}/log/{}{}", segment.letter(), inverted(*k))
            }
            Self::Claim { function, package, generation } => {
                format!("fn/{function}/claim/{}.{generation:02}", package.0)
            }
            Self::Indexed { function, package } => format!("fn/{function}/done/{}", package.0),
            Self::Commit { function, commit, k, row } => {
                format!("fn/{function}/commit/{}.{}.{row:04}", commit.0, inverted(*k))
            }
            Self::Source { function, source, k, row } => {
                format!("fn/{function}/source/{source}.{}.{row:04}", inverted(*k))
            }
        }
    }

    /// The entry a name (after the index's folder) stands for.
    fn parse(name: &str) -> Option<Self> {
        let parts: Vec<&str> = name.split('/').collect();
        Some(match parts.as_slice() {
            ["legacy", "cutover"] => Self::Cutover,
            ["legacy", "done"] => Self::LegacyDone,
            ["functions", f] => Self::Function(f.parse().ok()?),
            ["fn", f, "log", slot] => {
                let mut chars = slot.chars();
                let segment = Segment::of(chars.next()?)?;
                Self::Slot { function: f.parse().ok()?, segment, k: uninverted(chars.as_str())? }
            }
            ["fn", f, "claim", claim] => {
                let (id, generation) = claim.split_once('.')?;
                let generation = (generation.len() == 2).then(|| generation.parse().ok())??;
                Self::Claim { function: f.parse().ok()?, package: PackageId(id.parse().ok()?), generation }
            }
            ["fn", f, "done", id] => {
                Self::Indexed { function: f.parse().ok()?, package: PackageId(id.parse().ok()?) }
            }
            ["fn", f, "commit", entry] => {
                let (commit, rest) = entry.split_once('.')?;
                let commit: CommitPrefix = commit.parse().ok().filter(CommitPrefix::is_full)?;
                let (k, row) = slot_and_row(rest)?;
                Self::Commit { function: f.parse().ok()?, commit, k, row }
            }
            ["fn", f, "source", entry] => {
                let (source, rest) = entry.split_once('.')?;
                let (k, row) = slot_and_row(rest)?;
                Self::Source { function: f.parse().ok()?, source: source.parse().ok()?, k, row }
            }
            _ => return None,
        })
    }
}

impl StoreKey {
    /// The object's name in the store.
    pub fn name(&self) -> String {
        match self {
            Self::Package(key) => key.to_string(),
            Self::Index(IndexKey { root, entry }) => {
                format!("{}{INDEX_FOLDER}{}", root.as_str(), entry.name())
            }
        }
    }

    /// The MIME type stored with the object.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Package(key) => key.content_type(),
            Self::Index(_) => "application/json",
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
            Self::Index(_) => None,
        }
    }

    /// The index entry, if this is one.
    pub fn as_index(&self) -> Option<&IndexEntry> {
        match self {
            Self::Index(key) => Some(&key.entry),
            Self::Package(_) => None,
        }
    }

    /// The index entry `entry` under the operator's prefix `root`.
    pub fn index(root: &KeyPrefix, entry: IndexEntry) -> Self {
        Self::Index(IndexKey { root: root.clone(), entry })
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
    /// Every package under `prefix`, in any folder below it, of any function (the scan of
    /// objects stored before the index existed).
    AllPackages {
        /// The operator's prefix.
        prefix: KeyPrefix,
    },
    /// The index's function markers.
    Functions {
        /// The operator's prefix.
        root: KeyPrefix,
    },
    /// A function's log slots, newest first: both segments (live, then legacy), or one.
    Log {
        /// The operator's prefix.
        root: KeyPrefix,
        /// The function.
        function: FunctionName,
        /// One segment only.
        segment: Option<Segment>,
    },
    /// The claims on one package.
    Claims {
        /// The operator's prefix.
        root: KeyPrefix,
        /// The function.
        function: FunctionName,
        /// The package.
        package: PackageId,
    },
    /// A function's packages built from commits that start with these digits.
    Commits {
        /// The operator's prefix.
        root: KeyPrefix,
        /// The function.
        function: FunctionName,
        /// The commit, whole or abbreviated.
        commit: CommitPrefix,
    },
    /// A function's packages built from uploads with this digest.
    Sources {
        /// The operator's prefix.
        root: KeyPrefix,
        /// The function.
        function: FunctionName,
        /// The upload's SHA-256.
        source: Sha256Hex,
    },
}

impl ListPrefix {
    /// The raw prefix every listed name starts with.
    pub fn raw(&self) -> String {
        let index = |root: &KeyPrefix, rest: String| format!("{}{INDEX_FOLDER}{rest}", root.as_str());
        match self {
            Self::Packages { prefix, function } => format!("{}lambda-{function}-", prefix.as_str()),
            Self::AllPackages { prefix } => prefix.as_str().to_owned(),
            Self::Functions { root } => index(root, "functions/".into()),
            Self::Log { root, function, segment } => index(
                root,
                format!(
                    "fn/{function}/log/{}",
                    segment.map(Segment::letter).map(String::from).unwrap_or_default()
                ),
            ),
            Self::Claims { root, function, package } => {
                index(root, format!("fn/{function}/claim/{}.", package.0))
            }
            Self::Commits { root, function, commit } => {
                index(root, format!("fn/{function}/commit/{}", commit.0))
            }
            Self::Sources { root, function, source } => {
                index(root, format!("fn/{function}/source/{source}."))
            }
        }
    }

    /// Whether names in deeper folders than the prefix's are listed too (no delimiter).
    pub fn recursive(&self) -> bool {
        matches!(self, Self::AllPackages { .. })
    }

    /// The key a listed name stands for, if it is one this listing returns.
    pub fn parse(&self, name: &str) -> Option<StoreKey> {
        let index = |root: &KeyPrefix| -> Option<IndexEntry> {
            IndexEntry::parse(name.strip_prefix(root.as_str())?.strip_prefix(INDEX_FOLDER)?)
        };
        let entry = match self {
            Self::Packages { prefix, function } => {
                let key = name.parse::<ObjectKey>().ok()?;
                return (key.function() == function && key.prefix() == prefix).then_some(StoreKey::Package(key));
            }
            Self::AllPackages { .. } => return name.parse::<ObjectKey>().ok().map(StoreKey::Package),
            Self::Functions { root } => (root, index(root).filter(|e| matches!(e, IndexEntry::Function(_)))?),
            Self::Log { root, function: f, segment: s } => (
                root,
                index(root).filter(
                    |e| matches!(e, IndexEntry::Slot { function, segment, .. } if function == f && s.is_none_or(|s| s == *segment)),
                )?,
            ),
            Self::Claims { root, function: f, package: p } => (
                root,
                index(root).filter(|e| matches!(e, IndexEntry::Claim { function, package, .. } if function == f && package == p))?,
            ),
            Self::Commits { root, function: f, commit: c } => (
                root,
                index(root).filter(
                    |e| matches!(e, IndexEntry::Commit { function, commit, .. } if function == f && commit.0.starts_with(&c.0)),
                )?,
            ),
            Self::Sources { root, function: f, source: s } => (
                root,
                index(root).filter(|e| matches!(e, IndexEntry::Source { function, source, .. } if function == f && source == s))?,
            ),
        };
        Some(StoreKey::index(entry.0, entry.1))
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

    fn index(entry: IndexEntry) -> StoreKey {
        StoreKey::index(&"ops/".parse().expect("prefix"), entry)
    }

    #[test]
    fn index_names_round_trip_through_the_listing_that_returns_them() {
        let function: FunctionName = "orders".parse().expect("name");
        let key = ObjectKey::package(&KeyPrefix::default(), &function, SHA.parse().expect("sha"));
        let package = PackageId::of(&key);
        let commit: CommitPrefix = "0123456789abcdef0123456789abcdef01234567".parse().expect("commit");
        let root: KeyPrefix = "ops/".parse().expect("prefix");
        let f = || function.clone();
        let cases = [
            (IndexEntry::Function(f()), ListPrefix::Functions { root: root.clone() }),
            (
                IndexEntry::Slot { function: f(), segment: Segment::Live, k: 7 },
                ListPrefix::Log { root: root.clone(), function: f(), segment: None },
            ),
            (
                IndexEntry::Slot { function: f(), segment: Segment::Legacy, k: 1 },
                ListPrefix::Log { root: root.clone(), function: f(), segment: Some(Segment::Legacy) },
            ),
            (
                IndexEntry::Claim { function: f(), package, generation: 3 },
                ListPrefix::Claims { root: root.clone(), function: f(), package },
            ),
            (
                IndexEntry::Commit { function: f(), commit: commit.clone(), k: 9, row: 2 },
                ListPrefix::Commits {
                    root: root.clone(),
                    function: f(),
                    commit: "0123456".parse().expect("digits"),
                },
            ),
            (
                IndexEntry::Source { function: f(), source: SHA.parse().expect("sha"), k: 9, row: 0 },
                ListPrefix::Sources { root: root.clone(), function: f(), source: SHA.parse().expect("sha") },
            ),
        ];
        for (entry, listing) in cases {
            let key = index(entry);
            let name = key.name();
            assert!(name.starts_with("ops/.lambda-packager/index/v1/"), "{name}");
            assert!(name.starts_with(&listing.raw()), "{name} is under {}", listing.raw());
            assert_eq!(listing.parse(&name), Some(key), "{name}");
        }
        // A name of one kind is not returned by a listing of another, nor of another function.
        let slot = index(IndexEntry::Slot { function: f(), segment: Segment::Live, k: 7 }).name();
        assert_eq!(
            ListPrefix::Log { root: root.clone(), function: f(), segment: Some(Segment::Legacy) }
                .parse(&slot),
            None
        );
        assert_eq!(
            ListPrefix::Log { root, function: "orders-api".parse().expect("name"), segment: None }
                .parse(&slot),
            None
        );
    }

    #[test]
    fn ascending_names_list_slots_newest_first_and_live_before_legacy() {
        let function: FunctionName = "f".parse().expect("name");
        let slot = |segment, k| index(IndexEntry::Slot { function: function.clone(), segment, k }).name();
        let mut names = vec![
            slot(Segment::Legacy, 2),
            slot(Segment::Live, 1),
            slot(Segment::Legacy, 1),
            slot(Segment::Live, 10),
            slot(Segment::Live, 9),
        ];
        names.sort();
        assert_eq!(
            names,
            [
                slot(Segment::Live, 10),
                slot(Segment::Live, 9),
                slot(Segment::Live, 1),
                slot(Segment::Legacy, 2),
                slot(Segment::Legacy, 1)
            ]
        );
        // Function markers sort by the names themselves (no trailing character to reorder
        // `orders` and `orders-api`).
        let marker = |f: &str| index(IndexEntry::Function(f.parse().expect("name"))).name();
        let mut markers = vec![marker("orders-api"), marker("orders"), marker("a_b"), marker("B")];
        markers.sort();
        assert_eq!(markers, [marker("B"), marker("a_b"), marker("orders"), marker("orders-api")]);
    }

    #[test]
    fn commits_are_seven_to_forty_hex_digits() {
        assert_eq!("ABCDEF1".parse::<CommitPrefix>().expect("upper case").as_str(), "abcdef1");
        for bad in ["abcdef", "ghijklm", &"a".repeat(41), ""] {
            assert_eq!(bad.parse::<CommitPrefix>(), Err(KeyError::Commit), "{bad}");
        }
    }
}
