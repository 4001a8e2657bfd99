//! The mirror cache: one bare repository per remote, filled by the `git` CLI, isolated from the
//! host, bounded in time and size, serialized by a file lock.
//!
//! Layout of the mirror directory:
//!
//! ```text
//! <mirror_dir>/.home/           empty HOME for every git run
//! <mirror_dir>/<key>.lock       flock'ed while a request fetches or resolves <key>
//! <mirror_dir>/<key>.git/       the bare mirror (key = sha256 of the normalized URL, 32 hex)
//! ```
//!
//! A mirror is created in a temp directory and renamed into place, so a crash never leaves a
//! half-initialized one. `git fetch` updates refs only after the objects are complete and
//! connected; what a killed fetch can leave behind (`tmp_pack_*` files, `*.lock` files) is
//! removed by the next request, under the lock, before it runs git again. Nothing deletes
//! objects (auto gc and maintenance are off), so readers need no lock once they hold a commit id.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::GitSource;
use super::remote::{RemoteUrl, Scheme};
use crate::package::CancelFlag;
use crate::source::Error;

/// How often a running git is checked for exit, timeout and size.
const POLL: Duration = Duration::from_millis(25);
/// Bytes of git's stdout kept (ls-remote output for at most two refs is tiny).
const MAX_STDOUT: usize = 1024 * 1024;
/// Bytes of git's stderr kept for error messages.
const MAX_STDERR: usize = 16 * 1024;
/// Environment variables passed through to git: proxies and TLS trust only. Everything else,
/// including `GIT_*` and `http_proxy`, is cleared.
const PASSED_ENV: &[&str] = &[
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
];

/// What the request asks for, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Want {
    /// A full commit id (or the id of a tag object).
    Commit(gix::ObjectId),
    /// Full ref names to look for on the remote: `refs/heads/X` and `refs/tags/X` for a short
    /// name, the name itself for a full one.
    Refs(Vec<String>),
}

impl Want {
    /// Parses a ref: a 40-hex commit id, a branch or tag name, or `refs/heads/...` /
    /// `refs/tags/...`. Names follow `git check-ref-format`.
    pub(crate) fn parse(reference: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Err(Error::InvalidGitRequest(format!("ref {reference:?}: {why}")));
        if reference.is_empty() {
            return invalid("the ref is empty");
        }
        if reference.len() > 255 {
            return invalid("the ref is longer than 255 bytes");
        }
        if reference.starts_with('-') {
            return invalid("a ref starting with '-' would be read as an option");
        }
        if reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return match gix::ObjectId::from_hex(reference.to_ascii_lowercase().as_bytes()) {
                Ok(id) => Ok(Self::Commit(id)),
                Err(_) => invalid("not a commit id"),
            };
        }
        let names = if reference.starts_with("refs/") {
            if !(reference.starts_with("refs/heads/") || reference.starts_with("refs/tags/")) {
                return invalid("only branches (refs/heads/...) and tags (refs/tags/...) can be packaged");
            }
            vec![reference.to_owned()]
        } else {
            vec![format!("refs/heads/{reference}"), format!("refs/tags/{reference}")]
        };
        for name in &names {
            if gix::validate::reference::name(name.as_bytes().into()).is_err() {
                return invalid("not a valid branch or tag name");
            }
        }
        Ok(Self::Refs(names))
    }
}

/// The mirror holding a resolved commit.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    /// The bare mirror.
    pub(crate) mirror: PathBuf,
    /// The commit (tags peeled).
    pub(crate) commit: gix::ObjectId,
}

/// How a git run ended when it did not exit by itself.
enum Stopped {
    Timeout,
    TooLarge,
    /// The request went away: git is killed as on a timeout, and its slot is freed at once.
    Cancelled,
}

/// When a request's git work must stop: at its fetch deadline, or as soon as the request is
/// cancelled (client gone, request timeout, shutdown), whichever comes first. Both are polled
/// every [`POLL`].
struct Until<'a> {
    deadline: Instant,
    cancel: &'a CancelFlag,
}

/// A finished git run.
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Output {
    /// The last lines of stderr, for an error message.
    fn detail(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join("; ");
        if tail.is_empty() { format!("git exited with {}", self.status) } else { tail }
    }
}

