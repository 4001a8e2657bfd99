"""Shared fixtures: a real S3-compatible server (moto), the lambda-packager binary.

- ``moto_url``: moto's server on a free 127.0.0.1 port, in a thread of this test process, for
  the whole session (stopped at the end; it dies with the process). Tests use fresh buckets.
- ``s3_env``: points boto3 (``AWS_ENDPOINT_URL``) at it, with fake credentials, for this test
  and the processes it starts; ``s3`` is a client, ``bucket`` a fresh bucket.
- ``packager_bin``: ``$LAMBDA_PACKAGER_BIN``, which ``./scripts/test`` sets to the binary cargo
  built. Without it the tests fail (they never skip).
- ``put_counter``: counts the ``PutObject`` calls the stacker hook makes.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterator, List

import boto3
import pytest
from moto.server import ThreadedMotoServer

from support import REGION, new_bucket


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's server, token, profile or endpoint leaks into a test."""
    for variable in (
        "LAMBDA_PACKAGER_SERVER",
        "LAMBDA_PACKAGER_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "lambda-packager-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "lambda-packager-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # Never read this machine's AWS files.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture(scope="session")
def packager_bin() -> str:
    path = os.environ.get("LAMBDA_PACKAGER_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            "LAMBDA_PACKAGER_BIN must name the lambda-packager binary: run the tests with "
            "./scripts/test, which builds it and sets the variable"
        )
    return path


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return moto_url


@pytest.fixture
def s3(s3_env: str) -> Any:
    return boto3.client("s3", region_name=REGION)


@pytest.fixture
def bucket(s3: Any) -> str:
    return new_bucket(s3)


@pytest.fixture
def put_counter(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The keys of every ``PutObject`` the stacker hook's S3 client sends."""
    import lambda_packager.stacker as hook

    puts: List[str] = []
    original: Callable[..., Any] = hook.get_session

    def counting_session(*args: Any, **kwargs: Any) -> Any:
        session = original(*args, **kwargs)
        session.events.register(
            "before-call.s3.PutObject", lambda params, **_: puts.append(params["url_path"])
        )
        return session

    monkeypatch.setattr(hook, "get_session", counting_session)
    return puts
