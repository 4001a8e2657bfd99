//! The integration-test binary: one binary for every integration test, modules per area.

mod git;
mod support;