/// Stops a fetch whose objects grow past a limit.
struct SizeWatch {
    objects: PathBuf,
    before: u64,
    max: u64,
}

impl SizeWatch {
    fn new(mirror: &Path, max: u64) -> Self {
        let objects = mirror.join("objects");
        let before = dir_size(&objects);
        Self { objects, before, max }
    }

    fn grown(&self) -> u64 {
        dir_size(&self.objects).saturating_sub(self.before)
    }

    fn exceeded(&self) -> bool {
        self.grown() > self.max
    }
}

impl GitSource {
    /// Makes sure the mirror of `remote` has what `want` names, and resolves it to a commit.
    pub(crate) fn fetch_into_mirror(
        &self,
        remote: &RemoteUrl,
        want: &Want,
        cancel: &CancelFlag,
    ) -> Result<Fetched, Error> {
        let until = Until { deadline: Instant::now() + self.config.fetch_timeout, cancel };
        let key = mirror_key(remote);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.config.mirror_dir.join(format!("{key}.lock")))
            .map_err(Error::io)?;
        self.lock(&lock, remote, &until)?;
        let mirror = self.ensure_mirror(&key, remote, &until)?;
        remove_leftovers(&mirror).map_err(Error::io)?;
        let local_ref = match want {
            Want::Commit(id) => {
                let dst = format!("refs/commits/{id}");
                if local_ref_target(&mirror, &dst)? != Some(*id) {
                    self.fetch_refspec(
                        remote,
                        &mirror,
                        &format!("+{id}:{dst}"),
                        &dst,
                        &id.to_string(),
                        &until,
                    )?;
                }
                dst
            }
            Want::Refs(names) => {
                let (name, id) = self.ls_remote(remote, &mirror, names, &until)?;
                if local_ref_target(&mirror, &name)? != Some(id) {
                    self.fetch_refspec(remote, &mirror, &format!("+{name}:{name}"), &name, &name, &until)?;
                }
                name
            }
        };
        let commit = peel_to_commit(&mirror, &local_ref)?;
        drop(lock);
        Ok(Fetched { mirror, commit })
    }

    /// Takes the remote's lock, waiting at most until the deadline, and no longer than the
    /// request wants it.
    fn lock(&self, lock: &File, remote: &RemoteUrl, until: &Until<'_>) -> Result<(), Error> {
        loop {
            match lock.try_lock() {
                Ok(()) => return Ok(()),
                Err(fs::TryLockError::WouldBlock) if until.cancel.is_cancelled() => {
                    return Err(Error::Cancelled);
                }
                Err(fs::TryLockError::WouldBlock) if Instant::now() < until.deadline => thread::sleep(POLL),
                Err(fs::TryLockError::WouldBlock) => return Err(self.timeout(remote)),
                Err(fs::TryLockError::Error(e)) => return Err(Error::io(e)),
            }
        }
    }

    /// The bare mirror of `key`, created (in a temp directory, then renamed) if missing.
    /// Called with the lock held.
    fn ensure_mirror(&self, key: &str, remote: &RemoteUrl, until: &Until<'_>) -> Result<PathBuf, Error> {
        let dir = &self.config.mirror_dir;
        let mirror = dir.join(format!("{key}.git"));
        // A crash during an earlier creation leaves its temp directory; only holders of this
        // lock create one, so it is garbage.
        let init_prefix = format!("{key}.git.init-");
        for entry in fs::read_dir(dir).map_err(Error::io)? {
            let entry = entry.map_err(Error::io)?;
            if entry.file_name().to_string_lossy().starts_with(&init_prefix) {
                fs::remove_dir_all(entry.path()).map_err(Error::io)?;
            }
        }
        if mirror.is_dir() {
            return Ok(mirror);
        }
        let tmp = tempfile::Builder::new().prefix(&init_prefix).tempdir_in(dir).map_err(Error::io)?;
        let mut cmd = self.git(tmp.path(), remote.scheme());
        cmd.args(["init", "--quiet", "--bare", "--template="]).arg(tmp.path());
        let out = match self.run(cmd, until, None) {
            Ok(out) => out,
            Err(Ok(Stopped::Timeout | Stopped::TooLarge)) => return Err(self.timeout(remote)),
            Err(Ok(Stopped::Cancelled)) => return Err(Error::Cancelled),
            Err(Err(e)) => return Err(Error::io(e)),
        };
        if !out.status.success() {
            return Err(Error::Io(io::Error::other(format!("git init failed: {}", out.detail()))));
        }
        fs::rename(tmp.path(), &mirror).map_err(Error::io)?;
        // Renamed away: nothing is left for the guard to delete.
        let _ = tmp.keep();
        Ok(mirror)
    }

    /// Lists `names` on the remote; exactly one must exist.
    fn ls_remote(
        &self,
        remote: &RemoteUrl,
        mirror: &Path,
        names: &[String],
        until: &Until<'_>,
    ) -> Result<(String, gix::ObjectId), Error> {
        let mut cmd = self.git(mirror, remote.scheme());
        cmd.args(["ls-remote", "--refs", "--"]).arg(remote.as_str()).args(names);
        let out = self.run_remote(cmd, remote, until, None)?;
        if !out.status.success() {
            return Err(Error::GitFetchFailed { repo: remote.as_str().to_owned(), detail: out.detail() });
        }
        let listed = String::from_utf8_lossy(&out.stdout);
        let mut found: Vec<(String, gix::ObjectId)> = Vec::new();
        for line in listed.lines() {
            let Some((id, name)) = line.split_once('\t') else { continue };
            if !names.iter().any(|n| n == name) {
                continue;
            }
            let id = gix::ObjectId::from_hex(id.as_bytes()).map_err(|_| Error::GitFetchFailed {
                repo: remote.as_str().to_owned(),
                detail: "git ls-remote printed an invalid object id".into(),
            })?;
            found.push((name.to_owned(), id));
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::GitRefNotFound {
                repo: remote.as_str().to_owned(),
                reference: names[0].trim_start_matches("refs/heads/").to_owned(),
            }),
            _ => Err(Error::InvalidGitRequest(format!(
                "{:?} is both a branch and a tag; ask for refs/heads/... or refs/tags/...",
                names[0].trim_start_matches("refs/heads/")
            ))),
        }
    }

    /// Fetches one refspec (`+src:dst`) with depth 1 into the mirror, within the deadline and
    /// the size limit. A fetch that ends over the limit has its ref deleted again, so that the
    /// next request does not find it.
    fn fetch_refspec(
        &self,
        remote: &RemoteUrl,
        mirror: &Path,
        refspec: &str,
        dst: &str,
        requested: &str,
        until: &Until<'_>,
    ) -> Result<(), Error> {
        let watch = SizeWatch::new(mirror, self.config.max_fetch_bytes);
        let mut cmd = self.git(mirror, remote.scheme());
        cmd.args([
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            "--no-recurse-submodules",
            "--no-write-fetch-head",
            "--no-auto-maintenance",
            "--no-show-forced-updates",
            "--",
        ])
        .arg(remote.as_str())
        .arg(refspec);
        let out = self.run_remote(cmd, remote, until, Some(&watch))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // git's wording (LC_ALL=C) when the remote does not have what was asked for.
            if stderr.contains("not our ref") || stderr.contains("couldn't find remote ref") {
                return Err(Error::GitRefNotFound {
                    repo: remote.as_str().to_owned(),
                    reference: requested.trim_start_matches("refs/heads/").to_owned(),
                });
            }
            return Err(Error::GitFetchFailed { repo: remote.as_str().to_owned(), detail: out.detail() });
        }
        if watch.exceeded() {
            let mut cmd = self.git(mirror, remote.scheme());
            cmd.args(["update-ref", "-d", "--", dst]);
            // Best effort: a deadline already passed must not keep the ref alive.
            let cleanup =
                Until { deadline: Instant::now() + Duration::from_secs(10), cancel: &CancelFlag::default() };
            match self.run(cmd, &cleanup, None) {
                Ok(out) if out.status.success() => {}
                Ok(out) => return Err(Error::Io(io::Error::other(out.detail()))),
                Err(_) => return Err(Error::Io(io::Error::other("git update-ref did not finish"))),
            }
            return Err(self.too_large(remote));
        }
        Ok(())
    }

    /// Runs a git command that talks to `remote`; a stopped run leaves the mirror clean.
    fn run_remote(
        &self,
        cmd: Command,
        remote: &RemoteUrl,
        until: &Until<'_>,
        watch: Option<&SizeWatch>,
    ) -> Result<Output, Error> {
        match self.run(cmd, until, watch) {
            Ok(out) => Ok(out),
            Err(Ok(stopped)) => {
                if let Some(watch) = watch {
                    remove_leftovers(watch.objects.parent().unwrap_or(&watch.objects)).map_err(Error::io)?;
                }
                Err(match stopped {
                    Stopped::Timeout => self.timeout(remote),
                    Stopped::TooLarge => self.too_large(remote),
                    Stopped::Cancelled => Error::Cancelled,
                })
            }
            Err(Err(e)) => Err(Error::GitFetchFailed {
                repo: remote.as_str().to_owned(),
                detail: format!("could not run git: {e}"),
            }),
        }
    }

    /// A `git` command isolated from the host: no system or global config, an empty HOME, no
    /// prompts, no hooks, no redirects, no protocol but the remote's own, no background work.
    fn git(&self, git_dir: &Path, scheme: Scheme) -> Command {
        let mut cmd = Command::new(&self.config.git_binary);
        cmd.env_clear();
        cmd.env("PATH", std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin")));
        for name in PASSED_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.env("HOME", &self.home)
            .env("GIT_DIR", git_dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("LC_ALL", "C")
            .current_dir(&self.home);
        let protocol = format!("protocol.{}.allow=always", scheme.git_protocol());
        for setting in [
            "protocol.allow=never",
            &protocol,
            "protocol.version=2",
            "core.hooksPath=/dev/null",
            "core.askPass=",
            "credential.helper=",
            "http.followRedirects=false",
            "transfer.bundleURI=false",
            "fetch.recurseSubmodules=false",
            "submodule.recurse=false",
            "gc.auto=0",
            "maintenance.auto=false",
            "fetch.writeCommitGraph=false",
            // Always keep a received pack as a pack (never explode it into loose objects), so
            // the size watch sees one growing file and leftovers are easy to find.
            "transfer.unpackLimit=1",
            "fetch.unpackLimit=1",
        ] {
            cmd.arg("-c").arg(setting);
        }
        cmd
    }

    /// Runs `cmd` in its own process group until it exits, the deadline passes, the request is
    /// cancelled or the watched objects grow too large; in the last three cases the whole group
    /// (git and its helpers, such as git-remote-https and index-pack) is killed.
    fn run(
        &self,
        mut cmd: Command,
        until: &Until<'_>,
        watch: Option<&SizeWatch>,
    ) -> Result<Output, Result<Stopped, io::Error>> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().map_err(Err)?;
        let stdout = child.stdout.take().map(|r| thread::spawn(move || read_capped(r, MAX_STDOUT)));
        let stderr = child.stderr.take().map(|r| thread::spawn(move || read_capped(r, MAX_STDERR)));
        let outcome = wait(&mut child, until, watch);
        if outcome.is_err() {
            // Not yet reaped, so the group id is still this child's: kill exactly what we started.
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = child.wait();
        }
        let stdout = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
        let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        match outcome {
            Ok(status) => Ok(Output { status, stdout, stderr }),
            Err(e) => Err(e),
        }
    }

    fn timeout(&self, remote: &RemoteUrl) -> Error {
        Error::GitFetchTimeout {
            repo: remote.as_str().to_owned(),
            secs: self.config.fetch_timeout.as_secs_f64().ceil() as u64,
        }
    }

    fn too_large(&self, remote: &RemoteUrl) -> Error {
        Error::GitRepoTooLarge { repo: remote.as_str().to_owned(), max: self.config.max_fetch_bytes }
    }
}

