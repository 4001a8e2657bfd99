#!/usr/bin/env python3
"""Baseline for scripts/bench: packs a tree the way stacker's aws_lambda hook did.

stacker (stacker/hooks/aws_lambda.py, `_zip_files`) listed the files with os.walk, wrote each one
with ZipFile.write(ZIP_DEFLATED) (zlib's default level, 6) into an in-memory buffer, forced the
permissions to 0755/0644 by the owner-exec bit, and kept the whole zip in memory for the upload.
This script does the same and then writes the buffer to OUT, so its size can be measured.

Usage: bench_zipfile.py TREE OUT
"""

import io
import os
import stat
import sys
from zipfile import ZIP_DEFLATED, ZipFile

ZIP_PERMS_MASK = (stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO) << 16


def list_files(root):
    """Relative paths of the regular files under root, in os.walk order (sorted per directory)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, root)


def zip_files(files, root):
    """stacker's _zip_files: in-memory ZIP_DEFLATED zip with 0755/0644 permissions."""
    zip_data = io.BytesIO()
    with ZipFile(zip_data, "w", ZIP_DEFLATED) as zip_file:
        for fname in files:
            zip_file.write(os.path.join(root, fname), fname)
        for entry in zip_file.filelist:
            perms = (entry.external_attr & ZIP_PERMS_MASK) >> 16
            new_perms = 0o755 if perms & stat.S_IXUSR else 0o644
            if new_perms != perms:
                entry.external_attr = (entry.external_attr & ~ZIP_PERMS_MASK) | (new_perms << 16)
    return zip_data.getvalue()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bench_zipfile.py TREE OUT")
    root, out = sys.argv[1], sys.argv[2]
    files = list(list_files(root))
    if not files:
        sys.exit("no files under " + root)
    contents = zip_files(files, root)
    with open(out, "wb") as f:
        f.write(contents)


if __name__ == "__main__":
    main()
