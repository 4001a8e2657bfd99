#!/usr/bin/env bash
# Builds the reference Lambda payload of scripts/bench and scripts/bench-memory: the boto3,
# botocore, s3transfer, jmespath and numpy wheels (pinned versions; manylinux, CPython 3.12)
# unpacked into one tree, 3,013 files and 80.3 MB of file data (89 MB on disk: JSON, Python
# sources, shared objects), the mix a real Lambda deployment package carries. Needs python3 with
# pip and PyPI the first time; DIR.complete marks a finished tree, which later calls reuse.
#
# Usage: scripts/lambda-payload.sh DIR    (prints DIR)
set -euo pipefail
dir=${1:?usage: scripts/lambda-payload.sh DIR}
marker=${dir%/}.complete
if [[ -f $marker && -d $dir ]]; then echo "$dir"; exit 0; fi
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 -d "$wheels" \
  boto3==1.44.5 botocore==1.44.5 s3transfer==0.19.3 jmespath==1.1.0 numpy==2.2.6
mkdir -p "$dir"
for w in "$wheels"/*.whl; do python3 -m zipfile -e "$w" "$dir"; done
touch "$marker"
echo "$dir"
