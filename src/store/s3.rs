//! The S3 backend: aws-sdk-s3 against AWS or any S3-compatible server.
//!
//! Exactly-once is S3's own conditional write: `PutObject` with `If-None-Match: *` stores the
//! object only if the key is free, and answers 412 otherwise, however many replicas race. Every
//! upload carries `x-amz-checksum-sha256`, so S3 rejects a body corrupted on the way, and the
//! stored checksum lets `publish` compare an existing object with ours.
//!
//! The SDK's errors end here: [`ResultExt::convert_errors`] (over [`Failure::of`], the one place
//! that reads status codes and error codes) turns them into [`store::Error`](super::Error). A 403
//! is [`Error::Denied`], never "absent"; a store that cannot be reached, times out, throttles or
//! answers 5xx after the SDK's retries, or still answers 409 `ConditionalRequestConflict` after
//! ours, is [`Error::Unavailable`].
//!
//! The HTTP client is built here (hyper 1 + rustls with ring), because the SDK's default client
//! is disabled to keep the dependency tree lean; the SDK refuses to send anything without one.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region, SharedHttpClient};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::Bytes;
use futures_util::StreamExt as _;

use super::config::S3StoreConfig;
use super::key::{ObjectKey, StoreKey};
use super::{
    ByteRange, Error, ListCursor, ListRequest, Listing, ObjectBody, ObjectMeta, PutOutcome, Staged,
    StagedBytes, Store,
};

/// The SDK behaviour (retry mode, timeouts, checksum defaults) this code was written against:
/// the newest when it was written. Pinned so that an SDK upgrade cannot change them silently;
/// move it on purpose, after reading the SDK's notes on the new version.
pub fn behavior_version() -> BehaviorVersion {
    BehaviorVersion::v2026_01_12()
}

/// The largest object one `PutObject` may carry: S3's own limit for a single PUT (5 GiB).
///
/// There is no multipart upload: a package is at most Lambda's 250 MB unzipped limit
/// (`limits.max_unpacked_bytes`, ~262 MB, and deflate only shrinks it), far below this. One PUT is
/// atomic, takes `If-None-Match` and a full-object SHA-256 directly, and is retried whole from the
/// file; multipart would add an upload id to abort on every failure path and a composite checksum
/// that `publish` could not compare with the package's digest.
pub const MAX_SINGLE_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// How often a `PutObject` answered 409 `ConditionalRequestConflict` (a concurrent conditional
/// write to the same key was in flight) is tried again before giving up.
const CONFLICT_RETRIES: u32 = 5;

/// The first wait after a 409; it doubles on each retry.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(100);

/// Retries and timeouts of the S3 client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Attempts per request, the first included (the SDK's standard retry mode with jittered
    /// exponential backoff: throttling, 5xx, timeouts and connection errors are retried).
    pub max_attempts: u32,
    /// The first backoff of the SDK's retries.
    pub initial_backoff: Duration,
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest single attempt of a small request (HEAD, list, ranged GET), response included.
    pub attempt_timeout: Duration,
    /// Longest single attempt of an upload, body included. A stalled upload fails earlier,
    /// through the SDK's stalled-stream protection.
    pub put_attempt_timeout: Duration,
}

impl Default for S3Settings {
    /// The service's values: a few seconds to connect, half a minute for a metadata request, a
    /// quarter of an hour for an upload of up to ~262 MB.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(3100),
            attempt_timeout: Duration::from_secs(30),
            put_attempt_timeout: Duration::from_secs(15 * 60),
        }
    }
}

/// A bucket of packages on S3.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    settings: S3Settings,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The one HTTP client: hyper 1 with rustls on ring, trusting the system's roots.
///
/// Built as the SDK builds its own default client (`aws-smithy-runtime`'s
/// `default_https_client`, which needs aws-lc-rs), including the proxy variables
/// (`HTTPS_PROXY`, `NO_PROXY`, ...) when `proxy_from_env`: `Builder::build_https` has no proxy
/// support, hence the connector function.
fn http_client(proxy_from_env: bool) -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, runtime_components| {
        let mut connector = aws_smithy_http_client::ConnectorBuilder::default()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = runtime_components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(if proxy_from_env {
            ProxyConfig::from_env()
        } else {
            ProxyConfig::disabled()
        }));
        connector.build()
    })
}

