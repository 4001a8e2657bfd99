"""Drop-in replacement for stacker 1.7.2's ``stacker.hooks.aws_lambda``.

Switch a stacker config to it by changing one line::

    pre_build:
      - path: lambda_packager.stacker.upload_lambda_functions   # was stacker.hooks.aws_lambda...
        data_key: lambda
        args: {...unchanged...}

The arguments, the file selection (formic), the errors and the return value
(``{Name: troposphere.awslambda.Code}``) are stacker's. What changes is the package: its bytes
are lambda-packager's canonical zip of exactly the selected files with their exec bits, and
its key is ``{prefix}lambda-{Name}-{sha256 of the zip}.zip``, the same on every machine and day,
so an unchanged function is never uploaded again. Storing is the service's: ``HEAD``, then a
``PutObject`` with ``If-None-Match: *`` and the SHA-256 checksum. With ``server:`` (or
``LAMBDA_PACKAGER_SERVER``) a lambda-packager service packs and stores instead.

Extra arguments: ``server`` (a lambda-packager URL; token from ``LAMBDA_PACKAGER_TOKEN``).
A function's ``version`` is ignored (with a warning): the key is always the package's SHA-256.
"""

from __future__ import annotations

import logging
import os
import os.path
from typing import Any, Dict, Iterable, Optional

from stacker.session_cache import get_session
from stacker.util import ensure_s3_bucket, get_config_directory

from . import hook
from .packing import ZIP_PERMS_MASK, pack_files
from .selection import check_pattern_list, files_under, find_files

__all__ = [
    "ZIP_PERMS_MASK",
    "get_config_directory",
    "get_session",
    "select_bucket_region",
    "upload_lambda_functions",
]

logger = logging.getLogger(__name__)


def upload_lambda_functions(
    context: Any, provider: Any, **kwargs: Any
) -> Dict[str, hook.PackagedCode]:
    """Builds each function's package and stores it once; returns ``{Name: Code}``.

    Keyword arguments (stacker's): ``bucket``, ``bucket_region``, ``prefix``,
    ``follow_symlinks``, ``payload_acl``, ``functions: {Name: {path, include, exclude}}``,
    plus ``server``. ``path`` is a directory or a prebuilt ``.zip``, relative to the config
    file's directory (or ``~``).
    """
    custom_bucket = kwargs.get("bucket")
    if not custom_bucket:
        bucket_name = context.bucket_name
        logger.info("lambda: using default bucket from stacker: %s", bucket_name)
    else:
        bucket_name = custom_bucket
        logger.info("lambda: using custom bucket: %s", bucket_name)

    custom_bucket_region = kwargs.get("bucket_region")
    if not custom_bucket and custom_bucket_region:
        raise ValueError("Cannot specify `bucket_region` without specifying `bucket`.")

    bucket_region = select_bucket_region(
        custom_bucket, custom_bucket_region, context.config.stacker_bucket_region, provider.region
    )

    follow_symlinks = kwargs.get("follow_symlinks", False)
    if not isinstance(follow_symlinks, bool):
        raise ValueError("follow_symlinks option must be a boolean")

    destination: hook.Destination
    url = hook.server_url(kwargs)
    if url:
        logger.info("lambda: packaging with the lambda-packager service at %s", url)
        destination = hook.server_destination(url, kwargs, custom_bucket)
    else:
        prefix = hook.check_prefix(kwargs.get("prefix", ""))
        # A canned ACL for new objects (stacker's default: private).
        payload_acl = kwargs.get("payload_acl", "private")
        # Always the global client for S3, as in stacker.
        s3_client = get_session(bucket_region).client("s3")
        ensure_s3_bucket(s3_client, bucket_name, bucket_region)
        destination = hook.S3Destination(s3_client, bucket_name, prefix, payload_acl)

    results = {}
    for name, options in kwargs["functions"].items():
        results[name] = _upload_function(destination, name, options, follow_symlinks)
    return results


def select_bucket_region(
    custom_bucket: Optional[str],
    hook_region: Optional[str],
    stacker_bucket_region: Optional[str],
    provider_region: str,
) -> str:
    """The region of the bucket packages go to (stacker's rule).

    With a custom ``bucket``: the hook's ``bucket_region``; otherwise the global
    ``stacker_bucket_region``; failing either, the provider's region.
    """
    region = hook_region if custom_bucket else stacker_bucket_region
    return region or provider_region


def _calculate_hash(files: Iterable[str], root: str) -> str:
    """The SHA-256 (hex) of the package ``files`` (relative to ``root``) make.

    stacker's version was an MD5 over names and contents; this is the digest of the very zip
    the hook stores, the hash in its key. Order of ``files`` does not matter, a name or a byte
    or an exec bit does, an mtime or a umask does not.
    """
    with pack_files(files_under(root, list(files))) as package:
        return package.sha256


def _upload_function(
    destination: hook.Destination, name: str, options: Dict[str, Any], follow_symlinks: bool
) -> hook.PackagedCode:
    try:
        path = os.path.expanduser(options["path"])
    except KeyError as e:
        raise ValueError(f"missing required property '{e.args[0]}' in function '{name}'") from None
    hook.check_function_name(name)

    if not os.path.isabs(path):
        path = os.path.abspath(os.path.join(get_config_directory(), path))

    source: hook.Source
    if path.endswith(".zip") and os.path.isfile(path):
        logger.debug("lambda: using prebuilt zip: %s", path)
        source = path
    elif os.path.isdir(path):
        logger.debug("lambda: building from directory: %s", path)
        includes = check_pattern_list(options.get("include"), "include", default=["**"]) or []
        excludes = check_pattern_list(options.get("exclude"), "exclude", default=[]) or []
        logger.info("lambda: base directory: %s", path)
        source = find_files(path, includes, excludes, follow_symlinks)
        if not source:
            raise RuntimeError(
                "Empty list of files for Lambda payload. Check your include/exclude options for "
                "errors."
            )
        logger.info("lambda: adding %d files:", len(source))
        for selected in source:
            logger.debug("lambda: + %s", selected.name)
    else:
        raise ValueError("Path must be an existing ZIP file or directory")

    if options.get("version"):
        logger.warning(
            "lambda: ignoring version %r of function %s: the key is named by the package's SHA-256",
            options["version"],
            name,
        )
    return destination.publish(name, source)
