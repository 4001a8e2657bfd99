//! The integration tests: one binary (one link of the library) for every suite.
#![expect(unreachable_pub, reason = "support items are `pub` to be shared between test modules")]

mod api_artifacts;
mod api_git;
mod api_hardening;
mod api_packages;
mod api_s3;
mod bad_input;
mod cache;
mod cancellation;
mod cli;
mod faults;
mod format_rules;
mod full_disk;
mod git;
mod golden;
mod local_symlinks;
mod log_output;
mod lookup;
mod metric_labels;
mod multipart_limits;
mod one_parse;
mod properties;
mod push;
mod read_side;
mod request_options;
mod s3_credentials;
mod s3_faults;
mod single_flight;
mod slow_uploads;
mod store_contract;
mod support;
mod ui_pages;
mod walk_bounds;
