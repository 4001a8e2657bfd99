//! `GET /ui/diff?from=KEY&to=KEY`: what changed between two packages, changes first, under a
//! one-line summary ("3 changed, 1 added, exec bit flipped on bin/run").

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::package::Entry;
use super::{Layout, UiError, encode, function_url, package_url, render};
use crate::http::error::ApiError;
use crate::http::extract::package_key;
use crate::http::middleware::Access;
use crate::http::state::AppState;
use crate::packages::ArtifactDiff;
use crate::store::key::ObjectKey;

/// Most paths the summary names for flipped exec bits; past it, it counts them.
const NAMED_FLIPS: usize = 3;

/// The query of the diff page (the function page's form).
#[derive(Debug, Deserialize)]
pub(super) struct Params {
    from: Option<String>,
    to: Option<String>,
}

struct Link {
    key: String,
    url: String,
}

struct FunctionLink {
    name: String,
    url: String,
}

struct Row {
    /// `changed`, `added` or `removed` (the row's class).
    kind: &'static str,
    /// What differs, in words.
    what: &'static str,
    path: String,
    old: Option<Entry>,
    new: Option<Entry>,
}

#[derive(Template)]
#[template(path = "diff.html")]
struct DiffPage {
    layout: Layout,
    function: Option<FunctionLink>,
    from: Link,
    to: Link,
    summary: String,
    rows: Vec<Row>,
}

/// One line that says what a diff holds: contents changed, files added and removed, exec bits
/// flipped (naming the files when there are few).
pub(crate) fn summary(diff: &ArtifactDiff) -> String {
    let changed = diff.changed.iter().filter(|c| c.content).count();
    let flipped: Vec<&str> = diff.changed.iter().filter(|c| c.mode).map(|c| c.path.as_str()).collect();
    let mut parts = Vec::new();
    for (n, what) in [(changed, "changed"), (diff.added.len(), "added"), (diff.removed.len(), "removed")] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    match flipped.len() {
        0 => {}
        n if n <= NAMED_FLIPS => parts.push(format!("exec bit flipped on {}", flipped.join(", "))),
        n => parts.push(format!("exec bit flipped on {n} files")),
    }
    if parts.is_empty() {
        "Identical: the same files, contents and modes.".to_owned()
    } else {
        parts.join(", ")
    }
}

fn rows(diff: &ArtifactDiff) -> Vec<Row> {
    let changed = diff.changed.iter().map(|c| Row {
        kind: "changed",
        what: match (c.content, c.mode) {
            (true, true) => "content and exec bit",
            (true, false) => "content",
            _ => "exec bit",
        },
        path: c.path.clone(),
        old: Some(Entry::from(&c.before)),
        new: Some(Entry::from(&c.after)),
    });
    let added = diff.added.iter().map(|e| Row {
        kind: "added",
        what: "added",
        path: e.path.clone(),
        old: None,
        new: Some(Entry::from(e)),
    });
    let removed = diff.removed.iter().map(|e| Row {
        kind: "removed",
        what: "removed",
        path: e.path.clone(),
        old: Some(Entry::from(e)),
        new: None,
    });
    changed.chain(added).chain(removed).collect()
}

fn key_param(name: &str, value: Option<&str>) -> Result<ObjectKey, ApiError> {
    match value {
        Some(v) if !v.is_empty() => package_key(v),
        _ => Err(ApiError::InvalidParameter(format!("pick two packages to compare: {name} is missing"))),
    }
}

/// The diff page: the JSON API's `GET /v1/artifacts/{key}/diff/{other_key}`, for people.
pub(super) async fn page(
    State(state): State<AppState>,
    access: Access,
    Query(params): Query<Params>,
) -> Result<Response, UiError> {
    let from = key_param("from", params.from.as_deref())?;
    let to = key_param("to", params.to.as_deref())?;
    access.check(from.function())?;
    access.check(to.function())?;
    let diff = state.packages.diff(&from, &to).await?;
    let json = format!("/v1/artifacts/{}/diff/{}", encode(&from.to_string()), encode(&to.to_string()));
    let layout = Layout::new("What changed", access.name(), Some(json));
    // Two manifests may list tens of thousands of files: rendered in the pool.
    Ok(state
        .packages
        .run_blocking(move || {
            render(&DiffPage {
                layout,
                function: (from.function() == to.function()).then(|| FunctionLink {
                    name: from.function().to_string(),
                    url: function_url(from.function()),
                }),
                from: Link { key: from.to_string(), url: package_url(&from) },
                to: Link { key: to.to_string(), url: package_url(&to) },
                summary: summary(&diff),
                rows: rows(&diff),
            })
        })
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::manifest::ManifestEntry;
    use crate::packages::ChangedEntry;

    fn entry(path: &str, mode: u32, crc32: u32) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            mode,
            size: 10,
            crc32,
            compressed_size: 10,
            method: 8,
            flags: 0,
            dos_time: 0,
            dos_date: 0,
            version_made_by: 0x0314,
            extra_len: 0,
            comment_len: 0,
            internal_attributes: 0,
            local_header_offset: 0,
        }
    }

    fn key(n: char) -> ObjectKey {
        format!("lambda-f-{}.zip", n.to_string().repeat(64)).parse().expect("a key")
    }

    fn changed(path: &str, content: bool, mode: bool) -> ChangedEntry {
        let before = entry(path, 0o100644, 1);
        let after = entry(path, if mode { 0o100755 } else { 0o100644 }, if content { 2 } else { 1 });
        ChangedEntry { path: path.into(), content, mode, before, after }
    }

    fn diff(changed: Vec<ChangedEntry>, added: usize, removed: usize) -> ArtifactDiff {
        ArtifactDiff {
            from: key('a'),
            to: key('b'),
            added: (0..added).map(|i| entry(&format!("new{i}"), 0o100644, 0)).collect(),
            removed: (0..removed).map(|i| entry(&format!("old{i}"), 0o100644, 0)).collect(),
            changed,
        }
    }

    #[test]
    fn the_summary_counts_changes_and_names_flipped_exec_bits() {
        let d = diff(
            vec![changed("a.py", true, false), changed("b.py", true, false), changed("bin/run", false, true)],
            1,
            0,
        );
        assert_eq!(summary(&d), "2 changed, 1 added, exec bit flipped on bin/run");
        let d = diff(vec![changed("both", true, true)], 0, 2);
        assert_eq!(summary(&d), "1 changed, 2 removed, exec bit flipped on both");
        let many = (0..4).map(|i| changed(&format!("x{i}"), false, true)).collect();
        assert_eq!(summary(&diff(many, 0, 0)), "exec bit flipped on 4 files");
        assert_eq!(summary(&diff(vec![], 0, 0)), "Identical: the same files, contents and modes.");
    }

    #[test]
    fn changes_come_first_then_added_then_removed() {
        let d = diff(vec![changed("z", true, false)], 1, 1);
        let kinds: Vec<_> = rows(&d).iter().map(|r| (r.kind, r.path.clone())).collect();
        assert_eq!(kinds, [("changed", "z".into()), ("added", "new0".into()), ("removed", "old0".into())]);
    }
}
