"""The code base's layout rules, checked on the source itself (issue 11).

- No import cycles among the project's modules, counting imports inside functions too: a function-level
  import that closes a loop is still a cycle, only a hidden one.
- An import inside a function says why on its own line (a real cycle, Django's app registry, a lazy
  heavy dependency); everything else is imported at the top of its module.
- A ``# type: ignore`` carries its reason beside it.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agentops", "dashboard")


def _sources() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


MODULES = dict(_sources())


def _target(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The project modules an import statement loads (the nearest existing module of each name)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if MODULES[module].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    found = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.append(name)
    return found


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import that runs at some point (``if TYPE_CHECKING`` blocks never do), and whether it
    sits inside a function."""

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from (pair for sub in child.orelse for pair in walk_one(sub, in_function))
                continue
            yield from walk_one(child, in_function)

    def walk_one(child: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        elif isinstance(child, ast.If) and _is_type_checking(child):
            return
        else:
            yield from walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    yield from walk(tree, False)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for module, path in MODULES.items():
        for node, _ in _imports(ast.parse(path.read_text())):
            graph[module].update(_target(module, node))
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _comments(source: str) -> dict[int, str]:
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string
    return comments


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("import os\ndef f():\n    from agentops.runs import models\n")
    assert [inside for _, inside in _imports(tree)] == [False, True]


def test_no_module_of_the_project_imports_itself_through_a_cycle() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (counting imports inside functions):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_every_import_inside_a_function_says_why() -> None:
    unexplained = []
    for path in MODULES.values():
        source = path.read_text()
        comments = _comments(source)
        for node, in_function in _imports(ast.parse(source)):
            if not in_function:
                continue
            lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
            reasons = [comments[n] for n in lines if n in comments] + [comments.get(node.lineno - 1, "")]
            if not any(re.sub(r"#\s*(noqa[:\s\w,]*)?", "", r).strip() for r in reasons):
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not unexplained, "imports inside functions without a reason (move them to the top, or say why):\n" + "\n".join(unexplained)


def test_every_type_ignore_gives_its_reason() -> None:
    bare = []
    for path in MODULES.values():
        for number, comment in _comments(path.read_text()).items():
            match = re.search(r"type:\s*ignore(\[[^\]]*\])?(.*)", comment)
            if match and not re.search(r"\w", match.group(2)):
                bare.append(f"{path.relative_to(ROOT)}:{number}: {comment}")
    assert not bare, "`# type: ignore` without a reason beside it:\n" + "\n".join(bare)
