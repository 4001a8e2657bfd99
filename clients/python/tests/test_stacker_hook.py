"""``lambda_packager.stacker`` beyond stacker's own tests: what stacker's hook never did.

stacker 1.7.2's own test file runs against this module too (``scripts/test``); these tests
prove the reproducibility, the key and the store-once behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List

import pytest
from troposphere.awslambda import Code

import lambda_packager.stacker as hook
from lambda_packager.stacker import upload_lambda_functions

from support import (
    REGION,
    Spec,
    cli_pack,
    make_tree,
    new_bucket,
    object_bytes,
    provider,
    stacker_context,
    unique_bucket_name,
)

TREE: Spec = {
    "handler.py": b"from lib.util import answer\n\ndef handler(event, _):\n    return answer()\n",
    "lib/__init__.py": b"",
    "lib/util.py": b"def answer():\n    return 42\n",
    "bin/tool": (b"#!/bin/sh\nexit 0\n", True),
    "data/\u00e9t\u00e9.json": b'{"saison": "\xc3\xa9t\xc3\xa9"}',
}

MACHINE = Path(__file__).with_name("machine.py")


def run_hook(**kwargs: Any) -> Dict[str, Any]:
    result: Dict[str, Any] = upload_lambda_functions(
        context=stacker_context(), provider=provider(), **kwargs
    )
    return result


def on_another_machine(
    root: Path, bucket: str, *, tz: str, hash_seed: str, umask: str
) -> Dict[str, Any]:
    env = dict(os.environ, TZ=tz, PYTHONHASHSEED=hash_seed)
    done = subprocess.run(
        [sys.executable, str(MACHINE), str(root), bucket, "MyFunction", "ci/", umask],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: Dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_the_same_tree_on_two_machines_is_one_key_and_one_object(tmp_path: Path, s3: Any) -> None:
    first = make_tree(tmp_path / "machine-a" / "fn", TREE, umask=0o022)
    second = make_tree(
        tmp_path / "machine-b" / "fn", TREE, order=sorted(TREE, reverse=True), umask=0o002
    )
    for number, path in enumerate(sorted(second.rglob("*"))):
        os.utime(path, (86_400 * number, 86_400 * number))  # 1970, before zip's 1980 epoch
    shared = new_bucket(s3, versioned=True)
    elsewhere = new_bucket(s3)

    a = on_another_machine(first, shared, tz="Pacific/Kiritimati", hash_seed="0", umask="022")
    b = on_another_machine(second, shared, tz="America/Adak", hash_seed="4242", umask="002")
    b_alone = on_another_machine(
        second, elsewhere, tz="Asia/Kathmandu", hash_seed="17", umask="077"
    )

    assert a["key"] == b["key"] == b_alone["key"]
    assert (a["puts"], b["puts"], b_alone["puts"]) == (1, 0, 1)
    data = object_bytes(s3, shared, a["key"])
    assert data == object_bytes(s3, elsewhere, a["key"])
    digest = hashlib.sha256(data)
    assert a["key"] == f"ci/lambda-MyFunction-{digest.hexdigest()}.zip"
    assert a["code_sha256"] == b["code_sha256"] == base64.b64encode(digest.digest()).decode()
    versions = s3.list_object_versions(Bucket=shared)["Versions"]
    assert len(versions) == 1


def test_the_key_is_the_cli_key_and_the_object_the_cli_zip(
    tmp_path: Path, s3: Any, bucket: str, packager_bin: str, put_counter: List[str]
) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    results = run_hook(bucket=bucket, prefix="ci/", functions={"MyFunction": {"path": str(root)}})
    code = results["MyFunction"]
    answer, cli_bytes = cli_pack(packager_bin, root, "--function", "MyFunction", "--prefix", "ci/")

    assert isinstance(code, Code)
    assert code.to_dict() == {"S3Bucket": bucket, "S3Key": answer["key"]}
    assert object_bytes(s3, bucket, code.S3Key) == cli_bytes
    assert (code.code_sha256, code.sha256, code.size, code.uploaded) == (
        answer["code_sha256"],
        answer["sha256"],
        answer["size"],
        True,
    )
    assert len(put_counter) == 1


def test_a_second_run_from_a_copy_makes_no_put_and_keeps_the_version(
    tmp_path: Path, s3: Any, put_counter: List[str]
) -> None:
    bucket = new_bucket(s3, versioned=True)
    first = run_hook(
        bucket=bucket, functions={"F": {"path": str(make_tree(tmp_path / "a", TREE))}}
    )["F"]
    copy = make_tree(tmp_path / "b", TREE, order=sorted(TREE, reverse=True), umask=0o002)
    second = run_hook(bucket=bucket, functions={"F": {"path": str(copy)}})["F"]

    assert first.S3Key == second.S3Key
    assert (first.uploaded, second.uploaded) == (True, False)
    assert len(put_counter) == 1
    assert first.version_id is not None and second.version_id == first.version_id
    assert [v["VersionId"] for v in s3.list_object_versions(Bucket=bucket)["Versions"]] == [
        first.version_id
    ]


def test_an_exec_bit_or_one_byte_is_a_new_key(tmp_path: Path, s3: Any, bucket: str) -> None:
    root = make_tree(tmp_path / "fn", TREE)

    def key() -> str:
        return str(run_hook(bucket=bucket, functions={"F": {"path": str(root)}})["F"].S3Key)

    original = key()
    (root / "lib/util.py").chmod(0o755)
    executable = key()
    (root / "lib/util.py").chmod(0o644)
    (root / "lib/util.py").write_bytes(b"def answer():\n    return 43\n")
    edited = key()
    assert len({original, executable, edited}) == 3
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted({original, executable, edited})


def test_a_prebuilt_zip_is_stored_canonically(
    tmp_path: Path, s3: Any, bucket: str, packager_bin: str
) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    prebuilt = tmp_path / "build" / "function.zip"
    prebuilt.parent.mkdir()
    with zipfile.ZipFile(prebuilt, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(root.rglob("*"), reverse=True):
            zipped.write(path, path.relative_to(root).as_posix())  # with directories and mtimes

    from_zip = run_hook(bucket=bucket, functions={"F": {"path": str(prebuilt)}})["F"]
    from_directory = run_hook(bucket=bucket, functions={"F": {"path": str(root)}})["F"]

    assert from_zip.S3Key == from_directory.S3Key
    assert not from_directory.uploaded
    answer, cli_bytes = cli_pack(packager_bin, prebuilt, "--no-default-excludes", "--function", "F")
    assert from_zip.S3Key == answer["key"]
    assert object_bytes(s3, bucket, from_zip.S3Key) == cli_bytes


def test_a_function_version_is_ignored_with_a_warning(
    tmp_path: Path, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    with caplog.at_level(logging.WARNING, logger="lambda_packager"):
        code = run_hook(bucket=bucket, functions={"F": {"path": str(root), "version": "1.2.3"}})[
            "F"
        ]
    assert "1.2.3" not in code.S3Key and code.S3Key == f"lambda-F-{code.sha256}.zip"
    assert "ignoring version '1.2.3' of function F" in caplog.text


def test_links_leaving_the_tree_are_materialized_when_followed(
    tmp_path: Path, s3: Any, bucket: str
) -> None:
    shared = make_tree(
        tmp_path / "shared", {"common/log.py": b"LEVEL = 'info'\n", "VERSION": b"7\n"}
    )
    root = make_tree(tmp_path / "fn", {"handler.py": b"h"})
    (root / "common").symlink_to(shared / "common")
    (root / "VERSION").symlink_to(shared / "VERSION")

    followed = run_hook(bucket=bucket, follow_symlinks=True, functions={"F": {"path": str(root)}})[
        "F"
    ]
    dropped = run_hook(bucket=bucket, follow_symlinks=False, functions={"F": {"path": str(root)}})[
        "F"
    ]

    with zipfile.ZipFile(io.BytesIO(object_bytes(s3, bucket, followed.S3Key))) as zipped:
        assert {n: zipped.read(n) for n in zipped.namelist()} == {
            "VERSION": b"7\n",
            "common/log.py": b"LEVEL = 'info'\n",
            "handler.py": b"h",
        }
    with zipfile.ZipFile(io.BytesIO(object_bytes(s3, bucket, dropped.S3Key))) as zipped:
        assert zipped.namelist() == ["handler.py"]


@pytest.mark.parametrize(
    "args, message",
    [
        ({"functions": {"My.Function": {"path": "/nonexistent"}}}, "function name 'My.Function'"),
        ({"prefix": "no-slash", "functions": {}}, "prefix 'no-slash'"),
        ({"prefix": "a/../", "functions": {}}, "prefix 'a/../'"),
        ({"server": 8080, "functions": {}}, "server option must be a URL string"),
    ],
)
def test_names_and_prefixes_lambda_packager_cannot_key_are_refused_before_any_write(
    bucket: str, args: Dict[str, Any], message: str, put_counter: List[str]
) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        run_hook(bucket=bucket, **args)
    assert put_counter == []


def test_the_default_bucket_is_created_in_the_stacker_bucket_region(
    tmp_path: Path, s3: Any
) -> None:
    namespace = f"ns-{unique_bucket_name()}"
    context = stacker_context(namespace=namespace, stacker_bucket_region="eu-west-1")
    root = make_tree(tmp_path / "fn", TREE)
    code = upload_lambda_functions(
        context=context, provider=provider(REGION), functions={"F": {"path": str(root)}}
    )["F"]
    assert code.S3Bucket == context.bucket_name == f"stacker-{namespace}"
    assert s3.get_bucket_location(Bucket=code.S3Bucket)["LocationConstraint"] == "eu-west-1"


def test_calculate_hash_is_the_hash_in_the_key(tmp_path: Path, bucket: str) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    code = run_hook(bucket=bucket, functions={"F": {"path": str(root)}})["F"]
    names = [n for n in TREE][::-1]
    assert hook._calculate_hash(names, str(root)) == code.sha256
    assert hook._calculate_hash([str(root / n) for n in names], str(root)) == code.sha256
