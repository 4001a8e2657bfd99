//! lambda-packager: a source tree in, a byte-for-byte reproducible AWS Lambda zip out, named by
//! its SHA-256.
//!
//! Crate map (dependencies point down this list, never up):
//! - [`package`]: the canonical zip format, pure and synchronous.
//! - [`source`]: untrusted input (tar, tar.gz, zip, directory) to a [`package::SourceTree`].
//! - [`store`]: object keys and storage backends (and their configuration).
//! - [`packages`]: the packages service, every use case (publish, list, get, download, diff),
//!   shared by the API and the CLI.
//! - [`auth`]: named bearer tokens, their scopes and functions.
//! - [`http`]: the API, the only module that knows axum: parse, call the service, map.
//! - [`cli`]: command-line arguments and commands.

pub mod auth;
pub mod blocking;
pub mod cli;
pub mod client;
pub mod config;
pub mod http;
pub mod package;
pub mod packages;
pub mod server;
pub mod source;
pub mod store;
pub mod telemetry;
