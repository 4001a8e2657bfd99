"""What the stacker and the runway hook share: where packages go, and what a hook returns.

A hook resolves its configuration the way stacker (or runway) does, selects files with
:mod:`lambda_packager.selection`, then hands each function to a :class:`Destination`:

- :class:`S3Destination` (local mode): ``lambda-packager pack`` builds the zip on this machine
  and :func:`lambda_packager.s3.store_once` stores it in the hook's bucket;
- :class:`ServerDestination` (server mode, with ``server`` or ``LAMBDA_PACKAGER_SERVER``): the
  files go to a lambda-packager service, which builds and stores the same bytes.

Both return a :class:`PackagedCode`, a ``troposphere.awslambda.Code`` (so blueprints and
templates see exactly what stacker returned) that also carries the package's digests.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

from troposphere.awslambda import Code

from . import s3, server
from .errors import PackagerError
from .packing import pack_files, pack_zip
from .selection import SelectedFile

logger = logging.getLogger(__name__)

#: What a function's package is made of: selected files, or the path of a prebuilt zip.
Source = Union[Sequence[SelectedFile], str]

_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class PackagedCode(Code):  # type: ignore[misc]
    """``Code(S3Bucket=..., S3Key=...)``, exactly what stacker returns, plus the package's facts.

    In a template it is a plain ``Code``; in Python it also answers ``code_sha256`` (what
    ``AWS::Lambda::Version`` calls ``CodeSha256``), ``sha256``, ``size``, ``uploaded`` and
    ``version_id``.
    """

    code_sha256: str
    sha256: str
    size: int
    uploaded: bool
    version_id: Optional[str]

    def __init__(
        self,
        *,
        bucket: str,
        key: str,
        code_sha256: str,
        sha256: str,
        size: int,
        uploaded: bool,
        version_id: Optional[str],
    ) -> None:
        super().__init__(S3Bucket=bucket, S3Key=key)
        # Plain attributes, not CloudFormation properties (troposphere refuses unknown ones).
        for name, value in (
            ("code_sha256", code_sha256),
            ("sha256", sha256),
            ("size", size),
            ("uploaded", uploaded),
            ("version_id", version_id),
        ):
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class S3Destination:
    """Local mode: pack here with the CLI, store in ``bucket`` with a conditional put."""

    client: Any
    bucket: str
    prefix: str
    acl: Optional[str]

    def publish(self, function: str, source: Source) -> PackagedCode:
        """Packages ``source`` as ``function`` and stores it once."""
        packer = (
            pack_zip(source, function=function, prefix=self.prefix)
            if isinstance(source, str)
            else pack_files(source, function=function, prefix=self.prefix)
        )
        with packer as package:
            if package.key is None:
                raise PackagerError("package_mismatch", "lambda-packager pack reported no key")
            logger.debug(
                "lambda: package %s: %d files, %d bytes", package.key, package.files, package.size
            )
            stored = s3.store_once(self.client, self.bucket, package.key, package, acl=self.acl)
        return PackagedCode(
            bucket=self.bucket,
            key=package.key,
            code_sha256=package.code_sha256,
            sha256=package.sha256,
            size=package.size,
            uploaded=stored.uploaded,
            version_id=stored.version_id,
        )


@dataclass(frozen=True)
class ServerDestination:
    """Server mode: the service packs and stores; its bucket and key are the answer."""

    url: str
    token: Optional[str]
    prefix: str
    #: The hook's own ``bucket``, if it named one: only compared with the service's.
    expected_bucket: Optional[str] = None

    def publish(self, function: str, source: Source) -> PackagedCode:
        """Sends ``source`` to the service as ``function``."""
        answer = server.publish(self.url, function, source, prefix=self.prefix, token=self.token)
        if self.expected_bucket and answer.bucket and answer.bucket != self.expected_bucket:
            logger.warning(
                "lambda: server mode: %s stored %s in its bucket %s, not in bucket %s",
                self.url,
                answer.key,
                answer.bucket,
                self.expected_bucket,
            )
        if answer.bucket is None:
            raise PackagerError(
                "server_has_no_bucket",
                f"{self.url} keeps packages in a local folder, not in S3 "
                f"(it stored {answer.key}); a CloudFormation Code needs a bucket: configure "
                'that service with store.backend = "s3"',
            )
        logger.info(
            "lambda: %s s3://%s/%s",
            "uploaded" if answer.uploaded else "already stored",
            answer.bucket,
            answer.key,
        )
        return PackagedCode(
            bucket=answer.bucket,
            key=answer.key,
            code_sha256=answer.code_sha256,
            sha256=answer.sha256,
            size=answer.size,
            uploaded=answer.uploaded,
            version_id=answer.version_id,
        )


Destination = Union[S3Destination, ServerDestination]


def server_url(args: Mapping[str, Any]) -> Optional[str]:
    """The service to use: the hook's ``server`` argument, else ``$LAMBDA_PACKAGER_SERVER``."""
    url = args.get("server") or os.environ.get(server.SERVER_ENV)
    if url is not None and not isinstance(url, str):
        raise ValueError("server option must be a URL string")
    return url or None


def server_destination(
    url: str, args: Mapping[str, Any], custom_bucket: Optional[str]
) -> ServerDestination:
    """The server-mode destination, refusing options the service cannot honour."""
    acl = args.get("payload_acl", "private")
    if acl != "private":
        raise ValueError(
            f"payload_acl {acl!r} cannot be applied in server mode: the lambda-packager service "
            "stores objects with its bucket's own ACL (remove payload_acl, or unset server)"
        )
    return ServerDestination(
        url=url,
        token=os.environ.get(server.TOKEN_ENV) or None,
        prefix=check_prefix(args.get("prefix", "")),
        expected_bucket=custom_bucket or None,
    )


def check_function_name(name: Any) -> str:
    """Refuses names that cannot be part of a package key, before any work is done."""
    if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
        raise ValueError(
            f"function name {name!r}: function names are 1 to 64 characters of A-Z, a-z, 0-9, "
            "'-' and '_' (they become part of the key lambda-{name}-{sha256}.zip)"
        )
    return name


def check_prefix(prefix: Any) -> str:
    """Refuses a key prefix lambda-packager would refuse: it is empty or ends with ``/``."""
    if not isinstance(prefix, str):
        raise ValueError("prefix option must be a string")
    body = prefix[:-1] if prefix.endswith("/") else None
    if prefix and (
        body is None
        or any(part in ("", ".", "..") for part in body.split("/"))
        or any(unicodedata.category(c) == "Cc" for c in prefix)
        or len(prefix.encode()) > 512
    ):
        raise ValueError(
            f"prefix {prefix!r}: a key prefix is empty or ends with '/', with no empty, '.' or "
            "'..' component and no leading '/'"
        )
    return prefix
