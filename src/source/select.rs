//! Which files of the input go into the package: sub-path, strip-components, include/exclude.
//!
//! Patterns are gitignore patterns, matched by the `ignore` crate (`*.py` matches at any depth,
//! `test/` means that directory and everything below it, `/x` is anchored at the package root,
//! `**` spans directories). Patterns are matched against paths *in the package*, after
//! `strip_components` and `path` were applied, so the same selection means the same thing for
//! every input kind.

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};

use super::Error;
use crate::package::tree::validate_component;

/// Most patterns of each kind one request may give.
pub const MAX_PATTERNS: usize = 256;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// Excluded unless `default_excludes` is turned off: version-control metadata and files that
/// differ from machine to machine (`.pyc` files embed source mtimes) and make hashes drift.
pub const DEFAULT_EXCLUDES: &[&str] = &[".git/", ".hg/", ".svn/", ".DS_Store", "__pycache__/"];

/// The selection options, as a user gives them (CLI flags, query parameters, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Selection {
    /// A directory of the input that becomes the root of the package.
    pub path: Option<String>,
    /// Leading path components removed from every input path, like tar's option; entries with
    /// no component left are dropped.
    pub strip_components: u32,
    /// When not empty, only files matching one of these patterns are kept.
    pub include: Vec<String>,
    /// Files matching one of these patterns are removed (after includes).
    pub exclude: Vec<String>,
    /// Whether [`DEFAULT_EXCLUDES`] apply.
    pub default_excludes: bool,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            path: None,
            strip_components: 0,
            include: Vec::new(),
            exclude: Vec::new(),
            default_excludes: true,
        }
    }
}

/// A [`Selection`] checked and compiled.
#[derive(Debug)]
pub(crate) struct Selector {
    /// Components of the sub-path (empty: the whole input).
    pub(crate) sub: Vec<String>,
    /// Components to strip.
    pub(crate) strip: usize,
    include: Option<Gitignore>,
    exclude: Gitignore,
}

impl Selector {
    pub(crate) fn new(selection: &Selection) -> Result<Self, Error> {
        if let Some(p) = selection.path.as_deref().filter(|p| p.starts_with('/')) {
            // Read as relative, `/etc` would silently mean `etc`: a differential with every
            // tool that reads it as absolute. The input has no absolute paths, so refuse it.
            return Err(Error::InvalidSelection(format!(
                "path {p:?}: the path is absolute; give it relative to the input's root"
            )));
        }
        let sub = match selection.path.as_deref().map(|p| p.trim_end_matches('/')) {
            None | Some("") | Some(".") => Vec::new(),
            Some(p) => p
                .split('/')
                .map(|c| {
                    validate_component(c)
                        .map(|()| c.to_owned())
                        .map_err(|reason| Error::InvalidSelection(format!("path {p:?}: {reason}")))
                })
                .collect::<Result<_, _>>()?,
        };
        let include =
            if selection.include.is_empty() { None } else { Some(compile("include", &selection.include)?) };
        let mut excludes: Vec<String> = Vec::new();
        if selection.default_excludes {
            excludes.extend(DEFAULT_EXCLUDES.iter().map(|s| (*s).to_owned()));
        }
        excludes.extend(selection.exclude.iter().cloned());
        Ok(Self {
            sub,
            strip: usize::try_from(selection.strip_components).unwrap_or(usize::MAX),
            include,
            exclude: compile("exclude", &excludes)?,
        })
    }

    /// What the patterns say about the directory at `path` (relative to the package root), whose
    /// parent directory is in state `parent`.
    ///
    /// gitignore semantics ask for the nearest match walking up from a path: the path itself,
    /// then its parent, and so on (`matched_path_or_any_parents`). The walk descends from the
    /// root, so it carries that nearest match down instead of walking up again for every file:
    /// one match per node, instead of one per node and ancestor (which, on a deep tree or deep
    /// link copies, is most of the walk's time).
    pub(crate) fn dir_state(&self, path: &str, parent: DirState) -> DirState {
        DirState {
            include: self
                .include
                .as_ref()
                .map_or(Verdict::None, |inc| Verdict::of(inc.matched(path, true)).or(parent.include)),
            exclude: Verdict::of(self.exclude.matched(path, true)).or(parent.exclude),
        }
    }

