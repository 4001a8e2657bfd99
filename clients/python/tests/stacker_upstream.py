"""Prepares stacker 1.7.2's own hook tests to run against ``lambda_packager.stacker``.

Usage: ``python tests/stacker_upstream.py DEST`` (``scripts/test`` runs it), then
``pytest DEST``.

The test file ships inside stacker's PyPI package (``stacker/tests/hooks/test_aws_lambda.py``,
with ``stacker/tests/factories.py`` and ``conftest.py``); it is read from the installed stacker,
never kept in this repository. The copy differs from the original only in the module name,
in its two places (the import and the one ``mock.patch`` target); this script refuses to
write anything if the file does not have exactly those two. Around it:

- ``DEST/stacker_upstream/`` is a package holding stacker's ``conftest.py`` and
  ``factories.py`` unchanged, so the test's ``from ..factories import`` works without
  shadowing the installed ``stacker`` package;
- its ``__init__.py``, imported before the test module, makes ``moto.mock_s3`` an alias of
  ``moto.mock_aws`` (moto 5 renamed it) and clears the server-mode variables, so these tests
  exercise local mode. (Not a top-level ``conftest.py``: that module name is this package's
  own tests' when both run in one pytest session.)
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ORIGINAL_MODULE = "stacker.hooks.aws_lambda"
OUR_MODULE = "lambda_packager.stacker"
EXPECTED_REFERENCES = 2

PACKAGE_INIT = '''"""Written by clients/python/tests/stacker_upstream.py; see its docstring."""
import os

import moto

# moto 5 renamed mock_s3 to mock_aws; stacker 1.7.2's test file imports the old name.
moto.mock_s3 = moto.mock_aws

# These are stacker's local-mode tests: never let a developer's server variables redirect them.
for variable in ("LAMBDA_PACKAGER_SERVER", "LAMBDA_PACKAGER_TOKEN"):
    os.environ.pop(variable, None)
'''


def prepare(dest: Path) -> Path:
    """Writes the copy under ``dest``; returns the path of the test file."""
    spec = importlib.util.find_spec("stacker")
    if spec is None or spec.origin is None:
        raise SystemExit("stacker is not installed: scripts/test installs stacker==1.7.2")
    tests = Path(spec.origin).parent / "tests"
    original = (tests / "hooks" / "test_aws_lambda.py").read_text(encoding="utf-8")
    found = original.count(ORIGINAL_MODULE)
    if found != EXPECTED_REFERENCES:
        raise SystemExit(
            f"{tests}/hooks/test_aws_lambda.py names {ORIGINAL_MODULE} {found} times, "
            f"expected {EXPECTED_REFERENCES}: not stacker 1.7.2's file?"
        )
    package = dest / "stacker_upstream"
    (package / "hooks").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(PACKAGE_INIT, encoding="utf-8")
    (package / "hooks" / "__init__.py").write_text("", encoding="utf-8")
    for name in ("conftest.py", "factories.py"):
        (package / name).write_text((tests / name).read_text(encoding="utf-8"), encoding="utf-8")
    test_file = package / "hooks" / "test_aws_lambda.py"
    test_file.write_text(original.replace(ORIGINAL_MODULE, OUR_MODULE), encoding="utf-8")
    return test_file


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} DEST")
    print(prepare(Path(sys.argv[1])))
    sys.exit(os.EX_OK)
