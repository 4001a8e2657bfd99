//! Command-line interface: `serve` runs the service, `pack` builds a package offline with the
//! bytes the service would produce, `push` sends a source to a server.
//!
//! Exit status: 0 on success, 2 when the input or the command line is at fault (clap's own
//! usage errors exit 2 as well), 1 when this machine, the network or the server is.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::client::{PushInput, ServerUrl};
use crate::package::{self, EntryCache, Limits, PackOptions};
use crate::packages::{self, BuildError, Input};
use crate::source::git::{GitConfig, GitRequest, GitRevision, GitSource};
use crate::source::{self, Selection};
use crate::store::key::{FunctionName, KeyPrefix, ObjectKey};

/// Turns a source tree into a byte-for-byte reproducible AWS Lambda zip named by its SHA-256.
#[derive(Debug, Parser)]
#[command(name = "lambda-packager", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (local store in ./artifacts unless configured otherwise).
    Serve(ServeArgs),
    /// Build the canonical zip of a directory, an archive or a git commit and print its key and
    /// digest as JSON.
    // The two forms, spelled out: clap's generated line mixes them (`--git <REPO> --ref <REF>
    // [SOURCE]`), which is exactly what it refuses.
    #[command(override_usage = PACK_USAGE)]
    Pack(PackArgs),
    /// Send a directory, an archive file or stdin to a lambda-packager server and print its
    /// answer as JSON.
    Push(PushArgs),
}

/// The usage lines of `pack`: a local source, or a git commit.
const PACK_USAGE: &str = "lambda-packager pack [OPTIONS] <SOURCE>
       lambda-packager pack [OPTIONS] --git <REPO> --ref <REF>";

/// Arguments of `push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// A directory (its files are selected here and only those are sent), an archive file (tar,
    /// tar.gz or zip: sent as it is, the server applies the selection), or `-` for an archive
    /// on stdin. Either is packed here first, and not sent if the server has its package.
    #[arg(value_name = "INPUT")]
    pub input: String,
    /// Base URL of the server, with its scheme: http://127.0.0.1:8080, https://packager.internal.
    #[arg(long, value_name = "URL", env = "LAMBDA_PACKAGER_SERVER")]
    pub server: ServerUrl,
    /// Lambda function name.
    #[arg(long, value_name = "NAME")]
    pub function: FunctionName,
    /// Bearer token (prefer the environment variable to keep it out of shell history).
    #[arg(long, value_name = "T", env = "LAMBDA_PACKAGER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The request's key prefix, which the server puts after its own store.prefix (the server
    /// must allow per-request prefixes).
    #[arg(long, value_name = "P")]
    pub prefix: Option<KeyPrefix>,
    /// Compute the key on the server without storing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Upload even if the server already has the package (by default push packs the input
    /// here and asks first, and uploads nothing the server has).
    #[arg(long)]
    pub force_upload: bool,
    /// Which files to package (applied before the upload for a directory, by the server for an
    /// archive).
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// The compressed-entry cache of the local pack (not used with --force-upload).
    #[command(flatten)]
    pub cache: CacheArgs,
}

impl PushArgs {
    /// Uploads the input and returns the server's answer.
    pub fn run(self) -> Result<serde_json::Value, CommandError> {
        let input = match open_input(&self.input, &Limits::default())? {
            LocalInput::Directory(dir) => PushInput::Directory(dir),
            LocalInput::Archive { file, name } => PushInput::Archive { file, name },
        };
        let request = crate::client::PushRequest {
            server: &self.server,
            function: &self.function,
            token: self.token.as_deref(),
            prefix: self.prefix.as_ref(),
            dry_run: self.dry_run,
            force_upload: self.force_upload,
            cache: if self.force_upload { None } else { self.cache.open() },
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        let answer = crate::client::push(input, &self.selection.selection(), &request);
        CacheArgs::report(request.cache.as_ref());
        answer.map_err(|e| CommandError { code: e.code(), message: report(&e), user_error: e.user_error() })
    }
}

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); every key can also be set by a LAMBDA_PACKAGER_* variable.
    #[arg(long, value_name = "FILE", env = crate::config::CONFIG_PATH_ENV)]
    pub config: Option<PathBuf>,
}

