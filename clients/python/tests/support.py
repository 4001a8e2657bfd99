"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple, Union

import boto3

REGION = "us-east-1"

#: A test tree: path -> bytes, or (bytes, executable).
Spec = Dict[str, Union[bytes, Tuple[bytes, bool]]]


def unique_bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:20]}"


def new_bucket(s3: Any, *, versioned: bool = False) -> str:
    name = unique_bucket_name()
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def make_tree(
    root: Path, spec: Spec, *, order: Optional[List[str]] = None, umask: int = 0o022
) -> Path:
    """Creates ``spec``'s files under ``root`` in ``order``, with modes as ``umask`` makes them."""
    previous = os.umask(umask)
    try:
        for name in order or list(spec):
            value = spec[name]
            data, executable = value if isinstance(value, tuple) else (value, False)
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if executable:
                path.chmod(0o777 & ~umask)
    finally:
        os.umask(previous)
    return root


def cli_pack(binary: str, source: Union[str, Path], *args: str) -> Tuple[Dict[str, Any], bytes]:
    """``lambda-packager pack SOURCE ARGS`` → (its JSON, the zip's bytes)."""
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "cli.zip"
        result = subprocess.run(
            [binary, "pack", str(source), "--out", str(out), *args], check=True, capture_output=True
        )
        return json.loads(result.stdout), out.read_bytes()


def stacker_context(namespace: str = "test", **config: Any) -> Any:
    from stacker.config import Config
    from stacker.context import Context

    return Context(config=Config({"namespace": namespace, **config}), environment={})


def provider(region: str = REGION) -> Any:
    return SimpleNamespace(region=region)


class RunwayContext:
    """What runway 1.x and 2.x CFNgin contexts give the hook: ``bucket_name``,
    ``config.cfngin_bucket_region``, ``config_path`` (a file or a directory; ``str`` in 1.x,
    ``Path`` in 2.x) and ``get_session(region=...)``, here recording the regions asked for."""

    def __init__(
        self,
        bucket_name: Optional[str],
        config_path: Union[str, Path],
        cfngin_bucket_region: Optional[str] = None,
    ) -> None:
        self.bucket_name = bucket_name
        self.config = SimpleNamespace(cfngin_bucket_region=cfngin_bucket_region)
        self.config_path = config_path
        self.session_regions: List[Optional[str]] = []

    def get_session(self, profile: Optional[str] = None, region: Optional[str] = None) -> Any:
        self.session_regions.append(region)
        return _session(region)


@functools.lru_cache(maxsize=None)
def _session(region: Optional[str]) -> Any:
    """One session per region, as runway caches them: loading the service models again for
    every hook run would be most of a test's time."""
    return boto3.Session(region_name=region)


def object_bytes(s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data
