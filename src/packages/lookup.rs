//! Lookup: "is the package I built already stored?", answered without an upload.
//!
//! A client that packs locally (`push`, the Python hooks) knows the zip's digest, size and
//! file count, but not the key: the operator's `store.prefix` and whether the request's own
//! prefix is allowed are server settings. So it asks with what it knows, the server computes
//! the key with its [`PrefixPolicy`](super::PrefixPolicy) and answers from a HEAD of the object,
//! exactly as a re-post of the same input would (`Outcome::AlreadyExisted`, or a dry run's
//! `exists: true`). An object whose size (or stored checksum) differs is answered as absent:
//! the client then uploads, and the post reports the conflict with the bytes in hand.
//!
//! A lookup never writes: it does not repair a missing index entry as a re-post does (that
//! would index a file count the client claimed); the next real post of the package does.

use super::publish::{Outcome, Published, holds};
use super::{Error, Packages};
use crate::package::Packed;
use crate::source::SourceFormat;
use crate::store::Store;
use crate::store::key::{FunctionName, KeyPrefix, ObjectKey, StoreKey};

/// What a client built, and asks about.
#[derive(Debug, Clone)]
pub struct LookupRequest {
    /// The Lambda function.
    pub function: FunctionName,
    /// The request's own prefix, after the operator's (only if the operator allows it).
    pub prefix: Option<KeyPrefix>,
    /// Digest, size and file count of the zip the client built.
    pub packed: Packed,
    /// The format of the input the client would upload (echoed in the answer, as a post
    /// reports the format it detected).
    pub format: SourceFormat,
    /// Answer as a dry-run post would.
    pub dry_run: bool,
}

impl Packages {
    /// The package the client built, if it is stored under its key with the same size (and
    /// checksum, when the store keeps one): the answer a re-post of the same input would get.
    /// Absent, or other bytes under the key: [`Error::NotFound`].
    #[tracing::instrument(skip_all, fields(function = %request.function, dry_run = request.dry_run))]
    pub async fn lookup(&self, request: LookupRequest) -> Result<Published, Error> {
        let LookupRequest { function, prefix, packed, format, dry_run } = request;
        let prefix = self.settings.prefixes.resolve(prefix.as_ref())?;
        let key = ObjectKey::package(&prefix, &function, packed.sha256);
        let meta = self.store.head(&StoreKey::from(&key)).await?;
        let Some(meta) = meta else {
            metrics::counter!("package_lookups_total", "result" => "absent").increment(1);
            return Err(Error::NotFound(key));
        };
        if !holds(&meta, &packed) {
            metrics::counter!("package_lookups_total", "result" => "different").increment(1);
            tracing::info!(
                %key,
                stored_size = meta.size,
                size = packed.size,
                "the key holds other bytes than the client built: answered as absent, so the post reports it"
            );
            return Err(Error::NotFound(key));
        }
        metrics::counter!("package_lookups_total", "result" => "found").increment(1);
        let (bucket, location) = self.locate(&key);
        let outcome = if dry_run { Outcome::DryRun { exists: true } } else { Outcome::AlreadyExisted };
        Ok(Published {
            key,
            packed,
            format,
            outcome,
            version_id: meta.version_id,
            git: None,
            bucket,
            location,
        })
    }
}