impl ServeArgs {
    /// Loads the configuration and runs the service until SIGTERM or SIGINT.
    pub fn run(self) -> Result<(), CommandError> {
        let config = crate::config::Config::load(self.config.as_deref()).map_err(|e| CommandError {
            code: "invalid_config".into(),
            message: e.to_string(),
            user_error: true,
        })?;
        crate::telemetry::init_tracing(&config.log);
        let failed = |e: &dyn std::fmt::Display| CommandError {
            code: "serve_failed".into(),
            message: e.to_string(),
            user_error: false,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            // Blocking threads serve the packaging pool (bounded by its semaphore) and short
            // file operations of the store and uploads.
            .max_blocking_threads(config.pack.workers.get() * 2 + 32)
            .build()
            .map_err(|e| failed(&e))?;
        let result = runtime.block_on(crate::server::run(config));
        // Dropping a runtime waits for its blocking threads without limit. By now the grace
        // period is over and every request's work was cancelled, so it ends at its next check;
        // work stuck in a system call (a hung file system) must not keep the process alive.
        runtime.shutdown_timeout(BLOCKING_SHUTDOWN_WAIT);
        result.map_err(|e| failed(&format!("{e:#}")))
    }
}

/// How long `serve` waits, after the drain, for blocking work that was cancelled to return.
/// Cancelled work stops within one check (a decode buffer, a walk step, a 25 ms git poll, a
/// 128 KiB read of an entry); this is only the bound for work that cannot see its flag.
const BLOCKING_SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Selection flags, shared by every command that reads a source tree.
#[derive(Debug, Clone, Args)]
pub struct SelectionArgs {
    /// Directory of the input that becomes the root of the package.
    #[arg(long, value_name = "SUB")]
    pub path: Option<String>,
    /// Remove this many leading path components from every input path, like tar.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub strip_components: u32,
    /// Keep only files matching this gitignore-style pattern (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub include: Vec<String>,
    /// Remove files matching this gitignore-style pattern (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Keep .git/, .hg/, .svn/, .DS_Store and __pycache__/, which are excluded by default.
    #[arg(long)]
    pub no_default_excludes: bool,
}

impl SelectionArgs {
    /// The selection these flags describe.
    pub fn selection(&self) -> Selection {
        Selection {
            path: self.path.clone(),
            strip_components: self.strip_components,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            default_excludes: !self.no_default_excludes,
        }
    }
}

/// Where `pack --git` gets a commit from.
#[derive(Debug, Clone, Args)]
pub struct GitArgs {
    /// Package a commit of this git repository instead of SOURCE: an https:// URL, or the path
    /// of a local repository (or a file:// URL). ssh remotes are not supported. Only this
    /// remote is fetched; the files come from the commit's git objects (no checkout, no
    /// .gitattributes filters, no LFS, no submodules).
    #[arg(long = "git", value_name = "REPO", requires = "reference")]
    pub git: Option<String>,
    /// With --git: the branch, tag, refs/heads/..., refs/tags/... or 40-hex commit to package.
    #[arg(long = "ref", value_name = "REF", requires = "git")]
    pub reference: Option<String>,
    /// With --git: the cache of bare mirrors (one per remote, reused by later runs, safe to
    /// delete). [default: $XDG_CACHE_HOME/lambda-packager/git, else
    /// $HOME/.cache/lambda-packager/git, else lambda-packager-git in the temp directory]
    #[arg(long, value_name = "DIR", env = "LAMBDA_PACKAGER_GIT_CACHE")]
    pub git_cache: Option<PathBuf>,
    /// With --git: give up when listing and fetching take longer than this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub git_timeout: u64,
    /// With --git: refuse a fetch that adds more than this many bytes to the mirror.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub git_max_fetch_bytes: u64,
}

impl GitArgs {
    /// The git input these flags describe, if --git was given: the request, the git sources
    /// that allow exactly its remote, and the repository as the user wrote it.
    fn input(&self) -> Result<Option<(GitRequest, GitSource, String)>, CommandError> {
        let (Some(repo), Some(reference)) = (&self.git, &self.reference) else { return Ok(None) };
        // A path the user can see is taken as a local repository, relative to the current
        // directory; the URL rules want it absolute.
        let remote = match Path::new(repo).canonicalize() {
            Ok(path) if !repo.contains("://") => path.to_string_lossy().into_owned(),
            _ => repo.clone(),
        };
        let config = GitConfig {
            mirror_dir: self.git_cache.clone().unwrap_or_else(default_git_cache),
            fetch_timeout: Duration::from_secs(self.git_timeout),
            max_fetch_bytes: self.git_max_fetch_bytes,
            ..GitConfig::default()
        };
        let source = GitSource::for_remote(&remote, config).map_err(BuildError::from)?;
        let request = GitRequest { repo: remote, reference: reference.clone(), path: None };
        Ok(Some((request, source, repo.clone())))
    }
}

/// `$XDG_CACHE_HOME/lambda-packager/git`, else `$HOME/.cache/lambda-packager/git`, else a
/// directory in the temp directory.
fn default_git_cache() -> PathBuf {
    let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(cache) = absolute("XDG_CACHE_HOME") {
        cache.join("lambda-packager").join("git")
    } else if let Some(home) = absolute("HOME") {
        home.join(".cache").join("lambda-packager").join("git")
    } else {
        std::env::temp_dir().join("lambda-packager-git")
    }
}

/// Arguments of `pack`.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// A directory, an archive file (tar, tar.gz or zip), or `-` for an archive on stdin.
    // Conflicting with --ref too: a missing --git is excused while a conflicting argument is
    // present, so `pack --ref main DIR` would otherwise pack DIR and ignore --ref.
    #[arg(required_unless_present = "git", conflicts_with_all = ["git", "reference"])]
    pub source: Option<String>,
    /// A git commit as the source.
    #[command(flatten)]
    pub git: GitArgs,
    /// Lambda function name; adds the object key to the output.
    #[arg(long, value_name = "NAME")]
    pub function: Option<FunctionName>,
    /// The whole key prefix (empty, or ending in '/'). A server puts its operator prefix
    /// (store.prefix) before a request's own: for its key, pass both, e.g. --prefix ops/ci/.
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: KeyPrefix,
    /// Which files of the source to package.
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Write the zip to this file (replaced atomically; nothing is written on error), or to
    /// stdout with `-` (the JSON then goes to stderr). `./-` is a file named `-`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Compression threads (the bytes do not depend on it). Default: all cores.
    #[arg(long, value_name = "N")]
    pub threads: Option<NonZeroUsize>,
    /// The compressed-entry cache.
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// The compressed-entry cache flags, shared by `pack` and `push` (which packs locally to ask
/// the server whether it has the package).
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Keep compressed entries in this folder and reuse them: a repack deflates only files it
    /// has not seen (the bytes do not depend on it). Shareable by concurrent packs and between
    /// CI runs (docs/limits.md, "The compressed-entry cache").
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the cache folder keeps; the least recently used entries go first.
    #[arg(long, value_name = "BYTES", default_value_t = package::cache::DEFAULT_MAX_BYTES, requires = "cache_dir")]
    pub cache_max_bytes: u64,
    /// Files smaller than this skip the cache (for the benchmark that chose the default).
    #[arg(long, value_name = "BYTES", hide = true, default_value_t = package::cache::MIN_ENTRY_BYTES)]
    pub cache_min_entry_bytes: u64,
}

