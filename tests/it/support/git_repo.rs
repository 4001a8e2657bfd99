//! Git repositories made by the tests themselves with the `git` CLI, isolated from the host's
//! git configuration and with fixed identities and dates.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A `git` command that ignores the host's configuration.
pub(crate) fn git_command() -> Command {
    let mut cmd = Command::new("git");
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .env("LC_ALL", "C");
    cmd
}

/// Runs `git` in `dir`; panics with git's stderr if it fails. Returns stdout, trimmed.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_command().current_dir(dir).args(args).output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("git prints UTF-8").trim().to_owned()
}

/// A non-bare repository in `<root>/<name>`, on branch `main`.
pub(crate) struct TestRepo {
    path: PathBuf,
}

impl TestRepo {
    /// Creates an empty repository at `root/name`.
    pub(crate) fn init(root: &Path, name: &str) -> Self {
        let path = root.join(name);
        fs::create_dir_all(&path).expect("create repo dir");
        git(&path, &["init", "--quiet", "--initial-branch=main"]);
        Self { path }
    }

    /// Creates a repository in its own temp directory (kept alive by the returned guard).
    pub(crate) fn temp() -> (TempDir, Self) {
        let root = tempfile::tempdir().expect("temp dir");
        let repo = Self::init(root.path(), "repo");
        (root, repo)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The repository's path as a string (a local remote URL).
    pub(crate) fn url(&self) -> String {
        self.path.to_str().expect("UTF-8 temp path").to_owned()
    }

    pub(crate) fn git(&self, args: &[&str]) -> String {
        git(&self.path, args)
    }

    /// Writes a regular (0644) file.
    pub(crate) fn write(&self, rel: &str, bytes: &[u8]) {
        write_file(&self.path, rel, bytes, false);
    }

    /// Creates a symlink `rel -> target`.
    pub(crate) fn symlink(&self, rel: &str, target: &str) {
        make_symlink(&self.path, rel, target);
    }

    /// Stages everything and commits; returns the commit id.
    pub(crate) fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

/// Writes `root/rel` with mode 0644 or 0755, creating directories.
pub(crate) fn write_file(root: &Path, rel: &str, bytes: &[u8], executable: bool) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("has a parent")).expect("create dirs");
    fs::write(&path, bytes).expect("write file");
    let mode = if executable { 0o755 } else { 0o644 };
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Creates the symlink `root/rel -> target`, creating directories.
pub(crate) fn make_symlink(root: &Path, rel: &str, target: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("has a parent")).expect("create dirs");
    symlink(target, &path).expect("symlink");
}

/// `n` bytes that deflate cannot shrink (xorshift), so pack sizes are predictable.
pub(crate) fn incompressible(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(n);
    out
}
