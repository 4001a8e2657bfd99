"""Server mode against the real ``lambda-packager serve``, storing in a moto bucket.

Each service runs on free 127.0.0.1 ports under a small ``sh`` watchdog that holds the read
end of a pipe from this process: stopping the service closes the pipe (as does this process
dying in any way), and the watchdog then stops it with SIGTERM. Nothing outlives the tests.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import boto3
import pytest

import lambda_packager.stacker as stacker_hook
from lambda_packager import PackagerError
from lambda_packager.runway import upload_lambda_functions as runway_upload

from support import REGION, RunwayContext, Spec, make_tree, object_bytes, provider, stacker_context

TOKEN = "server-mode-test-token"

TREE: Spec = {
    "app.py": b"def handler(event, context):\n    return event\n",
    "vendor/lib.py": b"X = 1\n",
    "bin/entry": (b"#!/bin/sh\n", True),
}

WATCHDOG = r"""
exec 3<&0
"$@" </dev/null 3<&- &
child=$!
{ read -r _ <&3; kill "$child" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$child"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"""


class Service:
    """One ``lambda-packager serve``, configured with LAMBDA_PACKAGER_* variables."""

    def __init__(self, binary: str, config: Dict[str, str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDA_PACKAGER_")}
        env.update(
            {
                "LAMBDA_PACKAGER_SERVER__LISTEN": "127.0.0.1:0",
                "LAMBDA_PACKAGER_SERVER__ADMIN_LISTEN": "127.0.0.1:0",
                "LAMBDA_PACKAGER_LOG__FORMAT": "json",
                "AWS_ACCESS_KEY_ID": "lambda-packager-test",
                "AWS_SECRET_ACCESS_KEY": "lambda-packager-test-secret",
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                **config,
            }
        )
        self.process = subprocess.Popen(
            ["sh", "-c", WATCHDOG, "sh", binary, "serve"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.log: List[str] = []
        self._address: Optional[str] = None
        self._ready = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()
        # The log line is written after the listeners are bound: no request can come too early.
        self._ready.wait(timeout=60)
        if self._address is None:
            self.stop()
            raise AssertionError("lambda-packager serve did not start:\n" + "\n".join(self.log))
        self.url = f"http://{self._address}"

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.log.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("message") == "listening":
                self._address = record["api"]
                self._ready.set()
        self._ready.set()

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        status = self.process.wait(timeout=60)
        assert status == 0, "\n".join(self.log)


@pytest.fixture(scope="module")
def service_bucket(moto_url: str) -> str:
    name = f"service-{uuid.uuid4().hex[:20]}"
    boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="lambda-packager-test",
        aws_secret_access_key="lambda-packager-test-secret",
    ).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def service(
    packager_bin: str, moto_url: str, service_bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    running = Service(
        packager_bin,
        {
            "LAMBDA_PACKAGER_STORE__BACKEND": "s3",
            "LAMBDA_PACKAGER_STORE__S3__BUCKET": service_bucket,
            "LAMBDA_PACKAGER_STORE__S3__ENDPOINT": moto_url,
            "LAMBDA_PACKAGER_STORE__S3__FORCE_PATH_STYLE": "true",
            "LAMBDA_PACKAGER_STORE__S3__REGION": REGION,
            "LAMBDA_PACKAGER_STORE__ALLOW_REQUEST_PREFIX": "true",
            "LAMBDA_PACKAGER_AUTH__TOKENS": json.dumps([TOKEN]),
            "LAMBDA_PACKAGER_PACK__TEMP_DIR": str(tmp_path_factory.mktemp("service-temp")),
        },
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def local_store_service(
    packager_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    running = Service(
        packager_bin,
        {"LAMBDA_PACKAGER_STORE__LOCAL__PATH": str(tmp_path_factory.mktemp("service-artifacts"))},
    )
    yield running
    running.stop()


def refuse_s3_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Server mode must not need S3 on the machine running the hook."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("server mode made an S3 session")

    monkeypatch.setattr(stacker_hook, "get_session", refuse)


@pytest.fixture
def no_s3_here(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_s3_sessions(monkeypatch)


def stacker_run(**kwargs: Any) -> Dict[str, Any]:
    result: Dict[str, Any] = stacker_hook.upload_lambda_functions(
        context=stacker_context(), provider=provider(), **kwargs
    )
    return result


def test_server_mode_gives_the_local_mode_key_and_bytes(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    service: Service,
    service_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    functions = {"MyFunction": {"path": str(root), "exclude": ["**/*.md"]}}
    local = stacker_run(bucket=bucket, prefix="team/", functions=functions)["MyFunction"]

    monkeypatch.setenv("LAMBDA_PACKAGER_SERVER", service.url)
    monkeypatch.setenv("LAMBDA_PACKAGER_TOKEN", TOKEN)
    refuse_s3_sessions(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="lambda_packager"):
        remote = stacker_run(bucket=bucket, prefix="team/", functions=functions)["MyFunction"]
    again = stacker_run(prefix="team/", functions=functions)["MyFunction"]

    assert remote.to_dict() == {"S3Bucket": service_bucket, "S3Key": local.S3Key}
    assert object_bytes(s3, service_bucket, remote.S3Key) == object_bytes(s3, bucket, local.S3Key)
    assert (remote.code_sha256, remote.size) == (local.code_sha256, local.size)
    assert (remote.uploaded, again.uploaded) == (True, False)
    assert again.S3Key == remote.S3Key
    assert f"in its bucket {service_bucket}, not in bucket {bucket}" in caplog.text


def test_a_prebuilt_zip_gets_the_same_key_in_both_modes(
    tmp_path: Path, bucket: str, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    prebuilt = tmp_path / "fn.zip"
    with zipfile.ZipFile(prebuilt, "w") as zipped:
        for path in sorted(root.rglob("*")):
            zipped.write(path, path.relative_to(root).as_posix())
    local = stacker_run(bucket=bucket, functions={"F": {"path": str(prebuilt)}})["F"]
    refuse_s3_sessions(monkeypatch)
    monkeypatch.setenv("LAMBDA_PACKAGER_TOKEN", TOKEN)
    remote = stacker_run(server=service.url, functions={"F": {"path": str(prebuilt)}})["F"]
    assert remote.S3Key == local.S3Key


def test_a_runway_layer_in_server_mode_has_the_local_key(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    service: Service,
    service_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = make_tree(tmp_path / "layer", TREE)
    functions = {"MyLayer": {"path": str(root), "layer": True}}
    local = runway_upload(
        context=RunwayContext(bucket, tmp_path), provider=provider(), functions=functions
    )["MyLayer"]
    monkeypatch.setenv("LAMBDA_PACKAGER_TOKEN", TOKEN)
    context = RunwayContext(bucket, tmp_path)
    remote = runway_upload(
        context=context, provider=provider(), server=service.url, functions=functions
    )["MyLayer"]

    assert remote.S3Key == local.S3Key
    assert context.session_regions == []
    with zipfile.ZipFile(io.BytesIO(object_bytes(s3, service_bucket, remote.S3Key))) as zipped:
        assert zipped.namelist() == sorted(f"python/{name}" for name in TREE)


def test_a_wrong_token_is_the_service_error(
    tmp_path: Path, service: Service, no_s3_here: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    monkeypatch.setenv("LAMBDA_PACKAGER_TOKEN", "not-the-token")
    with pytest.raises(PackagerError) as raised:
        stacker_run(server=service.url, functions={"F": {"path": str(root)}})
    assert (raised.value.code, raised.value.status) == ("unauthorized", 401)


def test_the_server_argument_wins_over_the_environment(
    tmp_path: Path, service: Service, no_s3_here: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    monkeypatch.setenv("LAMBDA_PACKAGER_SERVER", "http://127.0.0.1:9")
    monkeypatch.setenv("LAMBDA_PACKAGER_TOKEN", TOKEN)
    code = stacker_run(server=service.url, functions={"F": {"path": str(root)}})["F"]
    assert code.S3Key == f"lambda-F-{code.sha256}.zip"


def test_payload_acl_cannot_be_honoured_in_server_mode(
    tmp_path: Path, service: Service, no_s3_here: None
) -> None:
    with pytest.raises(
        ValueError, match="payload_acl 'authenticated-read' cannot be applied in server mode"
    ):
        stacker_run(server=service.url, payload_acl="authenticated-read", functions={})


def test_a_service_without_a_bucket_cannot_give_a_code(
    tmp_path: Path, local_store_service: Service, no_s3_here: None
) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    with pytest.raises(PackagerError) as raised:
        stacker_run(server=local_store_service.url, functions={"F": {"path": str(root)}})
    assert raised.value.code == "server_has_no_bucket"
    assert "lambda-F-" in raised.value.message


def test_a_prefix_the_service_does_not_allow_is_its_error(
    tmp_path: Path, local_store_service: Service, no_s3_here: None
) -> None:
    root = make_tree(tmp_path / "fn", TREE)
    with pytest.raises(PackagerError) as raised:
        stacker_run(
            server=local_store_service.url, prefix="team/", functions={"F": {"path": str(root)}}
        )
    assert (raised.value.code, raised.value.status) == ("prefix_not_allowed", 403)


def test_an_unreachable_service_is_named(tmp_path: Path, no_s3_here: None) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = make_tree(tmp_path / "fn", TREE)
    with pytest.raises(PackagerError) as raised:
        stacker_run(server=f"http://127.0.0.1:{port}", functions={"F": {"path": str(root)}})
    assert raised.value.code == "server_unreachable"
    assert f"127.0.0.1:{port}" in raised.value.message


def record_requests(monkeypatch: pytest.MonkeyPatch) -> List[Tuple[str, str, int]]:
    """Every request the hook sends, as (method, path, body bytes), recorded on its way out."""
    sent: List[Tuple[str, str, int]] = []
    real = urllib.request.urlopen

    def urlopen(request: urllib.request.Request, *args: Any, **kwargs: Any) -> Any:
        data = request.data
        size = len(data) if isinstance(data, bytes) else int(request.get_header("Content-length", "0"))
        sent.append((request.get_method(), urllib.parse.urlsplit(request.full_url).path, size))
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return sent


def test_a_repeat_in_server_mode_sends_no_archive(
    tmp_path: Path, service: Service, no_s3_here: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "fn", {**TREE, "model.bin": os.urandom(200_000)})
    functions = {"F": {"path": str(root)}}
    monkeypatch.setenv("LAMBDA_PACKAGER_TOKEN", TOKEN)
    sent = record_requests(monkeypatch)
    first = stacker_run(server=service.url, prefix="team/", functions=functions)["F"]
    assert [(method, path) for method, path, _ in sent] == [
        ("POST", "/v1/functions/F/package/lookup"),
        ("POST", "/v1/functions/F/package"),
    ]
    assert sent[1][2] > 200_000, "the first run uploads the files"

    sent.clear()
    again = stacker_run(server=service.url, prefix="team/", functions=functions)["F"]
    assert [(method, path) for method, path, _ in sent] == [("POST", "/v1/functions/F/package/lookup")]
    assert sent[0][2] < 4096, "no archive body, only the lookup"
    assert (first.uploaded, again.uploaded) == (True, False)
    assert again.to_dict() == first.to_dict()
    assert (again.sha256, again.code_sha256, again.size) == (first.sha256, first.code_sha256, first.size)
    assert again.S3Key == f"team/lambda-F-{first.sha256}.zip"


def test_without_the_binary_server_mode_uploads_as_before(
    tmp_path: Path, service: Service, no_s3_here: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "fn", {**TREE, "model.bin": os.urandom(1000)})
    monkeypatch.setenv("LAMBDA_PACKAGER_TOKEN", TOKEN)
    monkeypatch.delenv("LAMBDA_PACKAGER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    sent = record_requests(monkeypatch)
    first = stacker_run(server=service.url, functions={"F": {"path": str(root)}})["F"]
    again = stacker_run(server=service.url, functions={"F": {"path": str(root)}})["F"]
    assert [path for _, path, _ in sent] == ["/v1/functions/F/package"] * 2
    assert (first.uploaded, again.uploaded, again.S3Key) == (True, False, first.S3Key)
