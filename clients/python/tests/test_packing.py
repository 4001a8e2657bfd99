"""The bytes: what the hooks hand to ``lambda-packager pack`` and what comes back."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from pathlib import Path
from typing import Dict

import pytest

from lambda_packager import PackagerError
from lambda_packager.packing import ZIP_PERMS_MASK, pack_files, pack_zip
from lambda_packager.selection import find_files

from support import Spec, cli_pack, make_tree

TREE: Spec = {
    "handler.py": b"def handler(event, context):\n    return 42\n",
    "bin/run": (b"#!/bin/sh\necho hi\n", True),
    "lib/na\u00efve/\u00fcn\u00efcode.txt": "gr\u00fc\u00dfe".encode(),
    # Over tar's 100-byte name field: a PAX header carries it.
    "deep/" + "d" * 60 + "/" + "f" * 60 + ".txt": b"a long name",
    "empty": b"",
    "data.bin": bytes(range(256)) * 64,
}


def packed_bytes(root: Path, follow_symlinks: bool = False, **kwargs: str) -> bytes:
    with pack_files(find_files(str(root), ["**"], [], follow_symlinks), **kwargs) as package:
        return Path(package.path).read_bytes()


def modes(data: bytes) -> Dict[str, int]:
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        return {i.filename: (i.external_attr & ZIP_PERMS_MASK) >> 16 for i in zipped.infolist()}


def test_hook_bytes_equal_the_cli_bytes_of_the_same_files(
    tmp_path: Path, packager_bin: str
) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    files = find_files(str(root), ["**"], [], False)
    with pack_files(files, function="MyFunction", prefix="ci/") as package:
        data = Path(package.path).read_bytes()
        key = package.key
    answer, cli_bytes = cli_pack(packager_bin, root, "--function", "MyFunction", "--prefix", "ci/")

    assert data == cli_bytes
    assert key == answer["key"] == f"ci/lambda-MyFunction-{hashlib.sha256(data).hexdigest()}.zip"
    assert modes(data) == {name: 0o755 if name == "bin/run" else 0o644 for name in TREE}
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        assert zipped.namelist() == sorted(TREE, key=str.encode)
        assert {n: zipped.read(n) for n in TREE} == {
            n: v[0] if isinstance(v, tuple) else v for n, v in TREE.items()
        }


def test_copies_with_other_umask_order_and_mtimes_give_the_same_bytes(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "a", TREE, umask=0o022)
    second = make_tree(tmp_path / "b", TREE, order=sorted(TREE, reverse=True), umask=0o002)
    for number, path in enumerate(sorted(second.rglob("*"))):
        os.utime(path, (1_700_000_000 + number * 3600, 1_700_000_000 - number * 86400))
    assert (second / "bin/run").stat().st_mode & 0o777 == 0o775
    assert (first / "bin/run").stat().st_mode & 0o777 == 0o755

    assert packed_bytes(first) == packed_bytes(second)


def test_an_exec_bit_or_a_byte_changes_the_key(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", TREE)

    def key() -> str:
        with pack_files(find_files(str(root), ["**"], [], False), function="F") as package:
            assert package.key is not None
            return package.key

    original = key()
    (root / "handler.py").chmod(0o755)
    executable = key()
    (root / "handler.py").chmod(0o644)
    assert key() == original
    (root / "handler.py").write_bytes(b"def handler(event, context):\n    return 43\n")
    changed = key()
    assert len({original, executable, changed}) == 3


def test_mtimes_before_1980_work_and_change_nothing(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    expected = packed_bytes(root)
    for path in root.rglob("*"):
        os.utime(path, (-315_619_200, -315_619_200))  # 1960-01-01
    assert packed_bytes(root) == expected
    for path in root.rglob("*"):
        os.utime(path, (0, 0))  # 1970-01-01
    assert packed_bytes(root) == expected


def test_stacker_own_hook_cannot_package_mtimes_before_1980(tmp_path: Path) -> None:
    from stacker.hooks import aws_lambda

    root = make_tree(tmp_path / "fn", {"handler.py": b"x"})
    os.utime(root / "handler.py", (0, 0))
    with pytest.raises(ValueError, match="before 1980"):
        aws_lambda._zip_files(["handler.py"], str(root))


def test_a_followed_link_leaving_the_tree_is_packaged_as_its_target(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", {"shared.py": (b"SHARED = 1\n", True)})
    root = make_tree(tmp_path / "fn", {"handler.py": b"x"})
    (root / "shared.py").symlink_to(outside / "shared.py")
    data = packed_bytes(root, follow_symlinks=True)
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        assert zipped.read("shared.py") == b"SHARED = 1\n"
    assert modes(data) == {"handler.py": 0o644, "shared.py": 0o755}


def test_a_prebuilt_zip_is_packaged_canonically(tmp_path: Path, packager_bin: str) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    prebuilt = tmp_path / "prebuilt.zip"
    with zipfile.ZipFile(prebuilt, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name in reversed(sorted(TREE)):
            info = zipfile.ZipInfo(name, date_time=(2001, 2, 3, 4, 5, 6))
            info.external_attr = (0o100775 if name == "bin/run" else 0o100664) << 16
            info.create_system = 3
            value = TREE[name]
            zipped.writestr(info, value[0] if isinstance(value, tuple) else value)
    with pack_zip(str(prebuilt), function="F") as package:
        data = Path(package.path).read_bytes()
    assert data == packed_bytes(root, function="F")
    assert data == cli_pack(packager_bin, prebuilt, "--no-default-excludes")[1]


def test_a_fifo_is_refused(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": b"x"})
    os.mkfifo(root / "pipe")
    with pytest.raises(PackagerError) as raised:
        packed_bytes(root)
    assert raised.value.code == "not_a_regular_file"
    assert str(root / "pipe") in raised.value.message


def test_lambda_packager_errors_keep_their_code(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": b"x"})
    (root / os.fsdecode(b"bad\xff.txt")).write_bytes(b"x")
    with pytest.raises(PackagerError) as raised:
        packed_bytes(root)
    assert raised.value.code == "invalid_path"


def test_a_missing_binary_names_both_places_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": b"x"})
    monkeypatch.delenv("LAMBDA_PACKAGER_BIN")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PackagerError) as raised:
        packed_bytes(root)
    assert raised.value.code == "packager_not_found"
    assert "LAMBDA_PACKAGER_BIN" in raised.value.message and "PATH" in raised.value.message

    monkeypatch.setenv("LAMBDA_PACKAGER_BIN", str(tmp_path / "nowhere"))
    with pytest.raises(PackagerError, match="nowhere") as raised:
        packed_bytes(root)
    assert raised.value.code == "packager_not_found"


def test_the_binary_is_found_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packager_bin: str
) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": b"x"})
    expected = packed_bytes(root)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "lambda-packager").symlink_to(packager_bin)
    monkeypatch.delenv("LAMBDA_PACKAGER_BIN")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert packed_bytes(root) == expected


def test_a_zip_that_does_not_hold_exactly_the_selection_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packager_bin: str
) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": b"x", "notes.txt": b"y"})
    # A packager that silently drops files, as one with default excludes would drop .git/.
    wrapper = tmp_path / "dropping-packager"
    wrapper.write_text(f"#!/bin/sh\nexec '{packager_bin}' \"$@\" --exclude '*.txt'\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("LAMBDA_PACKAGER_BIN", str(wrapper))
    with pytest.raises(PackagerError) as raised:
        packed_bytes(root)
    assert raised.value.code == "package_mismatch"
    assert "notes.txt" in raised.value.message


def test_entries_carry_only_0755_or_0644(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", {"a": b"1", "b": b"2", "c": b"3"})
    (root / "a").chmod(0o4777)
    (root / "b").chmod(0o700)
    (root / "c").chmod(0o400)
    assert stat.S_IMODE((root / "a").stat().st_mode) == 0o4777
    assert modes(packed_bytes(root)) == {"a": 0o755, "b": 0o755, "c": 0o644}