impl S3Store {
    /// The store for `config`, with credentials and (unless configured) region from the standard
    /// AWS chain: environment, shared config/credentials files (static keys, assume-role), web
    /// identity (EKS IRSA), ECS container credentials, EC2 instance metadata.
    ///
    /// Credentials are resolved lazily, on the first request, and refreshed by the SDK.
    pub async fn connect(config: &S3StoreConfig, settings: S3Settings) -> Result<Self, Error> {
        let mut loader = aws_config::defaults(behavior_version()).http_client(http_client(true));
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(Error::Backend(
                "no AWS region: set store.s3.region, AWS_REGION or a profile's region".into(),
            ));
        }
        Ok(Self::build(aws_sdk_s3::config::Builder::from(&sdk), config, settings))
    }

    /// The store for `config` with fixed credentials and nothing read from the environment (no
    /// variable, file or instance metadata). For tests against a local S3-compatible server:
    /// the service itself always uses [`S3Store::connect`].
    pub fn with_static_credentials(
        config: &S3StoreConfig,
        access_key_id: &str,
        secret_access_key: &str,
        settings: S3Settings,
    ) -> Self {
        let region = config.region.clone().unwrap_or_else(|| "us-east-1".into());
        let builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(behavior_version())
            .http_client(http_client(false))
            .region(Region::new(region))
            .credentials_provider(Credentials::new(access_key_id, secret_access_key, None, None, "static"));
        Self::build(builder, config, settings)
    }

    fn build(builder: aws_sdk_s3::config::Builder, config: &S3StoreConfig, settings: S3Settings) -> Self {
        let mut builder = builder
            .behavior_version(behavior_version())
            .force_path_style(config.force_path_style)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(settings.max_attempts)
                    .with_initial_backoff(settings.initial_backoff),
            )
            .timeout_config(timeouts(&settings, settings.attempt_timeout));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Self { client: Client::from_conf(builder.build()), bucket: config.bucket.clone(), settings }
    }

    /// The region requests are signed for and sent to.
    pub fn region(&self) -> Option<&str> {
        self.client.config().region().map(|r| r.as_ref())
    }

    /// The SDK client, for what the [`Store`] trait does not cover (tests create and empty
    /// buckets with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// One `PutObject` with `If-None-Match: *`.
    async fn put_once(
        &self,
        key: &StoreKey,
        staged: &Staged,
    ) -> Result<PutOutcome, SdkError<aws_sdk_s3::operation::put_object::PutObjectError>> {
        let body = match &staged.data {
            // Cheap to clone for every retry.
            StagedBytes::Memory(bytes) => ByteStream::from(bytes.clone()),
            // Streamed from the path, not read into memory: the SDK re-opens it for every retry.
            StagedBytes::File(file) => {
                ByteStream::from_path(super::fd_path(file)).await.map_err(SdkError::construction_failure)?
            }
        };
        let output = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.name())
            .if_none_match("*")
            // The algorithm header makes S3 keep the checksum (HEAD returns it); the value is
            // ours, so the SDK computes nothing and S3 checks the body against it.
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(staged.sha256.to_base64())
            .content_length(i64::try_from(staged.size).unwrap_or(i64::MAX))
            .content_type(key.content_type())
            .cache_control(key.cache_control())
            .set_metadata(
                (!staged.metadata.is_empty()).then(|| staged.metadata.clone().into_iter().collect()),
            )
            .body(body)
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::new()
                    .timeout_config(timeouts(&self.settings, self.settings.put_attempt_timeout)),
            )
            .send()
            .await?;
        Ok(PutOutcome::Created { version_id: output.version_id })
    }
}

