//! The `lambda-packager` binary: parse the command line and run it. Everything else is in the
//! library, where it can be tested.

use std::process::ExitCode;

use clap::Parser;
use lambda_packager::cli::Cli;

fn main() -> ExitCode {
    Cli::parse().run()
}
