//! The `push` client for CI: select the files of a directory exactly as `pack` does, send them
//! to a lambda-packager server as a tar.gz, and report the server's answer.
//!
//! Selection and symlink resolution happen here, with the same code as `pack DIR`, so only the
//! files that will be packaged cross the network, and the server's key equals the key `pack`
//! prints for the same directory. The upload is a tar of regular files with fixed metadata; the
//! server still canonicalizes it, so the tar's own bytes do not matter.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::package::{Limits, SourceTree};
use crate::source::{self, Selection};
use crate::store::key::{FunctionName, KeyPrefix};

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The directory could not be read as a source tree.
    #[error(transparent)]
    Source(#[from] source::Error),
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
    /// Building the upload failed.
    #[error("building the upload: {0}")]
    Io(#[from] io::Error),
}

impl PushError {
    /// A stable code: the server's, or the client's own.
    pub fn code(&self) -> String {
        match self {
            Self::Source(e) => e.code().to_owned(),
            Self::Server { code, .. } => code.clone(),
            Self::Transport(_) => "server_unreachable".to_owned(),
            Self::Io(_) => "io_error".to_owned(),
        }
    }

    /// Whether the request (rather than the server or the network) is at fault.
    pub fn user_error(&self) -> bool {
        match self {
            Self::Source(e) => e.is_input_error(),
            Self::Server { status, .. } => (400..500).contains(status),
            Self::Transport(_) | Self::Io(_) => false,
        }
    }
}

/// What to push where.
#[derive(Debug)]
pub struct PushRequest<'a> {
    /// Base URL of the server, e.g. `https://packager.internal`.
    pub server: &'a str,
    /// The function.
    pub function: &'a FunctionName,
    /// Bearer token.
    pub token: Option<&'a str>,
    /// Extra key prefix (the server must allow it).
    pub prefix: Option<&'a KeyPrefix>,
    /// Ask the server not to store anything.
    pub dry_run: bool,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// Writes `tree` as a gzip-compressed tar of regular files (mode 0644/0755, zero times and
/// owners) into an unlinked temp file, rewound.
///
/// Runs synchronously.
pub fn tar_gz(tree: &SourceTree) -> io::Result<File> {
    let file = tempfile::tempfile()?;
    let mut builder = tar::Builder::new(GzEncoder::new(file, Compression::fast()));
    builder.mode(tar::HeaderMode::Deterministic);
    for entry in tree.entries() {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(entry.size);
        header.set_mode(entry.mode.permissions());
        header.set_mtime(0);
        builder.append_data(&mut header, entry.path.as_str(), tree.open(entry)?)?;
    }
    let mut file = builder.into_inner()?.finish()?;
    file.flush()?;
    file.rewind()?;
    Ok(file)
}

/// Selects the files of `dir`, uploads them, and returns the server's JSON answer.
pub fn push(
    dir: &Path,
    selection: &Selection,
    request: &PushRequest<'_>,
) -> Result<serde_json::Value, PushError> {
    let tree =
        source::from_directory(dir, selection, &Limits::default(), &crate::package::CancelFlag::default())?;
    let body = tar_gz(&tree)?;
    let size = body.metadata()?.len();

    let mut url =
        format!("{}/v1/functions/{}/package?", request.server.trim_end_matches('/'), request.function);
    // The selection was applied here; the server must not apply its default excludes again.
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("default_excludes", "false");
    if let Some(prefix) = request.prefix.filter(|p| !p.as_str().is_empty()) {
        query.append_pair("prefix", prefix.as_str());
    }
    if request.dry_run {
        query.append_pair("dry_run", "true");
    }
    url.push_str(&query.finish());

    let bar = ProgressBar::with_draw_target(
        Some(size),
        if request.progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("uploading {} files", tree.entries().len()));

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    // With a Content-Length the server refuses an oversized upload before reading it, and with
    // `Expect: 100-continue` its early refusals (401, 413, 503) arrive before we send the body,
    // instead of as a broken pipe halfway through it.
    let mut call = agent
        .post(&url)
        .header("content-type", "application/gzip")
        .header("content-length", &size.to_string())
        .header("expect", "100-continue");
    if let Some(token) = request.token {
        call = call.header("authorization", &format!("Bearer {token}"));
    }
    let reader = bar.wrap_read(body);
    let response = call
        .send(ureq::SendBody::from_owned_reader(reader))
        .map_err(|e| PushError::Transport(e.to_string()))?;
    bar.finish_and_clear();
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
