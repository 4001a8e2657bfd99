"""The one exception type of this package: a stable code (the CLI's and the service's error
codes, plus a few of the hooks' own) and a message that says what to fix."""

from __future__ import annotations

from typing import Optional


class PackagerError(RuntimeError):
    """Packaging or storing a function failed.

    ``code`` is stable: the service's and the CLI's error codes (``invalid_path``,
    ``key_conflict``, ``unauthorized``, ...) pass through unchanged, and the hooks add
    ``packager_not_found``, ``not_a_regular_file``, ``unreadable_directory``, ``symlink_loop``,
    ``too_many_files``, ``package_mismatch``, ``server_error`` and ``server_unreachable``.
    """

    def __init__(self, code: str, message: str, *, status: Optional[int] = None) -> None:
        super().__init__(f"lambda-packager: error[{code}]: {message}")
        self.code = code
        self.message = message
        #: The HTTP status, when a lambda-packager server answered.
        self.status = status
