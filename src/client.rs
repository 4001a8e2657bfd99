//! The `push` client for CI: send a directory or an archive to a lambda-packager server and
//! report its answer, uploading nothing the server already has.
//!
//! `push` first packs the input here, with the code of `pack` (the same bytes the server would
//! produce: format v1 is canonical), and asks the server in one small request whether that zip
//! is stored (`POST …/package/lookup`): the client cannot compute the key itself, since the operator's
//! `store.prefix` and prefix policy are the server's. When it is stored, the server's answer is
//! the one a re-post would get (`uploaded: false`), and no archive crosses the network. Only
//! when it is not (or the server predates the lookup route, or `--force-upload`) is the input
//! uploaded, as before:
//!
//! - a directory is selected here, with the same code as `pack DIR`, so only the files that
//!   will be packaged cross the network; the upload is a tar.gz of regular files with fixed
//!   metadata, which the server canonicalizes (the tar's own bytes do not matter);
//! - an archive is sent as it is, with the selection as request options: the server decodes it
//!   with the code `pack ARCHIVE` uses, so the keys agree. If the client cannot decode it (a
//!   corrupt archive, a limit of its own), it uploads it anyway and the server's verdict
//!   stands, as for any upload.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::package::cache::EntryCache;
use crate::package::{self, CancelFlag, Content, Limits, PackOptions, Packed, SourceTree};
use crate::packages::BuildError;
use crate::source::{self, ArchiveBytes, Selection, SourceFormat};
use crate::store::key::{FunctionName, KeyPrefix};

/// The base URL of a lambda-packager server: `http://` or `https://`, a host, an optional port
/// and path; no query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl(String);

impl ServerUrl {
    /// The URL, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a `--server` value is not a server URL; each message says how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerUrlError {
    /// `127.0.0.1:8080`: the most common mistake, so it gets its own answer.
    #[error("`{0}` has no scheme: write http://{0} (or https://{0} for a server behind TLS)")]
    NoScheme(String),
    /// `ftp://…`, `ssh://…`.
    #[error("`{url}` uses {scheme}://: write http:// or https:// followed by the host")]
    Scheme {
        /// The value given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// Not parseable, no host, or a query string.
    #[error("`{url}` is not a server URL ({reason}): write it as http://HOST:PORT or https://HOST")]
    Invalid {
        /// The value given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl FromStr for ServerUrl {
    type Err = ServerUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((scheme, _)) = s.split_once("://") else {
            return Err(ServerUrlError::NoScheme(s.to_owned()));
        };
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(ServerUrlError::Scheme { url: s.to_owned(), scheme: scheme.to_owned() });
        }
        let invalid = |reason: &str| ServerUrlError::Invalid { url: s.to_owned(), reason: reason.to_owned() };
        let uri: ureq::http::Uri =
            s.parse().map_err(|e: ureq::http::uri::InvalidUri| invalid(&e.to_string()))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if uri.query().is_some() {
            return Err(invalid("a query string"));
        }
        Ok(Self(s.trim_end_matches('/').to_owned()))
    }
}

