"""Selection is stacker's: formic's patterns and default excludes, stacker's link rules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence

import pytest

from lambda_packager import PackagerError, selection
from lambda_packager.selection import check_pattern_list, find_files

from support import make_tree


def names(
    root: Path,
    includes: Sequence[str] = ("**",),
    excludes: Sequence[str] = (),
    follow: bool = False,
) -> List[str]:
    return [f.name for f in find_files(str(root), includes, excludes, follow)]


def stacker_names(
    root: Path,
    includes: Sequence[str] = ("**",),
    excludes: Sequence[str] = (),
    follow: bool = False,
) -> List[str]:
    """What stacker 1.7.2's own hook selects, as package paths."""
    from stacker.hooks import aws_lambda

    found = aws_lambda._find_files(str(root), list(includes), list(excludes), follow)
    return sorted(os.path.normpath(f) for f in found)


TREE = {
    "handler.py": b"1",
    "handler.pyc": b"2",
    "__pycache__/handler.cpython-311.pyc": b"3",
    "pkg/__pycache__/m.cpython-311.pyc": b"4",
    "pkg/m.py": b"5",
    ".git/HEAD": b"6",
    ".gitignore": b"7",
    "notes.txt~": b"8",
    ".DS_Store": b"9",
    "tests/test_m.py": b"10",
    "node_modules/x/index.js": b"11",
}


def test_formic_default_excludes_apply_and_pyc_files_are_kept(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    assert names(root) == [
        "handler.py",
        "handler.pyc",
        "node_modules/x/index.js",
        "pkg/m.py",
        "tests/test_m.py",
    ]
    assert names(root) == stacker_names(root)


@pytest.mark.parametrize(
    "includes, excludes",
    [
        (["*.py"], []),
        (["**"], ["tests/"]),
        (["*.py", "node_modules/"], ["**/test_*"]),
        (["pkg/**"], []),
        (["**/*.js"], ["**"]),
    ],
)
def test_patterns_select_what_stacker_selects(
    tmp_path: Path, includes: List[str], excludes: List[str]
) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    assert names(root, includes, excludes) == stacker_names(root, includes, excludes)


def test_links_are_dropped_unless_followed_as_in_stacker(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", {"lib/shared.py": b"s", "one.py": b"o"})
    root = make_tree(tmp_path / "fn", {"handler.py": b"h"})
    (root / "lib").symlink_to(outside / "lib")
    (root / "one.py").symlink_to(outside / "one.py")
    (root / "broken.py").symlink_to(tmp_path / "nothing")

    assert names(root) == ["handler.py"] == stacker_names(root)
    followed = names(root, follow=True)
    assert followed == ["broken.py", "handler.py", "lib/shared.py", "one.py"]
    assert followed == stacker_names(root, follow=True)


def test_a_link_to_an_ancestor_is_refused_when_followed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", {"a/handler.py": b"h"})
    (root / "a" / "loop").symlink_to(root)
    assert names(root) == ["a/handler.py"]
    with pytest.raises(PackagerError) as raised:
        names(root, follow=True)
    assert raised.value.code == "symlink_loop"
    assert str(root / "a" / "loop") in raised.value.message


def test_two_links_to_one_directory_are_two_copies(tmp_path: Path) -> None:
    shared = make_tree(tmp_path / "shared", {"m.py": b"m"})
    root = make_tree(tmp_path / "fn", {"handler.py": b"h"})
    (root / "x").symlink_to(shared)
    (root / "y").symlink_to(shared)
    assert names(root, follow=True) == ["handler.py", "x/m.py", "y/m.py"]


def test_an_unreadable_directory_is_an_error_not_a_smaller_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": b"h", "private/key.pem": b"k"})
    scandir = os.scandir

    def refusing(path: str) -> object:
        if os.path.basename(path) == "private":
            raise PermissionError(13, "Permission denied", path)
        return scandir(path)

    # Tests run as root, which no mode bit stops: refuse the way a kernel would.
    monkeypatch.setattr(selection.os, "scandir", refusing)
    with pytest.raises(PackagerError) as raised:
        names(root)
    assert raised.value.code == "unreadable_directory"
    assert "private" in raised.value.message and "Permission denied" in raised.value.message


def test_selection_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "fn", {f"f{i}.py": b"" for i in range(12)})
    monkeypatch.setattr(selection, "MAX_FILES", 10)
    with pytest.raises(PackagerError) as raised:
        names(root)
    assert raised.value.code == "too_many_files"
    monkeypatch.setattr(selection, "MAX_FILES", 50)
    monkeypatch.setattr(selection, "MAX_WALKED", 5)
    with pytest.raises(PackagerError) as raised:
        names(root)
    assert raised.value.code == "too_many_files"


def test_a_layer_puts_every_file_under_python(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", {"mylib/__init__.py": b"", "mylib/core.py": b"c"})
    found = find_files(str(root), ["**"], [], False, under="python/")
    assert [f.name for f in found] == ["python/mylib/__init__.py", "python/mylib/core.py"]
    assert [f.path for f in found] == [str(root / "mylib/__init__.py"), str(root / "mylib/core.py")]


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ["**"]),
        ("", ["**"]),
        ([], ["**"]),
        ("*.py", ["*.py"]),
        (["*.py", "lib/"], ["*.py", "lib/"]),
    ],
)
def test_pattern_lists_are_read_as_stacker_reads_them(value: object, expected: List[str]) -> None:
    assert check_pattern_list(value, "include", default=["**"]) == expected


@pytest.mark.parametrize("value", [{"a": "b"}, ["*.py", 3], 7])
def test_bad_pattern_lists_get_stacker_message(value: object) -> None:
    with pytest.raises(
        ValueError,
        match="Invalid file patterns in key 'exclude': must be a string or list of strings",
    ):
        check_pattern_list(value, "exclude")