fn timeouts(settings: &S3Settings, attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(settings.connect_timeout)
        .operation_attempt_timeout(attempt)
        .build()
}

/// What an S3 failure means to this crate. Status codes and error codes are read here and
/// nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// 404: no such key (or, for a HEAD, which has no error code, no such bucket).
    NotFound,
    /// 412: a condition (`If-None-Match: *`) did not hold.
    PreconditionFailed,
    /// 409 `ConditionalRequestConflict`: a concurrent conditional write to the key.
    ConditionalConflict,
    /// 416: the range starts past the end of the object.
    InvalidRange,
    /// 403: the credentials may not do this.
    Denied,
    /// Unreachable, timed out, throttled or 5xx, after the SDK's retries.
    Unavailable,
    /// Anything else.
    Other,
}

/// Error codes S3 uses for "slow down" and "try later" (besides 429 and 5xx statuses).
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
];

impl Failure {
    fn of<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Self {
        match err {
            SdkError::TimeoutError(_) => return Self::Unavailable,
            SdkError::DispatchFailure(e) => {
                return if e.is_io() || e.is_timeout() { Self::Unavailable } else { Self::Other };
            }
            SdkError::ConstructionFailure(_) => return Self::Other,
            _ => {}
        }
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code();
        match (status, code) {
            (_, Some("ConditionalRequestConflict")) => Self::ConditionalConflict,
            (Some(412), _) | (_, Some("PreconditionFailed")) => Self::PreconditionFailed,
            // A missing bucket is a configuration error, not a missing object.
            (_, Some("NoSuchBucket")) => Self::Other,
            (Some(404), _) | (_, Some("NoSuchKey" | "NotFound")) => Self::NotFound,
            (Some(416), _) | (_, Some("InvalidRange")) => Self::InvalidRange,
            (Some(403), _) | (_, Some("AccessDenied")) => Self::Denied,
            (Some(429 | 500..=599), _) => Self::Unavailable,
            (_, Some(c)) if TRANSIENT_CODES.contains(&c) => Self::Unavailable,
            _ => Self::Other,
        }
    }
}

/// Converts SDK results into store results, through [`Failure::of`].
trait ResultExt<T> {
    fn convert_errors(self) -> Result<T, Error>;
}

impl<T, E> ResultExt<T> for Result<T, SdkError<E>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn convert_errors(self) -> Result<T, Error> {
        self.map_err(|err| match Failure::of(&err) {
            Failure::NotFound => Error::NotFound,
            Failure::Denied => Error::Denied(Box::new(err)),
            // A conflict still there after `put_if_absent`'s retries is another write to the key
            // in flight: S3 says to retry, so the caller should too.
            Failure::Unavailable | Failure::ConditionalConflict => Error::Unavailable(Box::new(err)),
            Failure::PreconditionFailed | Failure::InvalidRange | Failure::Other => {
                Error::Backend(Box::new(err))
            }
        })
    }
}