fn wait(
    child: &mut Child,
    until: &Until<'_>,
    watch: Option<&SizeWatch>,
) -> Result<ExitStatus, Result<Stopped, io::Error>> {
    loop {
        if let Some(status) = child.try_wait().map_err(Err)? {
            return Ok(status);
        }
        if until.cancel.is_cancelled() {
            return Err(Ok(Stopped::Cancelled));
        }
        if Instant::now() >= until.deadline {
            return Err(Ok(Stopped::Timeout));
        }
        if watch.is_some_and(SizeWatch::exceeded) {
            return Err(Ok(Stopped::TooLarge));
        }
        thread::sleep(POLL);
    }
}

/// Reads a pipe to its end, keeping the first `cap` bytes.
fn read_capped(mut r: impl Read, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return kept,
        }
    }
}

/// The mirror's name: a hash of the normalized URL, so that spellings of one remote share a
/// mirror and no URL character reaches the file system.
pub(crate) fn mirror_key(remote: &RemoteUrl) -> String {
    let digest = Sha256::digest(remote.as_str().as_bytes());
    hex::encode(&digest[..16])
}

/// Total size of the files below `dir`; files that vanish while it is walked are skipped.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_size(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Removes what a killed git leaves in a mirror: temporary packs and objects (`tmp_*` under
/// `objects/`) and lock files (`*.lock` outside `objects/`). Called with the mirror's lock held,
/// when no git runs in it.
fn remove_leftovers(mirror: &Path) -> io::Result<()> {
    fn walk(dir: &Path, doomed: &dyn Fn(&str) -> bool) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if entry.file_type()?.is_dir() {
                walk(&entry.path(), doomed)?;
            } else if doomed(&name) {
                match fs::remove_file(entry.path()) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
    walk(&mirror.join("objects"), &|name| name.starts_with("tmp_"))?;
    walk(&mirror.join("refs"), &|name| name.ends_with(".lock"))?;
    for entry in fs::read_dir(mirror)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name().to_string_lossy().ends_with(".lock") {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn open_repo(mirror: &Path) -> Result<gix::Repository, Error> {
    gix::open_opts(mirror, gix::open::Options::isolated()).map_err(|e| Error::GitRead(Box::new(e)))
}

/// Where `name` points in the mirror (unpeeled), if it exists.
fn local_ref_target(mirror: &Path, name: &str) -> Result<Option<gix::ObjectId>, Error> {
    let repo = open_repo(mirror)?;
    let reference = repo.try_find_reference(name).map_err(|e| Error::GitRead(Box::new(e)))?;
    Ok(reference.and_then(|r| r.target().try_id().map(ToOwned::to_owned)))
}

/// The commit `name` points to, through annotated tags.
fn peel_to_commit(mirror: &Path, name: &str) -> Result<gix::ObjectId, Error> {
    let repo = open_repo(mirror)?;
    let read = |e: gix::Error| Error::GitRead(Box::new(e));
    let mut reference = repo.find_reference(name).map_err(read)?;
    let id = reference.peel_to_id().map_err(read)?;
    let object = repo.find_object(id).map_err(read)?.peel_tags_to_end().map_err(read)?;
    if object.kind != gix::object::Kind::Commit {
        return Err(Error::InvalidGitRequest(format!("the ref points to a {}, not a commit", object.kind)));
    }
    Ok(object.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_commit_ids_or_branch_and_tag_names() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert!(matches!(Want::parse(id), Ok(Want::Commit(c)) if c == id));
        assert!(matches!(Want::parse(&id.to_uppercase()), Ok(Want::Commit(c)) if c == id));
        assert_eq!(
            Want::parse("release/1.2").expect("valid"),
            Want::Refs(vec!["refs/heads/release/1.2".into(), "refs/tags/release/1.2".into()])
        );
        assert_eq!(Want::parse("refs/tags/v1").expect("valid"), Want::Refs(vec!["refs/tags/v1".into()]));
        for bad in [
            "",
            "-n",
            "--upload-pack=x",
            "a..b",
            "a b",
            "a~1",
            "HEAD^",
            "x.lock",
            "a//b",
            "refs/pull/1/head",
            "@{-1}",
        ] {
            assert!(matches!(Want::parse(bad), Err(Error::InvalidGitRequest(_))), "{bad:?}");
        }
    }
}