impl CacheArgs {
    /// The `--cache-dir` cache; one that cannot be opened is a warning, never a failed pack.
    pub fn open(&self) -> Option<EntryCache> {
        let dir = self.cache_dir.as_deref().filter(|_| self.cache_max_bytes > 0)?;
        match EntryCache::open_with_min(dir, self.cache_max_bytes, self.cache_min_entry_bytes) {
            Ok(cache) => Some(cache),
            Err(e) => {
                eprintln!("warning: packing without a cache: cannot create {}: {e}", dir.display());
                None
            }
        }
    }

    /// Warns when entries could not be kept (the package itself is complete).
    fn report(cache: Option<&EntryCache>) {
        if let Some(stats) = cache.map(EntryCache::stats).filter(|s| s.write_errors > 0) {
            eprintln!(
                "warning: {} entries could not be kept in the cache (the package is complete)",
                stats.write_errors
            );
        }
    }
}

/// The JSON line `pack` prints.
#[derive(Debug, Serialize)]
pub struct PackOutput {
    /// The object key, when a function name was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// SHA-256 of the zip, hex.
    pub sha256: String,
    /// SHA-256 of the zip, base64 (AWS Lambda's `CodeSha256`).
    pub code_sha256: String,
    /// Size of the zip in bytes.
    pub size: u64,
    /// Number of files in the zip.
    pub files: u64,
    /// With --git: the remote, the ref and the commit it resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<GitRevision>,
}