fn system_time(t: Option<&DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

fn size_of(len: Option<i64>) -> u64 {
    len.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

impl Store for S3Store {
    fn bucket(&self) -> Option<&str> {
        Some(&self.bucket)
    }

    fn location(&self, key: &ObjectKey) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn head(&self, key: &StoreKey) -> Result<Option<ObjectMeta>, Error> {
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.name())
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .convert_errors();
        match result {
            Ok(out) => Ok(Some(ObjectMeta {
                size: size_of(out.content_length),
                last_modified: system_time(out.last_modified.as_ref()),
                version_id: out.version_id,
                checksum_sha256: out.checksum_sha256,
                metadata: out.metadata.unwrap_or_default().into_iter().collect(),
            })),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put_if_absent(&self, key: &StoreKey, staged: Staged) -> Result<PutOutcome, Error> {
        if staged.size > MAX_SINGLE_PUT_BYTES {
            return Err(Error::Backend(
                format!(
                    "a package of {} bytes is larger than the largest single S3 PUT ({MAX_SINGLE_PUT_BYTES} bytes)",
                    staged.size
                )
                .into(),
            ));
        }
        let mut backoff = CONFLICT_BACKOFF;
        let mut conflicts = 0;
        loop {
            let result = self.put_once(key, &staged).await;
            let Err(err) = result else {
                return result.convert_errors();
            };
            match Failure::of(&err) {
                // Also what a retried attempt sees when an earlier one landed but its answer was
                // lost: `publish` then verifies the object by HEAD, as for any lost race.
                Failure::PreconditionFailed => return Ok(PutOutcome::AlreadyExists),
                Failure::ConditionalConflict if conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    tracing::debug!(%key, conflicts, "concurrent conditional write, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                _ => return Err::<PutOutcome, _>(err).convert_errors(),
            }
        }
    }

    async fn list(&self, request: &ListRequest) -> Result<Listing, Error> {
        let prefix = request.prefix();
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix.raw())
            // Like the local store's folder listing: unless the prefix asks for deeper
            // "folders", their keys come back as common prefixes, which are skipped.
            .set_delimiter((!prefix.recursive()).then(|| "/".to_owned()))
            .max_keys(i32::try_from(request.max()).unwrap_or(1000))
            .set_start_after(request.start_after().map(str::to_owned))
            .send()
            .await
            .convert_errors()?;
        let objects = page
            .contents()
            .iter()
            .filter_map(|o| {
                let key = prefix.parse(o.key()?)?;
                let meta = ObjectMeta {
                    size: size_of(o.size),
                    last_modified: system_time(o.last_modified()),
                    version_id: None,
                    checksum_sha256: None,
                    metadata: Default::default(),
                };
                Some((key, meta))
            })
            .collect();
        // The last name S3 looked at, object or common prefix: the next page starts after it.
        // After a common prefix, a start-after inside it would list the folder again, so the
        // cursor skips past every key below it ('/' + 1 is '0').
        let last = page.contents().iter().filter_map(|o| o.key()).max().map(str::to_owned);
        let last_folder = page
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .max()
            .map(|p| format!("{}0", &p[..p.len() - 1]));
        let next = (page.is_truncated == Some(true))
            .then(|| last.into_iter().chain(last_folder).max())
            .flatten()
            .map(ListCursor::after_name);
        Ok(Listing { objects, next })
    }

    async fn read_range(&self, key: &StoreKey, range: ByteRange) -> Result<Bytes, Error> {
        let header = match range {
            ByteRange::Tail(n) if n > 0 => format!("bytes=-{n}"),
            ByteRange::Span { start, end } if end > start => format!("bytes={start}-{}", end - 1),
            // HTTP has no empty range; answer like the local store (empty, or NotFound).
            _ => {
                return match self.head(key).await? {
                    Some(_) => Ok(Bytes::new()),
                    None => Err(Error::NotFound),
                };
            }
        };
        let result = self.client.get_object().bucket(&self.bucket).key(key.name()).range(header).send().await;
        let output = match result {
            Ok(output) => output,
            // The range starts at or past the end: the object exists, the slice is empty.
            Err(err) if Failure::of(&err) == Failure::InvalidRange => return Ok(Bytes::new()),
            Err(err) => return Err::<Bytes, _>(err).convert_errors(),
        };
        let bytes = output.body.collect().await.map_err(|e| Error::Unavailable(Box::new(e)))?;
        Ok(bytes.into_bytes())
    }

    async fn get(&self, key: &StoreKey) -> Result<ObjectBody, Error> {
        let output =
            self.client.get_object().bucket(&self.bucket).key(key.name()).send().await.convert_errors()?;
        let size = size_of(output.content_length);
        let stream = tokio_util::io::ReaderStream::with_capacity(output.body.into_async_read(), 256 * 1024);
        Ok(ObjectBody { size, stream: stream.boxed() })
    }

    async fn ready(&self) -> Result<(), Error> {
        let result = self.client.head_bucket().bucket(&self.bucket).send().await.convert_errors();
        match result {
            Ok(_) => Ok(()),
            Err(Error::NotFound) => {
                Err(Error::Backend(format!("bucket {} does not exist", self.bucket).into()))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The status and code mapping, on constructed SDK errors. The behaviour against a real
    //! S3-compatible server is tested in `tests/it/store_contract.rs`.

    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    use super::*;

    fn service(status: u16, code: Option<&str>) -> SdkError<PutObjectError> {
        let mut meta = ErrorMetadata::builder();
        if let Some(code) = code {
            meta = meta.code(code);
        }
        let raw = HttpResponse::new(status.try_into().expect("a status"), SdkBody::empty());
        SdkError::service_error(PutObjectError::generic(meta.build()), raw)
    }

    #[test]
    fn statuses_and_codes_have_one_meaning_each() {
        for (status, code, expected) in [
            (404, Some("NoSuchKey"), Failure::NotFound),
            // HEAD responses have no body, hence no code.
            (404, None, Failure::NotFound),
            (404, Some("NoSuchBucket"), Failure::Other),
            (412, Some("PreconditionFailed"), Failure::PreconditionFailed),
            (409, Some("ConditionalRequestConflict"), Failure::ConditionalConflict),
            (409, Some("OperationAborted"), Failure::Other),
            (416, Some("InvalidRange"), Failure::InvalidRange),
            (403, None, Failure::Denied),
            (403, Some("AccessDenied"), Failure::Denied),
            (403, Some("InvalidAccessKeyId"), Failure::Denied),
            (503, Some("SlowDown"), Failure::Unavailable),
            (500, Some("InternalError"), Failure::Unavailable),
            (502, None, Failure::Unavailable),
            (429, None, Failure::Unavailable),
            (400, Some("RequestTimeout"), Failure::Unavailable),
            (400, Some("BadDigest"), Failure::Other),
            (400, Some("InvalidArgument"), Failure::Other),
        ] {
            assert_eq!(Failure::of(&service(status, code)), expected, "{status} {code:?}");
        }
    }

    #[test]
    fn transport_failures_are_unavailable() {
        let refused: SdkError<PutObjectError> =
            SdkError::dispatch_failure(ConnectorError::io("connection refused".into()));
        assert_eq!(Failure::of(&refused), Failure::Unavailable);
        let timeout: SdkError<PutObjectError> =
            SdkError::dispatch_failure(ConnectorError::timeout("connect timeout".into()));
        assert_eq!(Failure::of(&timeout), Failure::Unavailable);
        let attempt: SdkError<PutObjectError> = SdkError::timeout_error("attempt timeout");
        assert_eq!(Failure::of(&attempt), Failure::Unavailable);
        let user: SdkError<PutObjectError> =
            SdkError::dispatch_failure(ConnectorError::user("bad request".into()));
        assert_eq!(Failure::of(&user), Failure::Other);
        let construction: SdkError<PutObjectError> = SdkError::construction_failure("missing field");
        assert_eq!(Failure::of(&construction), Failure::Other);
    }

    #[test]
    fn failures_become_store_errors_and_403_is_never_absent() {
        let convert = |e: SdkError<PutObjectError>| Err::<(), _>(e).convert_errors();
        assert!(matches!(convert(service(404, None)), Err(Error::NotFound)));
        assert!(matches!(convert(service(403, None)), Err(Error::Denied(_))));
        assert!(matches!(convert(service(503, Some("SlowDown"))), Err(Error::Unavailable(_))));
        assert!(matches!(
            convert(service(409, Some("ConditionalRequestConflict"))),
            Err(Error::Unavailable(_))
        ));
        assert!(matches!(convert(service(400, Some("BadDigest"))), Err(Error::Backend(_))));
    }
}