/// What `push` sends.
#[derive(Debug)]
pub enum PushInput {
    /// A directory: its files are selected here and sent as a tar.gz.
    Directory(PathBuf),
    /// An archive (tar, tar.gz or zip), sent as it is with the selection as options.
    Archive {
        /// The archive, at its start.
        file: File,
        /// Where it came from, for messages (a path, or `stdin`).
        name: String,
    },
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The directory could not be read as a source tree, or packed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The server answered with an error envelope.
    #[error("the server refused the package ({status}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The envelope's code.
        code: String,
        /// The envelope's message.
        message: String,
    },
    /// The server could not be reached, or the exchange broke.
    #[error("talking to the server: {0}")]
    Transport(String),
    /// Building or reading the upload failed; the context names the file.
    #[error("{context}")]
    Io {
        /// What was being done, to which path.
        context: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl From<source::Error> for PushError {
    fn from(e: source::Error) -> Self {
        Self::Build(e.into())
    }
}

impl PushError {
    /// A stable code: the server's, or the client's own.
    pub fn code(&self) -> String {
        match self {
            Self::Build(e) => e.code().to_owned(),
            Self::Server { code, .. } => code.clone(),
            Self::Transport(_) => "server_unreachable".to_owned(),
            Self::Io { .. } => "io_error".to_owned(),
        }
    }

    /// Whether the request (rather than the server or the network) is at fault.
    pub fn user_error(&self) -> bool {
        match self {
            Self::Build(BuildError::Source(e)) => e.is_input_error(),
            Self::Build(BuildError::Package(_)) => false,
            Self::Server { status, .. } => (400..500).contains(status),
            Self::Transport(_) | Self::Io { .. } => false,
        }
    }

    fn transport(e: ureq::Error) -> Self {
        Self::Transport(e.to_string())
    }

    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { context: context.into(), source }
    }
}

/// What to push where.
#[derive(Debug)]
pub struct PushRequest<'a> {
    /// Base URL of the server, e.g. `https://packager.internal`.
    pub server: &'a ServerUrl,
    /// The function.
    pub function: &'a FunctionName,
    /// Bearer token.
    pub token: Option<&'a str>,
    /// Extra key prefix (the server must allow it).
    pub prefix: Option<&'a KeyPrefix>,
    /// Ask the server not to store anything.
    pub dry_run: bool,
    /// Upload without packing here and asking first (what `push` did before the lookup).
    pub force_upload: bool,
    /// The compressed-entry cache of the local pack.
    pub cache: Option<EntryCache>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// Writes `tree` as a gzip-compressed tar of regular files (mode 0644/0755, zero times and
/// owners) into an unlinked temp file, rewound.
///
/// Runs synchronously.
pub fn tar_gz(tree: &SourceTree) -> Result<File, PushError> {
    let temp_dir = std::env::temp_dir();
    let in_temp = |what: &str| PushError::io(format!("{what} a temp file in {}", temp_dir.display()));
    let file = tempfile::tempfile().map_err(in_temp("creating"))?;
    let mut builder = tar::Builder::new(GzEncoder::new(file, Compression::fast()));
    builder.mode(tar::HeaderMode::Deterministic);
    for entry in tree.entries() {
        let from = match &entry.content {
            Content::File(path) => path.display().to_string(),
            Content::Spooled { .. } | Content::Blob { .. } | Content::Streamed { .. } => {
                entry.path.to_string()
            }
        };
        let adding = || PushError::io(format!("adding {from} to the upload in {}", temp_dir.display()));
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(entry.size);
        header.set_mode(entry.mode.permissions());
        header.set_mtime(0);
        let reader = tree.open(entry).map_err(PushError::io(format!("reading {from}")))?;
        builder.append_data(&mut header, entry.path.as_str(), reader).map_err(adding())?;
    }
    let finish = |e| in_temp("writing")(e);
    let mut file = builder.into_inner().map_err(finish)?.finish().map_err(finish)?;
    file.flush().map_err(finish)?;
    file.rewind().map_err(finish)?;
    Ok(file)
}

/// The selection as request options, for an archive the server decodes (only values that
/// differ from the server's defaults).
fn selection_options(selection: &Selection, query: &mut form_urlencoded::Serializer<'_, String>) {
    if let Some(path) = &selection.path {
        query.append_pair("path", path);
    }
    if selection.strip_components != 0 {
        query.append_pair("strip_components", &selection.strip_components.to_string());
    }
    for pattern in &selection.include {
        query.append_pair("include", pattern);
    }
    for pattern in &selection.exclude {
        query.append_pair("exclude", pattern);
    }
    if !selection.default_excludes {
        query.append_pair("default_excludes", "false");
    }
}