/// A failed command: a stable code and a message for one stderr line.
#[derive(Debug)]
pub struct CommandError {
    /// Stable code, e.g. `invalid_path`.
    pub code: String,
    /// Human-readable message with its causes.
    pub message: String,
    /// Whether the input (rather than this machine) is at fault.
    pub user_error: bool,
}

impl CommandError {
    /// An I/O failure of this machine (a temp file, stdout): exit 1.
    fn io(context: &str, e: &io::Error) -> Self {
        Self { code: "io_error".into(), message: format!("{context}: {e}"), user_error: false }
    }

    /// An I/O failure on a path the command line names (SOURCE, INPUT, --out). A path that does
    /// not exist, cannot be read or is the wrong kind of file is the caller's mistake: exit 2.
    fn path(action: &str, path: &Path, e: &io::Error) -> Self {
        use io::ErrorKind::{IsADirectory, NotADirectory, NotFound, PermissionDenied};
        Self {
            code: "io_error".into(),
            message: format!("{action} {}: {e}", path.display()),
            user_error: matches!(e.kind(), NotFound | PermissionDenied | NotADirectory | IsADirectory),
        }
    }

    /// A build failure, with the paths an I/O failure involved (the errors of `source` and
    /// `package` do not carry the input's name or the output's path).
    fn build(e: BuildError, input: &str, output: &str) -> Self {
        let context = match &e {
            BuildError::Source(source::Error::Io(_)) => {
                Some(format!("reading {input}; temp files in {}", std::env::temp_dir().display()))
            }
            BuildError::Package(package::Error::Read { .. }) => Some(format!("in {input}")),
            BuildError::Package(package::Error::Write(_) | package::Error::Zip(_)) => {
                Some(format!("writing {output}"))
            }
            _ => None,
        };
        let mut error = Self::from(e);
        if let Some(context) = context {
            error.message = format!("{} ({context})", error.message);
        }
        error
    }
}

impl From<BuildError> for CommandError {
    fn from(e: BuildError) -> Self {
        let user_error = matches!(&e, BuildError::Source(s) if s.is_input_error());
        Self { code: e.code().to_owned(), message: report(&e), user_error }
    }
}

/// An error and its `source()` chain on one line, skipping a cause its parent already quotes.
fn report(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}

impl Cli {
    /// Runs the command, prints its output or its error, and returns the exit status:
    /// 0 on success, 2 when the input is at fault, 1 otherwise.
    pub fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Serve(args) => args.run(),
            Command::Pack(args) if args.zip_to_stdout() => {
                args.run().and_then(|out| print_json(&mut io::stderr().lock(), "stderr", &out))
            }
            Command::Pack(args) => {
                args.run().and_then(|out| print_json(&mut io::stdout().lock(), "stdout", &out))
            }
            Command::Push(args) => {
                args.run().and_then(|out| print_json(&mut io::stdout().lock(), "stdout", &out))
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error[{}]: {}", e.code, e.message);
                ExitCode::from(if e.user_error { 2 } else { 1 })
            }
        }
    }
}

/// Writes `value` as one line of JSON to `to` (named `name` in errors).
fn print_json(to: &mut impl Write, name: &str, value: &impl Serialize) -> Result<(), CommandError> {
    let failed = |e: &io::Error| CommandError::io(&format!("writing the JSON output to {name}"), e);
    serde_json::to_writer(&mut *to, value).map_err(|e| failed(&e.into()))?;
    writeln!(to).map_err(|e| failed(&e))?;
    to.flush().map_err(|e| failed(&e))
}

/// A SOURCE or INPUT argument, opened.
enum LocalInput {
    /// A directory.
    Directory(PathBuf),
    /// An archive (format unknown yet), at its start.
    Archive {
        /// The file, or stdin spooled into an unlinked temp file.
        file: File,
        /// The path given, or `stdin`.
        name: String,
    },
}

/// Opens `arg`: `-` is an archive on stdin, a directory is read in place, anything else is an
/// archive file. Errors name the path.
fn open_input(arg: &str, limits: &Limits) -> Result<LocalInput, CommandError> {
    if arg == "-" {
        return Ok(LocalInput::Archive { file: spool_stdin(limits)?, name: "stdin".to_owned() });
    }
    let path = Path::new(arg);
    let meta = std::fs::metadata(path).map_err(|e| CommandError::path("reading", path, &e))?;
    if meta.is_dir() {
        Ok(LocalInput::Directory(path.to_owned()))
    } else {
        let file = File::open(path).map_err(|e| CommandError::path("opening", path, &e))?;
        Ok(LocalInput::Archive { file, name: path.display().to_string() })
    }
}

