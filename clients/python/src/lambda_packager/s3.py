"""Storing a package in S3 exactly once, the way the service does.

``HEAD`` first: an object under the key that has the package's size (and its SHA-256, when S3
keeps a full-object checksum) *is* this package, and nothing is written. Otherwise one
``PutObject`` with ``If-None-Match: *`` and ``x-amz-checksum-sha256``: S3 refuses the body if
it was corrupted on the way, and refuses the write (412) if another machine stored the key
first, after which that object is verified like any existing one. A 409
``ConditionalRequestConflict`` (a concurrent conditional write still in flight) is retried.
Different bytes under a package's key are never accepted: ``key_conflict``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import botocore.exceptions

from .errors import PackagerError
from .packing import Package

logger = logging.getLogger(__name__)

#: Retries of a ``PutObject`` that got 409 ``ConditionalRequestConflict``.
CONFLICT_RETRIES = 5

#: The first wait after such a 409, in seconds; it doubles on each retry.
CONFLICT_BACKOFF_SECONDS = 0.1

#: Content-addressed objects never change (the service's ``Cache-Control``).
CACHE_CONTROL = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Stored:
    """The outcome of :func:`store_once`."""

    #: Whether this call wrote the object (``False``: it was there already).
    uploaded: bool
    #: The object's version id, on a versioned bucket.
    version_id: Optional[str]


def store_once(
    client: Any, bucket: str, key: str, package: Package, *, acl: Optional[str] = None
) -> Stored:
    """Stores ``package`` under ``key`` unless the same bytes are already there.

    ``acl`` is a canned ACL for the new object (stacker's ``payload_acl``); an existing object
    is left as it is.
    """
    existing = head(client, bucket, key)
    if existing is not None:
        _verify(existing, bucket, key, package)
        logger.info("lambda: object %s already exists, not uploading", key)
        return Stored(uploaded=False, version_id=existing.get("VersionId"))
    backoff = CONFLICT_BACKOFF_SECONDS
    conflicts = 0
    while True:
        try:
            answer = _put(client, bucket, key, package, acl)
            logger.info("lambda: uploaded object %s", key)
            return Stored(uploaded=True, version_id=answer.get("VersionId"))
        except botocore.exceptions.ClientError as e:
            code, status = _error(e)
            if status == 412 or code == "PreconditionFailed":
                # Another machine stored the key between our HEAD and PUT.
                logger.info("lambda: object %s was stored meanwhile, verifying it", key)
                stored = head(client, bucket, key)
                if stored is None:
                    raise PackagerError(
                        "store_error", f"s3://{bucket}/{key} vanished after a conditional put lost"
                    ) from e
                _verify(stored, bucket, key, package)
                return Stored(uploaded=False, version_id=stored.get("VersionId"))
            if code == "ConditionalRequestConflict" and conflicts < CONFLICT_RETRIES:
                conflicts += 1
                logger.debug("lambda: concurrent write to %s, retrying in %.1fs", key, backoff)
                time.sleep(backoff)
                backoff *= 2
                continue
            raise


def head(client: Any, bucket: str, key: str) -> Optional[Dict[str, Any]]:
    """``HeadObject`` with the stored checksum, or ``None`` if there is no such object."""
    try:
        answer: Dict[str, Any] = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        return answer
    except botocore.exceptions.ClientError as e:
        code, status = _error(e)
        if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def ensure_bucket(client: Any, bucket: str, region: Optional[str]) -> None:
    """Creates ``bucket`` in ``region`` unless it exists (stacker's and runway's
    ``ensure_s3_bucket``); a bucket we may not see is an error, never created again."""
    try:
        client.head_bucket(Bucket=bucket)
        return
    except botocore.exceptions.ClientError as e:
        code, status = _error(e)
        if status != 404 and code not in ("404", "NoSuchBucket", "NotFound"):
            if status == 403:
                logger.error(
                    "Access denied for bucket %s. Did you remember to use a globally unique name?",
                    bucket,
                )
            raise
    logger.debug("lambda: creating bucket %s", bucket)
    create: Dict[str, Any] = {"Bucket": bucket}
    if region and region != "us-east-1":
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    client.create_bucket(**create)


def _put(
    client: Any, bucket: str, key: str, package: Package, acl: Optional[str]
) -> Dict[str, Any]:
    extra: Dict[str, Any] = {"ACL": acl} if acl else {}
    with open(package.path, "rb") as body:
        answer: Dict[str, Any] = client.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentLength=package.size,
            ContentType="application/zip",
            CacheControl=CACHE_CONTROL,
            IfNoneMatch="*",
            # The algorithm makes S3 keep the checksum (HEAD returns it); the value is ours, so
            # botocore computes nothing and S3 checks the body against it.
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=package.code_sha256,
            **extra,
        )
    return answer


def _verify(existing: Dict[str, Any], bucket: str, key: str, package: Package) -> None:
    size = existing.get("ContentLength")
    checksum = existing.get("ChecksumSHA256")
    # A multipart object's checksum ("...-N") is of its parts, not comparable with ours.
    checksum_differs = (
        isinstance(checksum, str) and "-" not in checksum and checksum != package.code_sha256
    )
    if size != package.size or checksum_differs:
        raise PackagerError(
            "key_conflict",
            f"s3://{bucket}/{key} already holds other bytes ({size} bytes, checksum {checksum}) "
            f"than this package ({package.size} bytes, checksum {package.code_sha256})",
        )


def _error(e: botocore.exceptions.ClientError) -> Tuple[str, Optional[int]]:
    code = str(e.response.get("Error", {}).get("Code", ""))
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status