/// What `push` uploads when the server does not have the package.
enum Upload {
    /// A directory's selected files (sent as a tar.gz).
    Tree(SourceTree),
    /// An archive, sent as it is.
    Archive {
        /// The archive.
        file: File,
        /// Where it came from, for messages.
        name: String,
    },
}

impl Upload {
    /// The zip the server would build from this upload, and the format it would detect; `None`
    /// for an archive this client cannot decode (the server's verdict on it stands).
    ///
    /// Runs synchronously.
    fn pack(
        &self,
        selection: &Selection,
        cache: Option<&EntryCache>,
    ) -> Result<Option<(Packed, SourceFormat)>, PushError> {
        let options = PackOptions { cache: cache.cloned(), ..PackOptions::default() };
        match self {
            Self::Tree(tree) => {
                let packed = package::pack_into(tree, &options, io::sink()).map_err(BuildError::from)?;
                Ok(Some((packed, SourceFormat::TarGz)))
            }
            Self::Archive { file, name } => {
                let copy = file.try_clone().map_err(PushError::io(format!("reading {name}")))?;
                let decoded = source::from_archive(
                    ArchiveBytes::File(copy),
                    selection,
                    &Limits::default(),
                    None,
                    &CancelFlag::default(),
                );
                let Ok((format, tree)) = decoded else { return Ok(None) };
                Ok(package::pack_into(&tree, &options, io::sink()).ok().map(|packed| (packed, format)))
            }
        }
    }
}

/// One agent for the lookup and the upload, so the upload reuses the lookup's connection.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Sends `input` to the server, unless the server already has its package, and returns the
/// server's JSON answer (the same JSON either way).
pub fn push(
    input: PushInput,
    selection: &Selection,
    request: &PushRequest<'_>,
) -> Result<serde_json::Value, PushError> {
    let upload = match input {
        PushInput::Directory(dir) => {
            Upload::Tree(source::from_directory(&dir, selection, &Limits::default(), &CancelFlag::default())?)
        }
        PushInput::Archive { file, name } => Upload::Archive { file, name },
    };
    let agent = agent();
    if !request.force_upload
        && let Some((packed, format)) = upload.pack(selection, request.cache.as_ref())?
        && let Some(answer) = lookup(&agent, request, &packed, format)?
    {
        return Ok(answer);
    }
    send(&agent, upload, selection, request)
}

