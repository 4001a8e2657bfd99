#!/usr/bin/env python3
"""Checks every relative link in the repository's Markdown files: the file or directory must
exist, and a `#fragment` must name a heading of the target file (GitHub's anchor rules).

Run by .ci/run; needs only python3. Usage: scripts/check_links.py (from anywhere in the
repository). Links to other sites (http:, https:, mailto:) are not followed: CI has no network
but the package registries. Exit status 1 if any link is dead, each one printed as
`file:line: link: reason`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    """Tracked and new (not ignored) Markdown files."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.md"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
    return sorted({REPO / line for line in out.splitlines() if (REPO / line).is_file()})


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = "".join(c for c in text.lower() if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def main() -> int:
    dead = []
    files = markdown_files()
    for path in files:
        for number, line in prose_lines(path):
            for target in LINK.findall(INLINE_CODE.sub("", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue
                file_part, _, fragment = target.partition("#")
                dest = (path.parent / file_part).resolve() if file_part else path
                where = f"{path.relative_to(REPO)}:{number}: {target}"
                if not dest.exists():
                    dead.append(f"{where}: no such file or directory")
                elif REPO not in dest.parents and dest != REPO:
                    dead.append(f"{where}: points outside the repository")
                elif fragment and (dest.suffix != ".md" or fragment not in anchors(dest)):
                    dead.append(f"{where}: no heading with the anchor #{fragment}")
    for d in dead:
        print(d)
    print(f"check_links: {len(files)} Markdown files, {len(dead)} dead relative link(s)")
    return 1 if dead else 0


if __name__ == "__main__":
    sys.exit(main())
