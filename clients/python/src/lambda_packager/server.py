"""Server mode: the selected files go to a lambda-packager service, which packs and stores them.

The requests are what ``lambda-packager push`` sends. First, when the ``lambda-packager``
binary is at hand, the files are packed here (exactly as local mode packs them) and the service
is asked whether it has that zip: ``POST /v1/functions/{function}/package/lookup`` with its
digest, size and file count, and ``prefix`` when there is one. A stored package is answered at
once, and nothing is uploaded. Otherwise (or without the binary, or from a service older than
the lookup): ``POST /v1/functions/{function}/package`` with ``default_excludes=false`` (formic
selected already) and ``prefix``, and the files as a tar.gz built exactly like the tar the local
mode gives the CLI, so both modes give one key. A prebuilt zip is sent as it is; the service
re-packages it as the CLI does. Both carry ``Authorization: Bearer`` from
``LAMBDA_PACKAGER_TOKEN``. The machine running the hook needs no S3 credentials, and needs the
binary only to skip uploads.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import IO, Any, Dict, Optional, Sequence, Union

from . import packing
from .errors import PackagerError
from .packing import write_tar
from .selection import SelectedFile

#: The environment variables of server mode (the same as ``lambda-packager push``'s).
SERVER_ENV = "LAMBDA_PACKAGER_SERVER"
TOKEN_ENV = "LAMBDA_PACKAGER_TOKEN"

#: Longest wait for the service's answer, in seconds (its own request timeout is 300 s).
TIMEOUT_SECONDS = 600

#: Request bodies stay in memory up to this size, then spill to a temp file.
SPOOL_BYTES = 8 << 20


@dataclass(frozen=True)
class Published:
    """The service's answer to a package request."""

    bucket: Optional[str]
    key: str
    sha256: str
    code_sha256: str
    size: int
    files: int
    uploaded: bool
    version_id: Optional[str]


def publish(
    server: str,
    function: str,
    source: Union[Sequence[SelectedFile], str],
    *,
    prefix: str = "",
    token: Optional[str] = None,
) -> Published:
    """Sends ``source`` (selected files, or the path of a prebuilt zip) to ``server``, unless
    the service already has its package."""
    stored = lookup(server, function, source, prefix=prefix, token=token)
    if stored is not None:
        return stored
    query = [("default_excludes", "false")]
    if prefix:
        query.append(("prefix", prefix))
    url = (
        f"{server.rstrip('/')}/v1/functions/{urllib.parse.quote(function, safe='')}/package?"
        + urllib.parse.urlencode(query)
    )
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as body:
        if isinstance(source, str):
            content_type = "application/zip"
            with open(source, "rb") as zipped:
                for chunk in iter(lambda: zipped.read(1 << 20), b""):
                    body.write(chunk)
        else:
            content_type = "application/gzip"
            with gzip.GzipFile(fileobj=body, mode="wb", compresslevel=6, mtime=0) as gz:
                write_tar(source, gz)  # type: ignore[arg-type]
        size = body.tell()
        body.seek(0)
        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        answer = _send(request, server)
    return _published(answer, server)


def lookup(
    server: str,
    function: str,
    source: Union[Sequence[SelectedFile], str],
    *,
    prefix: str = "",
    token: Optional[str] = None,
) -> Optional[Published]:
    """The service's package of ``source``, if it has it: packed here with the binary, then
    asked about by digest. ``None`` when it does not (upload it), when the service has no
    lookup route (an older version), or when no binary is installed and none is configured."""
    try:
        packing.find_binary()
    except PackagerError:
        if os.environ.get(packing.BIN_ENV):
            raise
        return None
    if isinstance(source, str):
        packer, upload_format = packing.pack_zip(source), "zip"
    else:
        packer, upload_format = packing.pack_files(source), "tar.gz"
    with packer as package:
        asked: Dict[str, Any] = {
            "sha256": package.sha256,
            "size": package.size,
            "files": package.files,
            "format": upload_format,
        }
    if prefix:
        asked["prefix"] = prefix
    url = f"{server.rstrip('/')}/v1/functions/{urllib.parse.quote(function, safe='')}/package/lookup"
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url, data=json.dumps(asked).encode(), headers=headers, method="POST"
    )
    try:
        answer = _send(request, server)
    except PackagerError as e:
        # 404: not stored (`artifact_not_found`), or no such route; 405: no such route.
        if e.status in (404, 405):
            return None
        raise
    return _published(answer, server)


def _published(answer: Dict[str, Any], server: str) -> Published:
    try:
        return Published(
            bucket=answer["bucket"],
            key=answer["key"],
            sha256=answer["sha256"],
            code_sha256=answer["code_sha256"],
            size=answer["size"],
            files=answer["files"],
            uploaded=answer["uploaded"],
            version_id=answer.get("version_id"),
        )
    except (KeyError, TypeError) as e:
        raise PackagerError("server_error", f"{server} answered {str(answer)[:200]}") from e


def _send(request: urllib.request.Request, server: str) -> Dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            text = response.read()
    except urllib.error.HTTPError as e:
        raise _http_error(e, server) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise PackagerError("server_unreachable", f"cannot reach {server}: {reason}") from e
    try:
        parsed: Dict[str, Any] = json.loads(text)
        return parsed
    except ValueError as e:
        raise PackagerError("server_error", f"{server} answered non-JSON: {text[:200]!r}") from e


def _http_error(e: urllib.error.HTTPError, server: str) -> PackagerError:
    body: IO[bytes] = e
    text = body.read()
    try:
        error = json.loads(text)["error"]
        return PackagerError(str(error["code"]), str(error["message"]), status=e.code)
    except (ValueError, KeyError, TypeError):
        return PackagerError(
            "server_error", f"{server} answered {e.code}: {text[:200]!r}", status=e.code
        )
