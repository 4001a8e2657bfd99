//! Test harnesses: git repositories and git servers the tests start and stop themselves.

pub(crate) mod git_http;
pub(crate) mod git_repo;