    /// Whether a file at `path` (relative to the package root), in a directory in state `parent`,
    /// goes into the package.
    pub(crate) fn keeps_file_in(&self, path: &str, parent: DirState) -> bool {
        let included = self
            .include
            .as_ref()
            .is_none_or(|inc| Verdict::of(inc.matched(path, false)).or(parent.include) == Verdict::Ignore);
        included && Verdict::of(self.exclude.matched(path, false)).or(parent.exclude) != Verdict::Ignore
    }

    /// Whether nothing below a directory in state `state` can be kept, so it need not be read.
    /// Only exclusions prune, and only when no `!` pattern could bring a file back.
    pub(crate) fn prunes(&self, state: DirState) -> bool {
        self.exclude.num_whitelists() == 0 && state.exclude == Verdict::Ignore
    }

    /// The state of the directory at `path`, computed from the root down.
    #[cfg(test)]
    fn state_of(&self, path: &str) -> DirState {
        let mut state = DirState::default();
        for (i, _) in path.match_indices('/').chain([(path.len(), "")]) {
            state = self.dir_state(&path[..i], state);
        }
        state
    }

    /// Whether a file at `path` (relative to the package root) goes into the package.
    #[cfg(test)]
    pub(crate) fn keeps_file(&self, path: &str) -> bool {
        let parent = path.rfind('/').map_or(DirState::default(), |i| self.state_of(&path[..i]));
        self.keeps_file_in(path, parent)
    }

    /// Whether nothing below the directory at `path` can be kept.
    #[cfg(test)]
    pub(crate) fn prunes_dir(&self, path: &str) -> bool {
        self.prunes(self.state_of(path))
    }
}

/// The nearest pattern match of a directory or one of its ancestors, for each matcher: what a
/// file below it inherits when no pattern names the file itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DirState {
    include: Verdict,
    exclude: Verdict,
}

/// The outcome of one gitignore match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Verdict {
    #[default]
    None,
    Ignore,
    Whitelist,
}

impl Verdict {
    fn of<T>(m: Match<T>) -> Self {
        match m {
            Match::None => Self::None,
            Match::Ignore(_) => Self::Ignore,
            Match::Whitelist(_) => Self::Whitelist,
        }
    }

    /// This verdict, or the inherited one when there is none.
    fn or(self, inherited: Self) -> Self {
        if self == Self::None { inherited } else { self }
    }
}

