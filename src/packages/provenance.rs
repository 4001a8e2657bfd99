//! Provenance: where a package came from, stored with its object when the object is created
//! (S3 user metadata; the local store's sidecar) and read back by `get`.
//!
//! The record travels as store metadata: a flat map of `lp-*` names to US-ASCII values (S3
//! sends user metadata as `x-amz-meta-*` headers, ASCII only, at most 2 KB in all). Free-text
//! values (repository URL, ref, path, token name) are percent-encoded and capped
//! ([`MAX_VALUE_BYTES`]); a value cut to fit is named in `truncated`, so a reader never takes a
//! cut value for the whole. Objects written before provenance existed have no `lp-provenance`
//! entry and read as `None`.

use std::time::SystemTime;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::package::{FORMAT_VERSION, Sha256Hex};
use crate::store::Metadata;

/// The version of the metadata layout below (`lp-provenance`).
const LAYOUT: &str = "1";

/// Bytes of characters kept as they are in encoded values: RFC 3986's unreserved set.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Longest encoded value of each free-text field, so that the whole record stays well within
/// S3's 2 KB of user metadata (names included): 1,024 + 256 + 256 + 128 bytes of free text,
/// about 300 of fixed fields and names.
const MAX_VALUE_BYTES: [(&str, usize); 4] =
    [("git.repo", 1024), ("git.ref", 256), ("git.path", 256), ("created_by", 128)];

/// Where a package came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The canonical format version of the bytes.
    pub format_version: u32,
    /// The version of lambda-packager that built it.
    pub packager_version: String,
    /// The input format (`tar`, `tar.gz`, `zip`, `git`).
    pub input_format: String,
    /// SHA-256 of the archive as it was uploaded (`None` for git).
    pub source_sha256: Option<Sha256Hex>,
    /// The git revision, for git input.
    pub git: Option<GitProvenance>,
    /// When the object was created (the creating replica's clock).
    pub created: SystemTime,
    /// The name of the token that created it (`None` without authentication).
    pub created_by: Option<String>,
    /// Fields whose values were cut to fit the store's metadata (`git.repo`, ...).
    pub truncated: Vec<String>,
}

/// The git revision a package was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitProvenance {
    /// The remote, as requested.
    pub repo: String,
    /// The ref, as requested.
    pub reference: String,
    /// The commit it resolved to (40 hex digits).
    pub commit: String,
    /// The sub-directory packaged, if any.
    pub path: Option<String>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The longest prefix of `value` whose encoding fits `max` bytes, encoded, and whether it had
/// to be cut.
fn encode_capped(value: &str, max: usize) -> (String, bool) {
    let mut out = String::new();
    for (i, c) in value.char_indices() {
        let piece: String = utf8_percent_encode(&value[i..i + c.len_utf8()], ENCODED).collect();
        if out.len() + piece.len() > max {
            return (out, true);
        }
        out.push_str(&piece);
    }
    (out, false)
}

fn cap_of(field: &str) -> usize {
    MAX_VALUE_BYTES.iter().find(|(f, _)| *f == field).map_or(0, |(_, cap)| *cap)
}