/// Asks the server whether the zip `packed` is stored for this request (one small POST): its
/// answer if so, `None` if not, or if the server has no lookup route (an older version: 404
/// without the `artifact_not_found` code, or 405), so that the caller uploads.
fn lookup(
    agent: &ureq::Agent,
    request: &PushRequest<'_>,
    packed: &Packed,
    format: SourceFormat,
) -> Result<Option<serde_json::Value>, PushError> {
    let mut body = serde_json::json!({
        "sha256": packed.sha256.to_string(),
        "size": packed.size,
        "files": packed.files,
        "format": format.as_str(),
    });
    if let Some(prefix) = request.prefix.filter(|p| !p.as_str().is_empty()) {
        body["prefix"] = prefix.as_str().into();
    }
    if request.dry_run {
        body["dry_run"] = true.into();
    }
    let url = format!("{}/v1/functions/{}/package/lookup", request.server, request.function);
    let mut call = agent.post(&url).header("content-type", "application/json");
    if let Some(token) = request.token {
        call = call.header("authorization", &format!("Bearer {token}"));
    }
    let response = call.send(body.to_string().as_bytes()).map_err(PushError::transport)?;
    let status = response.status().as_u16();
    match answer(response) {
        Ok(json) => Ok(Some(json)),
        // Not stored (`artifact_not_found`), or no such route: a server from before the lookup
        // (404 `not_found`, 405, or a proxy's own 404 page), whose post still answers.
        Err(_) if status == 404 || status == 405 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Uploads `upload` (a directory's files as a tar.gz, an archive as it is) and returns the
/// server's answer.
fn send(
    agent: &ureq::Agent,
    upload: Upload,
    selection: &Selection,
    request: &PushRequest<'_>,
) -> Result<serde_json::Value, PushError> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let (body, content_type, message) = match upload {
        Upload::Tree(tree) => {
            // The selection was applied here; the server must not apply its default excludes
            // again.
            query.append_pair("default_excludes", "false");
            (tar_gz(&tree)?, "application/gzip", format!("uploading {} files", tree.entries().len()))
        }
        Upload::Archive { mut file, name } => {
            file.rewind().map_err(PushError::io(format!("reading {name}")))?;
            selection_options(selection, &mut query);
            (file, "application/octet-stream", format!("uploading {name}"))
        }
    };
    let size =
        body.metadata().map_err(PushError::io(format!("reading the size of the upload ({message})")))?.len();
    if let Some(prefix) = request.prefix.filter(|p| !p.as_str().is_empty()) {
        query.append_pair("prefix", prefix.as_str());
    }
    if request.dry_run {
        query.append_pair("dry_run", "true");
    }
    let url = format!("{}/v1/functions/{}/package?{}", request.server, request.function, query.finish());

    let bar = ProgressBar::with_draw_target(
        Some(size),
        if request.progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message);

    // With a Content-Length the server refuses an oversized upload before reading it, and with
    // `Expect: 100-continue` its early refusals (401, 413, 503) arrive before we send the body,
    // instead of as a broken pipe halfway through it.
    let mut call = agent
        .post(&url)
        .header("content-type", content_type)
        .header("content-length", &size.to_string())
        .header("expect", "100-continue");
    if let Some(token) = request.token {
        call = call.header("authorization", &format!("Bearer {token}"));
    }
    let reader = bar.wrap_read(body);
    let response = call.send(ureq::SendBody::from_owned_reader(reader)).map_err(PushError::transport)?;
    bar.finish_and_clear();
    answer(response)
}

/// The JSON of a 2xx answer, or the error envelope of any other as [`PushError::Server`].
fn answer(response: ureq::http::Response<ureq::Body>) -> Result<serde_json::Value, PushError> {
    let status = response.status().as_u16();
    let mut text = String::new();
    response
        .into_body()
        .into_reader()
        .take(16 * 1024 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| PushError::Transport(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| PushError::Server {
        status,
        code: "invalid_response".into(),
        message: format!("not JSON: {}", text.chars().take(200).collect::<String>()),
    })?;
    if (200..300).contains(&status) {
        return Ok(json);
    }
    Err(PushError::Server {
        status,
        code: json["error"]["code"].as_str().unwrap_or("http_error").to_owned(),
        message: json["error"]["message"].as_str().unwrap_or(&text).to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_need_http_or_https_and_say_how_to_write_them() {
        let url: ServerUrl = "http://127.0.0.1:8080/".parse().expect("valid");
        assert_eq!(url.as_str(), "http://127.0.0.1:8080", "the trailing slash is dropped");
        let url: ServerUrl = "https://packager.internal/base".parse().expect("valid");
        assert_eq!(url.as_str(), "https://packager.internal/base");

        let e = "127.0.0.1:8080".parse::<ServerUrl>().expect_err("no scheme").to_string();
        assert!(e.contains("write http://127.0.0.1:8080"), "{e}");
        let e = "ftp://host".parse::<ServerUrl>().expect_err("scheme").to_string();
        assert!(e.contains("ftp://") && e.contains("http:// or https://"), "{e}");
        let e = "http://host/?a=b".parse::<ServerUrl>().expect_err("query").to_string();
        assert!(e.contains("query string"), "{e}");
        let e = "http://".parse::<ServerUrl>().expect_err("no host").to_string();
        assert!(e.contains("http://HOST:PORT"), "{e}");
    }
}