fn compile(kind: &str, patterns: &[String]) -> Result<Gitignore, Error> {
    if patterns.len() > MAX_PATTERNS {
        return Err(Error::InvalidSelection(format!("more than {MAX_PATTERNS} {kind} patterns")));
    }
    let mut builder = GitignoreBuilder::new("");
    // git reads an unclosed `[` as a class that matches nothing, the ignore crate (by default)
    // as a literal `[`: refuse the pattern instead of picking one reading.
    builder.allow_unclosed_class(false);
    for p in patterns {
        if p.len() > MAX_PATTERN_BYTES || p.contains(['\n', '\r', '\0']) {
            return Err(Error::InvalidPattern {
                pattern: p.chars().take(64).collect(),
                reason: format!("patterns are single lines of at most {MAX_PATTERN_BYTES} bytes"),
            });
        }
        builder
            .add_line(None, p)
            .map_err(|e| Error::InvalidPattern { pattern: p.clone(), reason: e.to_string() })?;
    }
    builder.build().map_err(|e| Error::InvalidPattern { pattern: patterns.join(" "), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &[&str] = &[
        "f1.py",
        "f1.pyc",
        "__init__.py",
        "test/__init__.py",
        "test/f1.py",
        "test/f1.pyc",
        "test2/test.txt",
    ];

    fn kept(include: &[&str], exclude: &[&str]) -> Vec<&'static str> {
        let sel = Selection {
            include: include.iter().map(|s| (*s).to_owned()).collect(),
            exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
            ..Selection::default()
        };
        let selector = Selector::new(&sel).expect("valid selection");
        let mut out: Vec<_> = TREE.iter().copied().filter(|p| selector.keeps_file(p)).collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn includes_keep_only_matching_files_at_any_depth_and_whole_directories() {
        assert_eq!(
            kept(&["*.py", "test2/"], &[]),
            ["__init__.py", "f1.py", "test/__init__.py", "test/f1.py", "test2/test.txt"]
        );
    }

    #[test]
    fn excludes_remove_matching_files_and_directories() {
        assert_eq!(kept(&[], &["*.pyc", "test/"]), ["__init__.py", "f1.py", "test2/test.txt"]);
    }

    #[test]
    fn excludes_apply_after_includes() {
        assert_eq!(kept(&["*.py"], &["test/"]), ["__init__.py", "f1.py"]);
    }

    #[test]
    fn default_excludes_drop_vcs_and_bytecode_caches_unless_turned_off() {
        let on = Selector::new(&Selection::default()).expect("valid");
        for p in [
            ".git/config",
            "a/.git/HEAD",
            "__pycache__/x.pyc",
            "a/__pycache__/y",
            ".DS_Store",
            "a/.svn/x",
            ".hg/x",
        ] {
            assert!(!on.keeps_file(p), "{p}");
        }
        assert!(on.keeps_file(".gitignore"));
        assert!(on.prunes_dir(".git"));
        let off =
            Selector::new(&Selection { default_excludes: false, ..Selection::default() }).expect("valid");
        assert!(off.keeps_file(".git/config"));
        assert!(!off.prunes_dir(".git"));
    }

    #[test]
    fn negated_excludes_disable_pruning() {
        let sel = Selection { exclude: vec!["test/".into(), "!test/keep.py".into()], ..Selection::default() };
        let s = Selector::new(&sel).expect("valid");
        assert!(!s.prunes_dir("test"));
        assert!(s.keeps_file("test/keep.py"));
        assert!(!s.keeps_file("test/other.py"));
    }

    #[test]
    fn sub_paths_must_be_plain_relative_directories() {
        for bad in ["../x", "a/../b", "a//b", "a\\b"] {
            let sel = Selection { path: Some(bad.into()), ..Selection::default() };
            assert!(matches!(Selector::new(&sel), Err(Error::InvalidSelection(_))), "{bad}");
        }
        let sel = Selection { path: Some("src/fn/".into()), ..Selection::default() };
        assert_eq!(Selector::new(&sel).expect("valid").sub, ["src", "fn"]);
        for absolute in ["/etc", "/", "//src/fn"] {
            let sel = Selection { path: Some(absolute.into()), ..Selection::default() };
            let err = Selector::new(&sel).expect_err("an absolute path");
            assert!(
                matches!(&err, Error::InvalidSelection(m) if m.contains("absolute")),
                "{absolute}: {err}"
            );
        }
    }

    #[test]
    fn an_unclosed_character_class_is_an_invalid_pattern() {
        for pattern in ["[", "a[bc", "*.py[", "!["] {
            let sel = Selection { include: vec![pattern.into()], ..Selection::default() };
            assert!(matches!(Selector::new(&sel), Err(Error::InvalidPattern { .. })), "{pattern}");
        }
        let closed = Selection { include: vec!["[ab].py".into(), "\\[x".into()], ..Selection::default() };
        assert!(Selector::new(&closed).is_ok(), "closed classes and escaped brackets are fine");
    }

    #[test]
    fn states_carried_down_the_tree_agree_with_matching_every_ancestor() {
        let selections = [
            (vec![], vec!["test/", "*.pyc"]),
            (vec!["*.py", "lib/"], vec!["lib/vendor/"]),
            (vec!["a/"], vec!["a/b/", "!a/b/keep.py"]),
            (vec!["/x/**/y.txt"], vec!["**/z/"]),
        ];
        let paths = [
            "f.py",
            "a/b/keep.py",
            "a/b/c.py",
            "a/c.txt",
            "lib/x.so",
            "lib/vendor/v.py",
            "test/t.py",
            "deep/test/t.py",
            "x/1/2/y.txt",
            "x/z/y.txt",
            "q/x/1/y.txt",
            "m.pyc",
            "a/b/keep.py/x",
        ];
        for (include, exclude) in selections {
            let sel = Selection {
                include: include.iter().map(|s| (*s).to_owned()).collect(),
                exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
                ..Selection::default()
            };
            let selector = Selector::new(&sel).expect("valid");
            for path in paths {
                let incl = selector
                    .include
                    .as_ref()
                    .is_none_or(|inc| inc.matched_path_or_any_parents(path, false).is_ignore());
                let expected = incl && !selector.exclude.matched_path_or_any_parents(path, false).is_ignore();
                assert_eq!(selector.keeps_file(path), expected, "{include:?} {exclude:?} {path}");
                let pruned = selector.exclude.num_whitelists() == 0
                    && selector.exclude.matched_path_or_any_parents(path, true).is_ignore();
                assert_eq!(selector.prunes_dir(path), pruned, "{include:?} {exclude:?} dir {path}");
            }
        }
    }
}