impl Provenance {
    /// A record for a package created now by this version of the service.
    pub fn new(
        input_format: &str,
        source_sha256: Option<Sha256Hex>,
        git: Option<GitProvenance>,
        created_by: Option<String>,
    ) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            packager_version: env!("CARGO_PKG_VERSION").to_owned(),
            input_format: input_format.to_owned(),
            source_sha256,
            git,
            created: SystemTime::now(),
            created_by,
            truncated: Vec::new(),
        }
    }

    /// The record as store metadata.
    pub fn to_metadata(&self) -> Metadata {
        let mut m = Metadata::new();
        let mut truncated = self.truncated.clone();
        let mut text = |m: &mut Metadata, name: &str, field: &str, value: &str| {
            let (encoded, cut) = encode_capped(value, cap_of(field));
            if cut && !truncated.iter().any(|t| t == field) {
                truncated.push(field.to_owned());
            }
            m.insert(name.to_owned(), encoded);
        };
        m.insert("lp-provenance".into(), LAYOUT.into());
        m.insert("lp-format-version".into(), self.format_version.to_string());
        m.insert(
            "lp-packager-version".into(),
            utf8_percent_encode(&self.packager_version, ENCODED).to_string(),
        );
        m.insert("lp-input-format".into(), utf8_percent_encode(&self.input_format, ENCODED).to_string());
        if let Some(sha) = self.source_sha256 {
            m.insert("lp-source-sha256".into(), sha.to_string());
        }
        if let Some(git) = &self.git {
            text(&mut m, "lp-git-repo", "git.repo", &git.repo);
            text(&mut m, "lp-git-ref", "git.ref", &git.reference);
            m.insert("lp-git-commit".into(), utf8_percent_encode(&git.commit, ENCODED).to_string());
            if let Some(path) = &git.path {
                text(&mut m, "lp-git-path", "git.path", path);
            }
        }
        m.insert("lp-created".into(), rfc3339(self.created));
        if let Some(name) = &self.created_by {
            text(&mut m, "lp-created-by", "created_by", name);
        }
        if !truncated.is_empty() {
            m.insert("lp-truncated".into(), truncated.join(","));
        }
        m
    }

    /// The record in store metadata, or `None` for an object written without one (before
    /// provenance existed) or with one this version cannot read.
    pub fn from_metadata(m: &Metadata) -> Option<Self> {
        if m.get("lp-provenance").map(String::as_str) != Some(LAYOUT) {
            return None;
        }
        let text = |name: &str| -> Option<String> {
            let raw = m.get(name)?;
            percent_decode_str(raw).decode_utf8().ok().map(|c| c.into_owned())
        };
        let git = match (text("lp-git-repo"), text("lp-git-ref"), text("lp-git-commit")) {
            (Some(repo), Some(reference), Some(commit)) => {
                Some(GitProvenance { repo, reference, commit, path: text("lp-git-path") })
            }
            _ => None,
        };
        Some(Self {
            format_version: m.get("lp-format-version")?.parse().ok()?,
            packager_version: text("lp-packager-version")?,
            input_format: text("lp-input-format")?,
            source_sha256: m.get("lp-source-sha256").and_then(|s| s.parse().ok()),
            git,
            created: humantime::parse_rfc3339(m.get("lp-created")?).ok()?,
            created_by: text("lp-created-by"),
            truncated: m
                .get("lp-truncated")
                .map(|t| t.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(git: Option<GitProvenance>) -> Provenance {
        Provenance {
            created: humantime::parse_rfc3339("2026-12-02T10:20:30.456Z").expect("a time"),
            ..Provenance::new("tar.gz", Some(Sha256Hex::of_bytes(b"upload")), git, Some("ci-deploy".into()))
        }
    }

    #[test]
    fn a_record_round_trips_through_ascii_metadata() {
        let git = GitProvenance {
            repo: "https://git.example.com/platform/mono repo.git".into(),
            reference: "feature/ünïcode".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            path: Some("lambdas/orders api".into()),
        };
        for provenance in [record(None), record(Some(git))] {
            let m = provenance.to_metadata();
            for (name, value) in &m {
                assert!(
                    name.starts_with("lp-")
                        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "{name}"
                );
                assert!(value.bytes().all(|b| b.is_ascii_graphic()), "{name}={value:?} is not plain ASCII");
            }
            assert_eq!(m["lp-created"], "2026-12-02T10:20:30.456Z");
            assert_eq!(Provenance::from_metadata(&m), Some(provenance));
        }
    }

    #[test]
    fn objects_without_a_record_have_no_provenance() {
        assert_eq!(Provenance::from_metadata(&Metadata::new()), None);
        let mut other = Metadata::new();
        other.insert("owner".into(), "someone".into());
        assert_eq!(Provenance::from_metadata(&other), None);
    }

    #[test]
    fn overlong_values_are_cut_to_fit_and_named() {
        let git = GitProvenance {
            repo: format!("https://git.example.com/{}", "é".repeat(2000)),
            reference: "main".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            path: None,
        };
        let m = record(Some(git)).to_metadata();
        let total: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(total <= 2048, "{total} bytes of metadata");
        assert!(m["lp-git-repo"].len() <= 1024);
        let back = Provenance::from_metadata(&m).expect("a record");
        assert_eq!(back.truncated, ["git.repo"]);
        let repo = back.git.expect("git").repo;
        assert!(repo.starts_with("https://git.example.com/éé") && repo.chars().count() < 2000, "{repo}");
    }
}
