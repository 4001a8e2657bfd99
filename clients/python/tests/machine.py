"""One run of the stacker hook on "another machine", for the reproducibility tests.

``python machine.py ROOT BUCKET FUNCTION PREFIX UMASK`` runs
``lambda_packager.stacker.upload_lambda_functions`` in this process (the caller sets ``TZ``,
``PYTHONHASHSEED`` and the S3 endpoint in its environment) and prints one JSON object: the
returned bucket, key and ``code_sha256``, and how many ``PutObject`` calls it made.
"""

import json
import os
import sys
from typing import Any, List

import lambda_packager.stacker as hook

from support import provider, stacker_context


def main(root: str, bucket: str, function: str, prefix: str, umask: str) -> None:
    os.umask(int(umask, 8))
    puts: List[str] = []
    session_of = hook.get_session

    def counting_session(*args: Any, **kwargs: Any) -> Any:
        session = session_of(*args, **kwargs)
        session.events.register("before-call.s3.PutObject", lambda **_: puts.append("put"))
        return session

    hook.get_session = counting_session  # type: ignore[assignment]
    result = hook.upload_lambda_functions(
        context=stacker_context(),
        provider=provider(),
        bucket=bucket,
        prefix=prefix,
        functions={function: {"path": root}},
    )
    code = result[function]
    print(
        json.dumps(
            {
                "bucket": code.S3Bucket,
                "key": code.S3Key,
                "code_sha256": code.code_sha256,
                "puts": len(puts),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
