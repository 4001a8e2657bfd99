"""Which files go into a function's package: stacker's rules, unchanged.

stacker (and runway's copy of its hook) select files with formic: Apache Ant globs (``*.py``,
``test/`` = ``test/**``, ``**/x``), ``include`` defaulting to ``**``, excludes winning over
includes, and formic's default excludes (``**/__pycache__/**``, ``**/.git/**``, ``**/.svn/**``,
``**/.gitignore``, ``**/*~``, ... but not ``*.pyc``). Switching hooks must not change the files a
function gets, so selection is formic's own, called the way stacker calls it; only the bytes of
the zip are lambda-packager's.

Two things differ from a bare ``os.walk``, both where stacker would fail badly rather than
package something: following symlinks refuses a link to one of its own ancestor directories
(``os.walk`` would descend until paths grow too long), and an unreadable directory is an error
rather than silently missing from the package. Work is bounded: at most :data:`MAX_FILES`
selected files (the service's entry limit) and :data:`MAX_WALKED` directory entries looked at.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import formic

from .errors import PackagerError

#: Most files one package may hold (the service's ``limits.max_entries``).
MAX_FILES = 50_000

#: Most directory entries one selection may look at, links followed included.
MAX_WALKED = 1_000_000


@dataclass(frozen=True)
class SelectedFile:
    """One file of a package: where it is on disk and its path inside the zip."""

    #: The file on disk. It may be a symlink, whose target is what gets packaged.
    path: str
    #: Its path in the package, relative and ``/``-separated.
    name: str


def check_pattern_list(
    patterns: Any, key: str, default: Optional[List[str]] = None
) -> Optional[List[str]]:
    """Validates ``include``/``exclude`` from a hook's configuration, as stacker does.

    A string becomes a one-element list, a list of strings is kept, anything empty gives
    ``default``; anything else is a ``ValueError`` with stacker's message.
    """
    if not patterns:
        return default
    if isinstance(patterns, str):
        return [patterns]
    if isinstance(patterns, list) and all(isinstance(p, str) for p in patterns):
        return patterns
    raise ValueError(f"Invalid file patterns in key '{key}': must be a string or list of strings")


def find_files(
    root: str,
    includes: Sequence[str],
    excludes: Sequence[str],
    follow_symlinks: bool,
    *,
    under: str = "",
) -> List[SelectedFile]:
    """The files of ``root`` that stacker's hook would package, sorted by their package path.

    ``under`` (``"python/"`` for a runway layer) is put in front of every package path.
    Symlinked files are listed only with ``follow_symlinks`` (formic drops them otherwise), and
    symlinked directories are descended only then, as in stacker.
    """
    root = os.path.abspath(root)
    file_set = formic.FileSet(
        directory=root,
        include=list(includes),
        exclude=list(excludes),
        symlinks=follow_symlinks,
        walk=_BoundedWalk(),
    )
    selected = []
    for relative in file_set.qualified_files(absolute=False):
        relative = os.path.normpath(relative)
        selected.append(
            SelectedFile(
                path=os.path.join(root, relative),
                name=under + relative.replace(os.sep, "/"),
            )
        )
        if len(selected) > MAX_FILES:
            raise PackagerError(
                "too_many_files",
                f"more than {MAX_FILES} files selected under {root}: narrow include/exclude",
            )
    return sorted(selected, key=lambda f: f.name.encode("utf-8", "surrogateescape"))


def files_under(root: str, files: Sequence[str]) -> List[SelectedFile]:
    """Explicit files, named relative to ``root`` (absolute names under ``root`` work too)."""
    root = os.path.abspath(root)
    selected = []
    for name in files:
        path = os.path.join(root, name)
        relative = os.path.relpath(path, root)
        selected.append(SelectedFile(path=path, name=relative.replace(os.sep, "/")))
    return sorted(selected, key=lambda f: f.name.encode("utf-8", "surrogateescape"))


_WalkStep = Tuple[str, List[str], List[str]]


class _BoundedWalk:
    """``os.walk`` (top-down, the caller may prune ``dirs``) with loop detection and a bound.

    Like ``os.walk``, an entry is a directory if it is one after following links, and a
    symlinked directory is descended only with ``followlinks``.
    """

    def __call__(self, top: str, followlinks: bool = False) -> Iterator[_WalkStep]:
        walked = 0
        top_stat = _stat(top)
        # Each directory to visit, with the (device, inode) of itself and its ancestors.
        stack = [(top, frozenset({(top_stat.st_dev, top_stat.st_ino)}))]
        while stack:
            path, ancestors = stack.pop()
            try:
                entries = list(os.scandir(path))
            except OSError as e:
                raise PackagerError(
                    "unreadable_directory", f"cannot list {path}: {e.strerror}"
                ) from e
            walked += len(entries)
            if walked > MAX_WALKED:
                raise PackagerError(
                    "too_many_files",
                    f"more than {MAX_WALKED} entries looked at under {top}: "
                    "is follow_symlinks reaching outside the function?",
                )
            dirs: List[str] = []
            files: List[str] = []
            for entry in entries:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                (dirs if is_dir else files).append(entry.name)
            yield path, dirs, files
            children = []
            for name in dirs:
                child = os.path.join(path, name)
                if not followlinks:
                    # No link is followed, so no loop is possible: nothing to remember.
                    if not os.path.islink(child):
                        children.append((child, ancestors))
                    continue
                child_stat = _stat(child)
                identity = (child_stat.st_dev, child_stat.st_ino)
                if identity in ancestors:
                    raise PackagerError(
                        "symlink_loop", f"{child} links to one of its own parent directories"
                    )
                children.append((child, ancestors | {identity}))
            stack.extend(reversed(children))


def _stat(path: str) -> os.stat_result:
    try:
        result = os.stat(path)
    except OSError as e:
        raise PackagerError("unreadable_directory", f"cannot read {path}: {e.strerror}") from e
    if not stat.S_ISDIR(result.st_mode):
        raise PackagerError("unreadable_directory", f"{path} is not a directory")
    return result
