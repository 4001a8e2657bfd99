"""lambda-packager's hooks for stacker and runway: reproducible Lambda zips, stored once.

- :mod:`lambda_packager.stacker`: drop-in for ``stacker.hooks.aws_lambda`` (stacker 1.7.2).
- :mod:`lambda_packager.runway`: drop-in for ``runway.cfngin.hooks.aws_lambda``.

Underneath, shared by both: :mod:`~lambda_packager.selection` (stacker's formic selection),
:mod:`~lambda_packager.packing` (the ``lambda-packager`` CLI builds every zip),
:mod:`~lambda_packager.s3` (store once: HEAD, conditional PUT with the SHA-256 checksum),
:mod:`~lambda_packager.server` (server mode) and :mod:`~lambda_packager.hook`.
Importing this package imports neither stacker nor runway.
"""

from .errors import PackagerError

__all__ = ["PackagerError", "__version__"]

__version__ = "0.1.0"
