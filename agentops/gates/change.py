"""The change, computed once on the host from the agent's diff and the trusted base commit.

Nothing of the change runs here: host git only applies a patch to a private clone of the base (no
hooks, no system or global config). The result, a ChangeSet of full file contents and the git tree it
makes, is what the gates judge and the only thing that is ever published. The gate sandbox applies
the same diff and must arrive at the same tree before any of the change's code runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from agentops.forges.base import ChangeSet, ForgeError, check_path

MAX_FILE_BYTES = 5_000_000
MAX_TEST_FILES_READ = 2000


class ChangeRefused(Exception):
    """The diff cannot be turned into a publishable change; the message is safe to show the model."""


@dataclass
class Entry:
    path: str
    status: str  # A, M, D
    old_mode: str
    new_mode: str


@dataclass
class Materialized:
    """The change as published: base commit, resulting tree, file contents (None: deleted)."""

    base: str
    tree: str
    files: dict[str, str | None]
    entries: list[Entry]
    old: dict[str, str | None] = field(default_factory=dict)  # base content of every changed path
    base_test_sources: dict[str, str] = field(default_factory=dict)  # every test file of the base

    def changeset(self, message: str) -> ChangeSet:
        return ChangeSet(message=message, files=dict(self.files))


def _git(*args: str, cwd: str | Path, home: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    proc = subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.symlinks=false", "-c", "core.quotepath=off", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
        input=input_text.encode() if input_text is not None else None,
    )
    if check and proc.returncode != 0:
        raise ChangeRefused(f"git {args[0]} failed: {proc.stderr.decode(errors='replace').strip()[-800:]}")
    return proc


def _raw_entries(output: bytes) -> list[Entry]:
    fields = output.decode("utf-8", errors="surrogateescape").split("\x00")
    entries: list[Entry] = []
    i = 0
    while i + 1 < len(fields) and fields[i]:
        meta, path = fields[i], fields[i + 1]
        i += 2
        old_mode, new_mode, _old_sha, _new_sha, status = meta.lstrip(":").split(" ")
        entries.append(Entry(path=path, status=status[:1], old_mode=old_mode, new_mode=new_mode))
    return entries


def _cat_blobs(base: str, paths: list[str], *, cwd: str, home: str) -> dict[str, bytes | None]:
    """The base's content of many paths in one `git cat-file --batch` (None: not a blob there)."""
    if not paths:
        return {}
    request = "".join(f"{base}:{p}\n" for p in paths)
    out = _git("cat-file", "--batch", cwd=cwd, home=home, input_text=request).stdout
    blobs: dict[str, bytes | None] = {}
    pos = 0
    for path in paths:
        end = out.index(b"\n", pos)
        header = out[pos:end].decode(errors="replace").split()
        pos = end + 1
        if len(header) == 3 and header[1] == "blob":
            size = int(header[2])
            blobs[path] = out[pos : pos + size]
            pos += size + 1
        else:
            blobs[path] = None
            if len(header) == 3:  # a tree or another object: skip its body
                pos += int(header[2]) + 1
    return blobs


def _read_text(path: Path, rel: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ChangeRefused(f"{rel}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ChangeRefused(f"{rel}: not UTF-8 text; only text files can be proposed") from None


def materialize(diff: str, *, repo_source: str, ref: str, is_test_file: object = None) -> Materialized:
    """Apply `diff` to a private host clone of `repo_source` at `ref`; return the change it makes."""
    tmp = tempfile.mkdtemp(prefix="agentops-change-")
    try:
        home = os.path.join(tmp, "home")
        os.mkdir(home)
        work = os.path.join(tmp, "work")
        if not os.path.exists(repo_source):
            raise ChangeRefused(f"the repository {repo_source!r} is not available to the gates")
        base = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=repo_source, home=home, check=False).stdout.decode().strip()
        if not base:
            raise ChangeRefused(f"the base commit {ref!r} does not exist in the repository")
        _git("clone", "-q", "--shared", "--no-checkout", os.path.abspath(repo_source), work, cwd=tmp, home=home)
        _git("-c", "advice.detachedHead=false", "checkout", "-q", "--detach", base, cwd=work, home=home)
        patch = os.path.join(tmp, "change.patch")
        with open(patch, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(diff if diff.endswith("\n") else diff + "\n")
        applied = _git("apply", "--index", "--whitespace=nowarn", patch, cwd=work, home=home, check=False)
        if applied.returncode != 0:
            raise ChangeRefused(f"the diff does not apply to a fresh clone of {base[:12]}: {applied.stderr.decode(errors='replace').strip()[-800:]}")
        raw = _git("diff", "--cached", "--raw", "-z", "--no-renames", "--no-abbrev", base, cwd=work, home=home).stdout
        entries = _raw_entries(raw)
        if not entries:
            raise ChangeRefused("the diff makes no change to the base")
        problems: list[str] = []
        for entry in entries:
            try:
                check_path(entry.path)
            except ForgeError as exc:
                problems.append(str(exc))
            modes = {entry.old_mode, entry.new_mode} - {"000000"}
            if modes & {"120000", "160000"}:
                problems.append(f"{entry.path}: a symbolic link or submodule; only regular files can be proposed")
            elif entry.status == "M" and entry.old_mode != entry.new_mode:
                problems.append(f"{entry.path}: file mode changed {entry.old_mode} -> {entry.new_mode}")
            elif entry.status == "A" and entry.new_mode != "100644":
                problems.append(f"{entry.path}: new file with mode {entry.new_mode}; only regular files (100644)")
        if problems:
            raise ChangeRefused("; ".join(problems))
        files: dict[str, str | None] = {}
        old_blobs = _cat_blobs(base, [e.path for e in entries if e.status != "A"], cwd=work, home=home)
        old: dict[str, str | None] = {}
        for entry in entries:
            files[entry.path] = None if entry.status == "D" else _read_text(Path(work) / entry.path, entry.path)
            blob = old_blobs.get(entry.path)
            old[entry.path] = None if blob is None else blob.decode("utf-8", errors="replace")
        tree = _git("write-tree", cwd=work, home=home).stdout.decode().strip()
        tests: dict[str, str] = {}
        if callable(is_test_file):
            listed = _git("ls-tree", "-r", "-z", "--name-only", base, cwd=work, home=home).stdout.decode(errors="replace").split("\x00")
            wanted = [p for p in listed if p and p.endswith(".py") and is_test_file(p)][:MAX_TEST_FILES_READ]
            for path, blob in _cat_blobs(base, wanted, cwd=work, home=home).items():
                if blob is not None and len(blob) <= MAX_FILE_BYTES:
                    tests[path] = blob.decode("utf-8", errors="replace")
        return Materialized(base=base, tree=tree, files=files, entries=entries, old=old, base_test_sources=tests)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
