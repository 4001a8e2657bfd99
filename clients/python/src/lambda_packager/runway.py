"""Drop-in replacement for runway's CFNgin hook ``runway.cfngin.hooks.aws_lambda``.

Switch a CFNgin config (runway 1.x or 2.x) to it by changing one line::

    pre_deploy:          # pre_build in runway 1.x
      - path: lambda_packager.runway.upload_lambda_functions  # was runway.cfngin.hooks.aws_lambda
        data_key: lambda
        args: {...unchanged...}

Arguments, selection (formic, as runway's hook), errors and return value
(``{Name: troposphere.awslambda.Code}``) are runway's; the package is lambda-packager's canonical
zip, keyed ``{prefix}lambda-{Name}-{sha256}.zip`` and stored once (see
:mod:`lambda_packager.stacker`). Each returned ``Code`` also carries ``code_sha256``, the
``CodeSha256`` runway's ``awslambda`` hooks report.

Differences, each an explicit choice:

- ``layer: true`` on a function puts its files under ``python/``, as runway's ``PythonLayer``
  lays out a Lambda layer.
- runway installs dependencies when the function's directory has ``requirements.txt``,
  ``Pipfile`` or ``Pipfile.lock``; lambda-packager packages trees, it does not build them. Such a
  function is refused unless it sets ``ignore_requirements: true`` (install the dependencies into
  the tree first, e.g. ``pip install -r requirements.txt -t DIR``), so nothing deployed loses
  its dependencies silently.
- ``server`` (or ``LAMBDA_PACKAGER_SERVER``) sends the files to a lambda-packager service.
"""

from __future__ import annotations

import logging
import os
import os.path
from typing import Any, Dict, Iterable, Optional

from . import hook, s3
from .packing import ZIP_PERMS_MASK, pack_files
from .selection import check_pattern_list, files_under, find_files

__all__ = ["ZIP_PERMS_MASK", "select_bucket_region", "upload_lambda_functions"]

logger = logging.getLogger(__name__)

#: The files that make runway's hook install dependencies.
REQUIREMENTS_FILES = ("requirements.txt", "Pipfile", "Pipfile.lock")

#: Where a Python layer's files go (runway's ``PythonLayer``; AWS Lambda adds it to sys.path).
LAYER_DIRECTORY = "python/"


def upload_lambda_functions(
    context: Any, provider: Any, **kwargs: Any
) -> Dict[str, hook.PackagedCode]:
    """Builds each function's package and stores it once; returns ``{Name: Code}``.

    Keyword arguments (runway's): ``bucket``, ``bucket_region``, ``prefix``,
    ``follow_symlinks``, ``payload_acl``, ``functions: {Name: {path, include, exclude}}``;
    plus ``server``, and per function ``layer`` and ``ignore_requirements``. ``path`` is a
    directory relative to the CFNgin config file's directory (or ``~``).
    """
    custom_bucket = kwargs.get("bucket", "")
    if not custom_bucket:
        if not context.bucket_name:
            raise ValueError("hook requires bucket argument or top-level cfngin_hook")
        bucket_name = context.bucket_name
        logger.info("using default bucket from CFNgin: %s", bucket_name)
    else:
        bucket_name = custom_bucket
        logger.info("using custom bucket: %s", bucket_name)

    custom_bucket_region = kwargs.get("bucket_region", "")
    if not custom_bucket and custom_bucket_region:
        raise ValueError("Cannot specify `bucket_region` without specifying `bucket`.")

    bucket_region = select_bucket_region(
        custom_bucket,
        custom_bucket_region,
        context.config.cfngin_bucket_region,
        provider.region or "us-east-1",
    )

    follow_symlinks = kwargs.get("follow_symlinks", False)
    if not isinstance(follow_symlinks, bool):
        raise ValueError("follow_symlinks option must be a boolean")

    destination: hook.Destination
    url = hook.server_url(kwargs)
    if url:
        logger.info("packaging with the lambda-packager service at %s", url)
        destination = hook.server_destination(url, kwargs, custom_bucket)
    else:
        prefix = hook.check_prefix(kwargs.get("prefix", ""))
        payload_acl = kwargs.get("payload_acl", "private")
        # runway 1.x and 2.x contexts both make the session (with the deployment's credentials).
        s3_client = context.get_session(region=bucket_region).client("s3")
        s3.ensure_bucket(s3_client, bucket_name, bucket_region)
        destination = hook.S3Destination(s3_client, bucket_name, prefix, payload_acl)

    results = {}
    for name, options in kwargs["functions"].items():
        config_path = str(context.config_path)
        sys_path = os.path.dirname(config_path) if os.path.isfile(config_path) else config_path
        results[name] = _upload_function(destination, name, options, follow_symlinks, sys_path)
    return results


def select_bucket_region(
    custom_bucket: Optional[str],
    hook_region: Optional[str],
    cfngin_bucket_region: Optional[str],
    provider_region: str,
) -> str:
    """The region of the bucket packages go to (runway's rule).

    With a custom ``bucket``: the hook's ``bucket_region``; otherwise the global
    ``cfngin_bucket_region``; failing either, the provider's region.
    """
    region = hook_region if custom_bucket else cfngin_bucket_region
    return region or provider_region


def _calculate_hash(files: Iterable[str], root: str) -> str:
    """The SHA-256 (hex) of the package ``files`` (relative to ``root``) make: the hash in
    the key (runway's was an MD5 over names and contents)."""
    with pack_files(files_under(root, list(files))) as package:
        return package.sha256


def _upload_function(
    destination: hook.Destination,
    name: str,
    options: Dict[str, Any],
    follow_symlinks: bool,
    sys_path: str,
) -> hook.PackagedCode:
    try:
        root = os.path.expanduser(options["path"])
    except KeyError as e:
        raise ValueError(f"missing required property '{e.args[0]}' in function '{name}'") from e
    hook.check_function_name(name)

    includes = check_pattern_list(options.get("include"), "include", default=["**"]) or []
    excludes = check_pattern_list(options.get("exclude"), "exclude", default=[]) or []
    layer = options.get("layer", False)
    if not isinstance(layer, bool):
        raise ValueError(f"layer option of function '{name}' must be a boolean")
    ignore_requirements = options.get("ignore_requirements", False)
    if not isinstance(ignore_requirements, bool):
        raise ValueError(f"ignore_requirements option of function '{name}' must be a boolean")

    logger.debug("processing function: %s", name)
    if not os.path.isabs(root):
        root = os.path.abspath(os.path.join(sys_path, root))

    found = [f for f in REQUIREMENTS_FILES if os.path.isfile(os.path.join(root, f))]
    if found and not ignore_requirements:
        raise ValueError(
            f"function '{name}': {root} has {', '.join(found)}, whose dependencies runway's hook "
            "would install into the package; lambda_packager.runway packages the directory as "
            "it is. Install them into it first (pip install -r requirements.txt -t DIR) and "
            "set ignore_requirements: true for the function"
        )

    logger.info("base directory: %s", root)
    files = find_files(
        root, includes, excludes, follow_symlinks, under=LAYER_DIRECTORY if layer else ""
    )
    if not files:
        raise RuntimeError(
            "Empty list of files for Lambda payload. Check your include/exclude options for errors."
        )
    logger.info("adding %d files:", len(files))
    for selected in files:
        logger.debug(" + %s", selected.name)
    return destination.publish(name, files)
