//! Where packages go. For now only the naming of objects lives here ([`key`]); the store trait
//! and its local and S3 backends build on it.

pub mod key;
