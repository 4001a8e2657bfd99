//! The integration tests: one binary (one link of the library) for every suite.
#![expect(
    unreachable_pub,
    reason = "support items are `pub` to be shared between test modules"
)]

mod bad_input;
mod cli;
mod format_rules;
mod golden;
mod properties;
mod s3_credentials;
mod store_contract;
mod support;
