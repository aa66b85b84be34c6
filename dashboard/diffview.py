"""A unified diff as a reviewer reads it: files (a tree), hunks, line numbers on both sides, syntax
colours from Pygments, and the same change paired side by side for the split view. Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pygments
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound

MAX_LINES = 5000  # lines of diff rendered; the rest is counted
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")


@dataclass
class Line:
    kind: str  # add | del | ctx | note
    old: int | None
    new: int | None
    html: SafeString


@dataclass
class Gap:
    """Lines of the file that no hunk shows: new-side lines start..end (end None: to the end of the
    file), old-side numbering from old_start. An "expand" control fetches them."""

    start: int
    end: int | None
    old_start: int

    @property
    def size(self) -> int | None:
        return None if self.end is None else self.end - self.start + 1


@dataclass
class Hunk:
    header: str
    lines: list[Line] = field(default_factory=list)
    old_start: int = 0
    old_len: int = 0
    new_start: int = 0
    new_len: int = 0
    gap: Gap | None = None  # the hidden lines just above this hunk

    @property
    def new_next(self) -> int:
        """The first new-side line after this hunk (a zero-length range names the line before it)."""
        return self.new_start + self.new_len if self.new_len else self.new_start + 1

    @property
    def old_next(self) -> int:
        return self.old_start + self.old_len if self.old_len else self.old_start + 1

    @property
    def rows(self) -> list[tuple[Line | None, Line | None]]:
        """Pairs for the split view: a run of deletions beside the run of additions that follows."""
        pairs: list[tuple[Line | None, Line | None]] = []
        dels: list[Line] = []
        adds: list[Line] = []

        def flush() -> None:
            for i in range(max(len(dels), len(adds))):
                pairs.append((dels[i] if i < len(dels) else None, adds[i] if i < len(adds) else None))
            dels.clear()
            adds.clear()

        for line in self.lines:
            if line.kind == "del":
                if adds:
                    flush()
                dels.append(line)
            elif line.kind == "add":
                adds.append(line)
            else:
                flush()
                pairs.append((line, line))
        flush()
        return pairs


@dataclass
class FileDiff:
    path: str
    old_path: str = ""
    status: str = "modified"  # added | deleted | renamed | modified | binary
    hunks: list[Hunk] = field(default_factory=list)
    added: int = 0
    deleted: int = 0
    tail: Gap | None = None  # the hidden lines after the last hunk

    @property
    def expandable(self) -> bool:
        return self.status in ("modified", "renamed") and bool(self.hunks)

    def place_gaps(self) -> None:
        if not self.expandable:
            return
        prev: Hunk | None = None
        for hunk in self.hunks:
            first = hunk.new_start if hunk.new_len else hunk.new_start + 1
            start, old_start = (prev.new_next, prev.old_next) if prev else (1, 1)
            if first > start:
                hunk.gap = Gap(start=start, end=first - 1, old_start=old_start)
            prev = hunk
        if prev is not None:
            self.tail = Gap(start=prev.new_next, end=None, old_start=prev.old_next)

    @property
    def anchor(self) -> str:
        return "file-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.path)[:120]


@dataclass
class Diff:
    files: list[FileDiff]
    added: int
    deleted: int
    omitted: int  # lines beyond MAX_LINES

    @property
    def tree(self) -> list[dict[str, Any]]:
        """Files grouped by directory, directories in order, for the file tree."""
        groups: dict[str, list[FileDiff]] = {}
        for f in sorted(self.files, key=lambda f: f.path):
            directory, _, _ = f.path.rpartition("/")
            groups.setdefault(directory, []).append(f)
        return [{"dir": d, "files": fs} for d, fs in groups.items()]


def _strip_prefix(name: str) -> str:
    name = name.split("\t")[0].strip()
    if name.startswith('"') and name.endswith('"'):
        name = name[1:-1]
    return re.sub(r"^[ab]/", "", name)


@lru_cache(maxsize=256)
def _lexer(path: str) -> Any:
    try:
        return get_lexer_for_filename(path, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False, ensurenl=False)


def _highlight(path: str, code: list[str]) -> list[SafeString]:
    """Highlight a side's lines together (so a multi-line string stays coloured), then split them
    back into lines. Pygments escapes the text itself."""
    if not code:
        return []
    lexer = _lexer(path)
    if lexer.name == "Text only":
        return [mark_safe(escape(line)) for line in code]  # noqa: S308 - escaped
    html = pygments.highlight("\n".join(code) + "\n", lexer, HtmlFormatter(nowrap=True, classprefix="hl-"))
    out = html.split("\n")
    if len(out) < len(code):  # defensive: never lose a line to a lexer's quirk
        return [mark_safe(escape(line)) for line in code]  # noqa: S308 - escaped
    # A token spanning lines keeps its <span> open across "\n"; close and reopen it per line.
    lines: list[SafeString] = []
    carry = ""
    for raw in out[: len(code)]:
        text = carry + raw
        opened = re.findall(r'<span class="[^"]*">', text)
        depth = text.count("<span") - text.count("</span>")
        carry = "".join(opened[-depth:]) if depth > 0 else ""
        lines.append(mark_safe(text + "</span>" * max(0, depth)))  # noqa: S308 - Pygments output
    return lines


def parse(diff: str, *, highlight: bool = True) -> Diff:
    files: list[FileDiff] = []
    current: FileDiff | None = None
    hunk: Hunk | None = None
    old_no = new_no = 0
    raw = (diff or "").splitlines()
    shown = raw[:MAX_LINES]
    # Lines as text first; colours are applied per file and side afterwards.
    pending: list[tuple[Line, str, str]] = []  # (line, side, text)

    def new_file(path: str = "", old: str = "") -> FileDiff:
        f = FileDiff(path=path or old or "?", old_path=old)
        files.append(f)
        return f

    for index, text in enumerate(shown):
        if text.startswith("diff --git "):
            parts = text[len("diff --git ") :].split(" b/", 1)
            current = new_file(_strip_prefix(parts[1]) if len(parts) == 2 else "?", _strip_prefix(parts[0]))
            hunk = None
        elif text.startswith("--- ") and (hunk is None or not hunk.lines or _looks_like_header(shown, index)):
            old = _strip_prefix(text[4:])
            if current is None or current.hunks:
                current = new_file(old=old if old != "/dev/null" else "")
            current.old_path = "" if old == "/dev/null" else old
            if old == "/dev/null":
                current.status = "added"
            hunk = None
        elif text.startswith("+++ ") and hunk is None and current is not None:
            new = _strip_prefix(text[4:])
            if new == "/dev/null":
                current.status = "deleted"
                current.path = current.old_path or current.path
            else:
                current.path = new
                if current.old_path and current.old_path != new and current.status == "modified":
                    current.status = "renamed"
        elif text.startswith(
            ("new file mode", "deleted file mode", "rename from", "rename to", "index ", "similarity index", "old mode", "new mode", "Binary files")
        ):
            if current is not None:
                if text.startswith("new file"):
                    current.status = "added"
                elif text.startswith("deleted file"):
                    current.status = "deleted"
                elif text.startswith("rename"):
                    current.status = "renamed"
                elif text.startswith("Binary"):
                    current.status = "binary"
        elif (m := _HUNK.match(text)) is not None:
            if current is None:
                current = new_file()
            old_no, new_no = int(m.group(1)), int(m.group(3))
            hunk = Hunk(
                header=text,
                old_start=old_no,
                old_len=int(m.group(2)) if m.group(2) is not None else 1,
                new_start=new_no,
                new_len=int(m.group(4)) if m.group(4) is not None else 1,
            )
            current.hunks.append(hunk)
        elif hunk is not None and current is not None:
            if text.startswith("+"):
                line = Line("add", None, new_no, mark_safe(""))
                new_no += 1
                current.added += 1
                pending.append((line, current.path, text[1:]))
            elif text.startswith("-"):
                line = Line("del", old_no, None, mark_safe(""))
                old_no += 1
                current.deleted += 1
                pending.append((line, current.path + "\0old", text[1:]))
            elif text.startswith("\\"):
                line = Line("note", None, None, mark_safe(escape(text)))  # noqa: S308 - escaped
            else:
                line = Line("ctx", old_no, new_no, mark_safe(""))
                old_no += 1
                new_no += 1
                pending.append((line, current.path + "\0new", text[1:] if text.startswith(" ") else text))
            hunk.lines.append(line)
    _colour(pending, highlight)
    truncated = len(raw) > MAX_LINES
    for f in files:
        # The file cut by MAX_LINES has an unknown end: offer no expansion after its last hunk.
        f.place_gaps()
        if truncated and f is files[-1]:
            f.tail = None
    return Diff(files=files, added=sum(f.added for f in files), deleted=sum(f.deleted for f in files), omitted=max(0, len(raw) - MAX_LINES))


def _looks_like_header(lines: list[str], i: int) -> bool:
    """A '--- ' line starts a new file only when a '+++ ' line follows it (else it deletes '-- ...')."""
    return i + 1 < len(lines) and lines[i + 1].startswith("+++ ")


def _colour(pending: list[tuple[Line, str, str]], highlight: bool) -> None:
    by_side: dict[str, list[tuple[Line, str]]] = {}
    for line, side, text in pending:
        by_side.setdefault(side.split("\0")[0] + ("\0old" if line.kind == "del" else "\0new"), []).append((line, text))
    for side, items in by_side.items():
        path = side.split("\0")[0]
        if highlight:
            htmls = _highlight(path, [t for _, t in items])
        else:
            htmls = [mark_safe(escape(t)) for _, t in items]  # noqa: S308 - escaped
        for (line, _), html in zip(items, htmls, strict=False):
            line.html = html


def highlight_lines(path: str, lines: list[str]) -> list[SafeString]:
    """Colour lines fetched outside the diff (expanded context) as the diff colours its own."""
    return _highlight(path, lines)


def pygments_css() -> str:
    return HtmlFormatter(classprefix="hl-", style="default").get_style_defs(".code")
