"""Reading a unified git diff: paths, sizes, and the file modes it asks for."""

from __future__ import annotations

import fnmatch
import posixpath
import re

_HEADER = re.compile(r'^diff --git "?a/(.+?)"? "?b/(.+?)"?$')
# Only regular files are published: a symlink (120000) can point a later read or write outside the
# grant, a gitlink (160000) pulls in another repository, and no forge publishes a mode faithfully.
_MODE_LINE = re.compile(r"^(new file mode|deleted file mode|old mode|new mode|index [0-9a-f]+\.\.[0-9a-f]+) ?([0-7]{6})?$")


def diff_paths(diff: str) -> list[str]:
    """Every path a unified git diff touches (old and new names of renames)."""
    paths: list[str] = []
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            match = _HEADER.match(line)
            if not match:
                raise ValueError(f"cannot read diff header {line!r}")
            for path in match.groups():
                if path not in paths:
                    paths.append(path)
    return paths


def changed_lines(diff: str) -> int:
    count = 0
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            continue
        if line.startswith(("+", "-")):
            count += 1
    return count


def matches_any(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(posixpath.basename(path), p) for p in patterns)


def mode_problems(diff: str) -> list[str]:
    """Header lines of `diff` that create links or submodules, or change a file's mode."""
    problems: list[str] = []
    current = "?"
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            match = _HEADER.match(line)
            current = match.group(2) if match else "?"
            continue
        if line.startswith(("@@", "--- ", "+++ ")):
            continue
        match = _MODE_LINE.match(line)
        if not match:
            continue
        what, mode = match.groups()
        if what in ("old mode", "new mode"):
            problems.append(f"{current}: changes the file mode ({line.strip()}); only file contents can change")
        elif mode in ("120000", "160000"):
            kind = "a symbolic link" if mode == "120000" else "a submodule"
            problems.append(f"{current}: is {kind} (mode {mode}); links and submodules cannot be proposed")
        elif what == "new file mode" and mode != "100644":
            problems.append(f"{current}: new file with mode {mode}; only regular files (100644) can be added")
    return list(dict.fromkeys(problems))
