"""``lambda_packager.runway``: runway's CFNgin hook arguments, layers, requirements files.

runway itself is not installed (its dependency tree is large): ``support.RunwayContext`` has
exactly what runway 1.x and 2.x contexts give the hook.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, Dict

import pytest
from troposphere.awslambda import Code

from lambda_packager import PackagerError
from lambda_packager.runway import select_bucket_region, upload_lambda_functions

from support import (
    REGION,
    RunwayContext,
    Spec,
    cli_pack,
    make_tree,
    object_bytes,
    provider,
    unique_bucket_name,
)

TREE: Spec = {
    "index.py": b"def handler(event, context):\n    return 'ok'\n",
    "mylib/__init__.py": b"",
    "mylib/core.py": b"VALUE = 1\n",
    "mylib/tool": (b"#!/bin/sh\n", True),
}


def run_hook(context: Any, **kwargs: Any) -> Dict[str, Any]:
    result: Dict[str, Any] = upload_lambda_functions(context=context, provider=provider(), **kwargs)
    return result


def entries(s3: Any, bucket: str, key: str) -> Dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(object_bytes(s3, bucket, key))) as zipped:
        return {name: zipped.read(name) for name in zipped.namelist()}


def test_a_function_is_the_cli_package_under_runway_key(
    tmp_path: Path, s3: Any, bucket: str, packager_bin: str
) -> None:
    root = make_tree(tmp_path / "src" / "fn", TREE)
    config = tmp_path / "cfngin.yml"
    config.write_text("namespace: test\n")
    context = RunwayContext(bucket, str(config))
    code = run_hook(
        context, prefix="lambda/", functions={"MyFunction": {"path": "src/fn", "exclude": "*.md"}}
    )["MyFunction"]
    answer, cli_bytes = cli_pack(
        packager_bin, root, "--function", "MyFunction", "--prefix", "lambda/"
    )

    assert isinstance(code, Code)
    assert code.to_dict() == {"S3Bucket": bucket, "S3Key": answer["key"]}
    assert code.code_sha256 == answer["code_sha256"]
    assert object_bytes(s3, bucket, code.S3Key) == cli_bytes
    assert context.session_regions == [REGION]


def test_paths_are_relative_to_a_config_directory_too(tmp_path: Path, s3: Any, bucket: str) -> None:
    make_tree(tmp_path / "fn", TREE)
    code = run_hook(RunwayContext(bucket, tmp_path), functions={"F": {"path": "fn"}})["F"]
    assert sorted(entries(s3, bucket, code.S3Key)) == sorted(TREE)


def test_a_layer_puts_the_files_under_python(
    tmp_path: Path, s3: Any, bucket: str, packager_bin: str
) -> None:
    root = make_tree(tmp_path / "layer", TREE)
    context = RunwayContext(bucket, tmp_path)
    layer = run_hook(context, functions={"MyLayer": {"path": str(root), "layer": True}})["MyLayer"]
    function = run_hook(context, functions={"MyLayer": {"path": str(root)}})["MyLayer"]

    assert sorted(entries(s3, bucket, layer.S3Key)) == sorted(f"python/{name}" for name in TREE)
    assert layer.S3Key != function.S3Key
    laid_out = make_tree(tmp_path / "laid-out" / "python", TREE).parent
    answer, cli_bytes = cli_pack(packager_bin, laid_out, "--function", "MyLayer")
    assert layer.S3Key == answer["key"]
    assert object_bytes(s3, bucket, layer.S3Key) == cli_bytes


@pytest.mark.parametrize("requirements", ["requirements.txt", "Pipfile", "Pipfile.lock"])
def test_a_requirements_file_is_refused_unless_ignored(
    tmp_path: Path, s3: Any, bucket: str, requirements: str
) -> None:
    root = make_tree(tmp_path / "fn", {**TREE, requirements: b"requests==2.32.3\n"})
    context = RunwayContext(bucket, tmp_path)
    with pytest.raises(
        ValueError, match=f"function 'F': .* has {requirements}, whose dependencies"
    ):
        run_hook(context, functions={"F": {"path": str(root)}})
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)

    code = run_hook(context, functions={"F": {"path": str(root), "ignore_requirements": True}})["F"]
    assert requirements in entries(s3, bucket, code.S3Key)


def test_without_any_bucket_the_hook_says_so(tmp_path: Path, s3_env: str) -> None:
    with pytest.raises(ValueError, match="hook requires bucket argument or top-level cfngin_hook"):
        run_hook(RunwayContext(None, tmp_path), functions={})


def test_patterns_are_checked_before_the_path_as_runway_does(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(ValueError, match="Invalid file patterns in key 'include'"):
        run_hook(
            RunwayContext(bucket, tmp_path),
            functions={"F": {"path": "missing", "include": {"a": 1}}},
        )
    with pytest.raises(ValueError, match="missing required property 'path' in function 'F'"):
        run_hook(RunwayContext(bucket, tmp_path), functions={"F": {}})


@pytest.mark.parametrize("option", ["layer", "ignore_requirements"])
def test_function_flags_must_be_booleans(tmp_path: Path, bucket: str, option: str) -> None:
    with pytest.raises(ValueError, match=f"{option} option of function 'F' must be a boolean"):
        run_hook(
            RunwayContext(bucket, tmp_path), functions={"F": {"path": str(tmp_path), option: "yes"}}
        )


def test_a_missing_directory_is_an_error_naming_it(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(PackagerError, match="missing"):
        run_hook(RunwayContext(bucket, tmp_path), functions={"F": {"path": "missing"}})


def test_the_bucket_region_follows_runway(tmp_path: Path, s3: Any) -> None:
    name = unique_bucket_name()
    context = RunwayContext("ignored", tmp_path, cfngin_bucket_region="us-east-2")
    make_tree(tmp_path / "fn", TREE)
    run_hook(context, bucket=name, bucket_region="eu-west-1", functions={"F": {"path": "fn"}})
    assert context.session_regions == ["eu-west-1"]
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-west-1"


@pytest.mark.parametrize(
    "args, result",
    [
        (("myBucket", "us-east-1", "us-west-1", "eu-west-1"), "us-east-1"),
        (("myBucket", None, "us-west-1", "eu-west-1"), "eu-west-1"),
        ((None, "us-east-1", "us-west-1", "eu-west-1"), "us-west-1"),
        ((None, "us-east-1", None, "eu-west-1"), "eu-west-1"),
    ],
)
def test_select_bucket_region(args: Any, result: str) -> None:
    assert select_bucket_region(*args) == result
