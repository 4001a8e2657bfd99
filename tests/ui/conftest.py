"""Fixtures of the browser tests: the service (the debug binary, on 127.0.0.1, a local store in
a temp dir), seeded over its JSON API, and a headless Chromium (Debian's, through its
chromium-driver). Every process a fixture starts is stopped by its finalizer.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = ROOT / "target" / "ui-screenshots"

# The file the escaping test looks for, and the two versions of `orders-api` the diff compares:
# one file's content changed, one file added, one exec bit set.
SCRIPT_NAME = "<script>alert(1)</script>.py"
OLD = {"handler.py": (b"def handler(e, c):\n    return 1\n", 0o644), "bin/run": (b"#!/bin/sh\n", 0o644),
       "lib/util.py": (b"X = 1\n", 0o644)}
NEW = {"handler.py": (b"def handler(e, c):\n    return 2\n", 0o644), "bin/run": (b"#!/bin/sh\n", 0o755),
       "lib/util.py": (b"X = 1\n", 0o644), "lib/extra.py": (b"Y = 2\n", 0o644)}
TOKEN = "ui-browser-test-s3cret"
WRITER = "ui-browser-test-writer"


def tar_of(files: dict[str, tuple[bytes, int]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass
class Server:
    """A running `lambda-packager serve` and what was seeded into it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    keys: dict[str, str] = field(default_factory=dict)

    def publish(self, function: str, files: dict[str, tuple[bytes, int]], token: str | None = None) -> str:
        request = urllib.request.Request(f"{self.url}/v1/functions/{function}/package", data=tar_of(files),
                                         method="POST", headers={"content-type": "application/x-tar"})
        if token:
            request.add_header("authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["key"]


def binary() -> Path:
    path = Path(os.environ.get("LAMBDA_PACKAGER_BIN", ROOT / "target" / "debug" / "lambda-packager"))
    assert path.is_file(), f"{path}: build it first (cargo build), or set LAMBDA_PACKAGER_BIN"
    return path


def start_server(tmp: Path, tokens: list[dict[str, object]] | None = None) -> Server:
    """Starts the service on free ports of 127.0.0.1 with a temp config; waits (polling its log,
    with a deadline) for the line that says where it listens."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "packager.toml"
    lines = ['[server]', 'listen = "127.0.0.1:0"', 'admin_listen = "127.0.0.1:0"',
             '[store.local]', f'path = {json.dumps(str(tmp / "artifacts"))}', '[log]', 'format = "json"']
    config.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDA_PACKAGER_") and k != "RUST_LOG"}
    if tokens:
        env["LAMBDA_PACKAGER_AUTH__TOKENS"] = json.dumps(tokens)
    log = tmp / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen([str(binary()), "serve", "--config", str(config)], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 60
    while True:
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("message") == "listening":
                return Server(url=f"http://{record['api']}", process=process, log=log)
        assert process.poll() is None, f"serve exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"serve did not listen:\n{log.read_text()}"
        time.sleep(0.02)


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """An open service (no tokens) holding two versions of orders-api, one of billing, and the
    package with a file named like a script."""
    running = start_server(tmp_path_factory.mktemp("open"))
    try:
        running.keys["old"] = running.publish("orders-api", OLD)
        running.keys["new"] = running.publish("orders-api", NEW)
        running.keys["billing"] = running.publish("billing", {"app.py": (b"print('bill')\n", 0o644)})
        running.keys["xss"] = running.publish("xss-demo", {SCRIPT_NAME: (b"x\n", 0o644)})
    except BaseException:
        stop(running)
        raise
    yield running
    stop(running)


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """A service with a read token and a write token, holding one package."""
    tokens = [{"name": "reader", "token": TOKEN, "scopes": ["read"]},
              {"name": "ci", "token": WRITER, "scopes": ["write"]}]
    running = start_server(tmp_path_factory.mktemp("auth"), tokens)
    try:
        running.keys["new"] = running.publish("orders-api", NEW, token=WRITER)
    except BaseException:
        stop(running)
        raise
    yield running
    stop(running)


def make_driver(javascript: bool = True) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,800", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=DriverService(executable_path=CHROMEDRIVER))


@pytest.fixture(scope="session")
def driver() -> webdriver.Chrome:
    browser = make_driver()
    yield browser
    browser.quit()


@pytest.fixture
def no_js_driver() -> webdriver.Chrome:
    browser = make_driver(javascript=False)
    yield browser
    browser.quit()


@pytest.fixture(scope="session")
def screenshot():
    """Saves the current page as target/ui-screenshots/<name>.png, for people to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(browser: webdriver.Chrome, name: str) -> None:
        assert browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))

    return save