/// A temp file in the system temp directory (unlinked), or an error that names the directory.
fn temp_file() -> Result<File, CommandError> {
    tempfile::tempfile().map_err(|e| {
        CommandError::io(&format!("creating a temp file in {}", std::env::temp_dir().display()), &e)
    })
}

impl PackArgs {
    /// Whether `--out -` sends the zip to stdout (and so the JSON to stderr).
    pub fn zip_to_stdout(&self) -> bool {
        self.out.as_deref() == Some(Path::new("-"))
    }

    /// Builds the package; with `--out -`, writes the zip to stdout once it is complete.
    pub fn run(self) -> Result<PackOutput, CommandError> {
        let limits = Limits::default();
        let git = self.git.input()?;
        let requested_repo = git.as_ref().map(|(_, _, repo)| repo.clone());
        let (input, git_source, input_name) = match (git, self.source.as_deref()) {
            (Some((request, source, repo)), _) => (Input::Git(request), Some(source), repo),
            (None, source) => {
                let source = source.unwrap_or_default();
                match open_input(source, &limits)? {
                    LocalInput::Directory(dir) => (Input::Directory(dir), None, source.to_owned()),
                    LocalInput::Archive { file, name } => (Input::Archive(file.into()), None, name),
                }
            }
        };
        let options = PackOptions {
            threads: self.threads.unwrap_or(PackOptions::default().threads),
            cache: self.cache.open(),
            ..PackOptions::default()
        };
        let selection = self.selection.selection();
        let build = |out: &mut File, output: &str| {
            packages::build(input, &selection, &limits, git_source.as_ref(), &options, None, out)
                .map_err(|e| CommandError::build(e, &input_name, output))
        };
        let in_temp_dir = format!("a temp file in {}", std::env::temp_dir().display());
        let built = match &self.out {
            Some(_) if self.zip_to_stdout() => {
                // Built in a temp file first (the zip writer seeks), so stdout gets a whole zip
                // or nothing.
                let mut tmp = temp_file()?;
                let built = build(&mut tmp, &in_temp_dir)?;
                let copy = |tmp: &mut File| -> io::Result<()> {
                    tmp.rewind()?;
                    let mut stdout = io::stdout().lock();
                    io::copy(tmp, &mut stdout)?;
                    stdout.flush()
                };
                copy(&mut tmp).map_err(|e| CommandError::io("writing the zip to stdout", &e))?;
                built
            }
            Some(out) => {
                // A temp file next to the destination, renamed over it only on success.
                let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let mut tmp = tempfile::Builder::new()
                    .prefix(".lambda-packager-")
                    .permissions(std::fs::Permissions::from_mode(0o644))
                    .tempfile_in(dir)
                    .map_err(|e| CommandError::path("writing", out, &e))?;
                let output = tmp.path().display().to_string();
                let built = build(tmp.as_file_mut(), &output)?;
                tmp.persist(out).map_err(|e| CommandError::path("writing", out, &e.error))?;
                built
            }
            None => build(&mut temp_file()?, &in_temp_dir)?,
        };
        CacheArgs::report(options.cache.as_ref());
        let packed = built.packed;
        Ok(PackOutput {
            key: self
                .function
                .as_ref()
                .map(|f| ObjectKey::package(&self.prefix, f, packed.sha256).to_string()),
            sha256: packed.sha256.to_string(),
            code_sha256: packed.code_sha256(),
            size: packed.size,
            files: packed.files,
            source: built
                .git
                .map(|revision| GitRevision { repo: requested_repo.unwrap_or(revision.repo), ..revision }),
        })
    }
}

/// Copies an archive from stdin into an unlinked temp file (zip needs random access), refusing
/// more than the archive limit.
fn spool_stdin(limits: &Limits) -> Result<File, CommandError> {
    let mut tmp = temp_file()?;
    let copied = io::copy(&mut io::stdin().lock().take(limits.max_archive_bytes + 1), &mut tmp)
        .map_err(|e| CommandError::io("reading stdin", &e))?;
    tmp.rewind().map_err(|e| CommandError::io("rewinding the copy of stdin", &e))?;
    if copied > limits.max_archive_bytes {
        return Err(BuildError::from(source::Error::ArchiveTooLarge { max: limits.max_archive_bytes }).into());
    }
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
