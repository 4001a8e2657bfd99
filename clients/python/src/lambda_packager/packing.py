"""The bytes: ``lambda-packager pack`` builds every zip, from exactly the selected files.

The hooks never write a zip themselves. They stream the selected files to ``lambda-packager
pack -`` as a tar (regular files only, each with its owner-exec bit as 0755 or 0644, links
already followed, nothing else of the file system: no mtime, owner or umask bits), with
``--no-default-excludes`` because formic did the selecting. So a hook's package is byte for
byte the one ``lambda-packager pack DIR --function NAME --prefix P`` makes of the same files,
on any machine.

The binary is ``$LAMBDA_PACKAGER_BIN``, else ``lambda-packager`` on ``PATH``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from typing import IO, Callable, Dict, Iterator, List, Optional, Sequence

from .errors import PackagerError
from .selection import SelectedFile

#: The environment variable naming the ``lambda-packager`` binary.
BIN_ENV = "LAMBDA_PACKAGER_BIN"

#: Mask of the Unix permission bits in a zip entry's external attributes (stacker's name).
#: Every entry lambda-packager writes has exactly 0755 or 0644 there.
ZIP_PERMS_MASK = (stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO) << 16


@dataclass(frozen=True)
class Package:
    """A zip built by ``lambda-packager pack``."""

    #: The zip file (deleted when the :func:`pack_files` / :func:`pack_zip` block ends).
    path: str
    #: SHA-256 of the zip, hex: the hash in the key.
    sha256: str
    #: The same digest in base64: AWS Lambda's ``CodeSha256``, S3's ``ChecksumSHA256``.
    code_sha256: str
    #: Size of the zip in bytes.
    size: int
    #: Number of files in the zip.
    files: int
    #: ``{prefix}lambda-{function}-{sha256}.zip``, when a function name was given.
    key: Optional[str]


def find_binary() -> str:
    """The ``lambda-packager`` executable: ``$LAMBDA_PACKAGER_BIN``, else the one on ``PATH``."""
    configured = os.environ.get(BIN_ENV)
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise PackagerError(
            "packager_not_found", f"{BIN_ENV}={configured!r} is not an executable file"
        )
    found = shutil.which("lambda-packager")
    if found:
        return found
    raise PackagerError(
        "packager_not_found",
        f"the lambda-packager binary was not found: set {BIN_ENV} to its path, "
        "or put lambda-packager on PATH",
    )


def write_tar(files: Sequence[SelectedFile], out: IO[bytes]) -> Dict[str, int]:
    """Writes ``files`` to ``out`` as a tar stream; returns each package path's mode.

    Only what the package keeps is written: the path, the bytes and 0755 or 0644 from the
    owner-exec bit (after following links). Everything else in a header is fixed.
    """
    modes: Dict[str, int] = {}
    # PAX for long and non-ASCII names; surrogateescape lets a non-UTF-8 name through, for
    # lambda-packager to refuse it with `invalid_path` rather than this stream failing.
    with tarfile.open(
        fileobj=out,
        mode="w|",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
    ) as tar:
        for selected in files:
            with _open_regular(selected.path) as data:
                info = os.fstat(data.fileno())
                mode = 0o755 if info.st_mode & stat.S_IXUSR else 0o644
                member = tarfile.TarInfo(selected.name)
                member.size = info.st_size
                member.mode = mode
                member.mtime = 0
                tar.addfile(member, data)
            modes[selected.name] = mode
    return modes


@contextlib.contextmanager
def pack_files(
    files: Sequence[SelectedFile], *, function: Optional[str] = None, prefix: str = ""
) -> Iterator[Package]:
    """Packages ``files`` with ``lambda-packager pack -``; the zip lives until the block ends.

    The zip is checked against the selection before it is handed out: the same paths, each
    with the mode it was given (:data:`ZIP_PERMS_MASK`), and the SHA-256 the CLI reported.
    """
    if not files:
        raise PackagerError("empty_package", "no file to package")
    with tempfile.TemporaryDirectory(prefix="lambda-packager-") as work:
        out = os.path.join(work, "package.zip")
        modes: Dict[str, int] = {}

        def feed(stdin: IO[bytes]) -> None:
            modes.update(write_tar(files, stdin))

        package = _run_pack(["-"], work, out, function, prefix, feed)
        _check_entries(package, modes)
        yield package


@contextlib.contextmanager
def pack_zip(path: str, *, function: Optional[str] = None, prefix: str = "") -> Iterator[Package]:
    """Re-packages an existing zip canonically (every file of it; exec bits from its entries)."""
    with tempfile.TemporaryDirectory(prefix="lambda-packager-") as work:
        yield _run_pack([path], work, os.path.join(work, "package.zip"), function, prefix, None)


def _run_pack(
    source: List[str],
    work: str,
    out: str,
    function: Optional[str],
    prefix: str,
    feed: Optional[Callable[[IO[bytes]], None]],
) -> Package:
    command = [find_binary(), "pack", *source, "--no-default-excludes", "--out", out]
    if function is not None:
        command += ["--function", function]
    if prefix:
        command += ["--prefix", prefix]
    # Output goes to files, not pipes: nothing can block while the tar is being written.
    with (
        open(os.path.join(work, "stdout"), "w+b") as stdout,
        open(os.path.join(work, "stderr"), "w+b") as stderr,
    ):
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            if feed is not None and process.stdin is not None:
                try:
                    feed(process.stdin)
                    process.stdin.close()
                except BrokenPipeError:
                    # lambda-packager stopped reading: its error says why.
                    pass
            status = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
        stdout.seek(0)
        stderr.seek(0)
        output, errors = stdout.read(), stderr.read().decode("utf-8", "replace")
    if status != 0:
        raise _cli_error(errors, status)
    try:
        answer = json.loads(output)
        package = Package(
            path=out,
            sha256=answer["sha256"],
            code_sha256=answer["code_sha256"],
            size=answer["size"],
            files=answer["files"],
            key=answer.get("key"),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise PackagerError(
            "package_mismatch", f"unexpected output of {command[0]} pack: {output[:200]!r}"
        ) from e
    _check_digest(package)
    return package


def _cli_error(stderr: str, status: int) -> PackagerError:
    line = stderr.strip().splitlines()[0] if stderr.strip() else ""
    if line.startswith("error[") and "]: " in line:
        code, message = line[len("error[") :].split("]: ", 1)
        return PackagerError(code, message)
    return PackagerError(
        "packager_failed", f"lambda-packager pack exited with {status}: {stderr.strip()[:500]}"
    )


def _check_digest(package: Package) -> None:
    digest = hashlib.sha256()
    size = 0
    with open(package.path, "rb") as zipped:
        for chunk in iter(lambda: zipped.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    actual = digest.hexdigest()
    code_sha256 = base64.b64encode(digest.digest()).decode("ascii")
    if (actual, code_sha256, size) != (package.sha256, package.code_sha256, package.size):
        raise PackagerError(
            "package_mismatch",
            f"the zip's SHA-256 is {actual} ({size} bytes), not the reported {package.sha256}",
        )


def _check_entries(package: Package, modes: Dict[str, int]) -> None:
    with zipfile.ZipFile(package.path) as zipped:
        found = {
            info.filename: (info.external_attr & ZIP_PERMS_MASK) >> 16 for info in zipped.infolist()
        }
    if found != modes:
        missing = sorted(set(modes) - set(found))[:5]
        extra = sorted(set(found) - set(modes))[:5]
        changed = sorted(n for n in set(found) & set(modes) if found[n] != modes[n])[:5]
        raise PackagerError(
            "package_mismatch",
            f"the zip does not hold exactly the selected files (missing {missing}, "
            f"unexpected {extra}, other mode {changed})",
        )


def _open_regular(path: str) -> IO[bytes]:
    """Opens a selected file (following links); refuses anything but a regular file.

    ``O_NONBLOCK`` so that a FIFO is refused instead of waiting for a writer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise PackagerError("not_a_regular_file", f"cannot read {path}: {e.strerror}") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PackagerError(
            "not_a_regular_file", f"{path} is not a regular file (device, FIFO or socket)"
        )
    return os.fdopen(fd, "rb")
