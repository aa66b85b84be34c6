""" "Tests intact", by meaning: what a change does to the tests, read from the Python AST.

Two kinds of finding:
- problems fail the gate: an existing test deleted, skipped or xfailed; an assertion that can no longer
  fail (a tautology, dead code, an ``except AssertionError`` around it); fewer effective assertions;
  a comparison removed or loosened (``==`` to ``<=``, ``x == 3`` to ``x``, ``or True``);
- flags need a person (no auto-merge at trust phase 4): any change to an existing test file, to
  ``conftest.py``, a package ``__init__.py`` or the test configuration; a non-Python file under the
  tests changed; a literal constant the tests use changed (a load test's 25 lowered to 5, in the test
  or in the module it imports it from); test-run tricks in changed code (exiting the interpreter,
  exit hooks, spawning processes, writing or deleting files, touching the test report).
"""

from __future__ import annotations

import ast
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_SKIP_NAMES = {"skip", "skipif", "xfail", "skipIf", "skipUnless", "expectedFailure"}
_COLLECTION_TRICKS = re.compile(
    r"collect_ignore|--deselect|--ignore|addopts|norecursedirs|pytest_collection_modifyitems|python_files|python_functions"
    r"|python_classes|testpaths|confcutdir|-p\s*no:|pytest_plugins|junit"
)
TEST_CONFIG_FILES = {
    "conftest.py",
    "pytest.ini",
    "tox.ini",
    "setup.cfg",
    "pyproject.toml",
    ".coveragerc",
    "noxfile.py",
    "setup.py",
    "__init__.py",
    "sitecustomize.py",
    "usercustomize.py",
}
_BROAD_EXCEPTIONS = {"AssertionError", "Exception", "BaseException"}
_EXITS = {"_exit", "exit", "abort", "kill", "killpg"}
# Calls in changed code that can fake a test run's outcome or rewrite what is on disk: these names
# wherever they are called, ...
_SUSPICIOUS_CALLS = {
    "_exit",
    "abort",
    "killpg",
    "Popen",
    "check_call",
    "check_output",
    "spawnv",
    "spawnve",
    "execv",
    "execve",
    "execvp",
    "fork",
    "forkpty",
    "rmtree",
    "symlink",
    "symlink_to",
    "hardlink_to",
    "write_text",
    "write_bytes",
    "__import__",
    "import_module",
    "exec",
    "eval",
    "dup2",
    "chmod",
    "unlink",
    "rmdir",
    "copytree",
    "copyfile",
    "removedirs",
}
# ... and these only on a module that reaches the process or the disk (`os.remove`, not `list.remove`).
_SUSPICIOUS_MODULE_CALLS = {
    "exit",
    "kill",
    "register",
    "system",
    "popen",
    "run",
    "call",
    "remove",
    "rename",
    "replace",
    "move",
    "copy",
    "copy2",
    "link",
    "truncate",
    "write",
    "writelines",
    "setattr",
    "open",
}
_PROCESS_MODULES = {"os", "sys", "shutil", "subprocess", "atexit", "signal", "pathlib", "importlib", "builtins", "io", "posix"}
_BARE_SUSPICIOUS = {"exit", "quit", "setattr", "compile", "breakpoint"}
# Attributes whose mere use reaches around the code under test.
_SUSPICIOUS_ATTRIBUTES = {"_exit", "modules", "__builtins__", "excepthook", "settrace", "setprofile", "__code__"}
_SUSPICIOUS_MODULES = {"atexit", "subprocess", "ctypes", "shutil", "signal", "socket", "importlib", "_pytest", "multiprocessing", "pty"}


def is_test_file(path: str) -> bool:
    name = posixpath.basename(path)
    if not name.endswith(".py"):
        return False
    return name.startswith("test_") or name.endswith("_test.py") or "tests/" in f"/{path}" and name != "__init__.py" and name != "conftest.py"


_OTHER_LANGUAGE_TESTS = re.compile(r"(^test_|_test\.\w+$|[._]spec\.\w+$|\.test\.\w+$|Test\.\w+$|Tests\.\w+$)")


def in_test_tree(path: str) -> bool:
    """A file of the tests in any language: under a tests directory or named like a test."""
    parts = path.split("/")
    return any(p in ("tests", "test", "testing", "__tests__", "spec", "specs") for p in parts[:-1]) or bool(
        _OTHER_LANGUAGE_TESTS.search(posixpath.basename(path))
    )


# --------------------------------------------------------------------------------------------------
# assertions


def _name_of(func: ast.AST) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _constant(node: ast.AST) -> bool:
    """True when the expression is made of literals only (its value cannot depend on the code)."""
    for child in ast.walk(node):
        if isinstance(
            child,
            (
                ast.Name,
                ast.Attribute,
                ast.Call,
                ast.Subscript,
                ast.Starred,
                ast.NamedExpr,
                ast.Await,
                ast.Lambda,
                ast.GeneratorExp,
                ast.ListComp,
                ast.SetComp,
                ast.DictComp,
                ast.JoinedStr,
            ),
        ):
            return False
    return True


def _truthy_constant(node: ast.AST) -> bool | None:
    """The truth of a literal-only expression, or None when it is not one (or is too costly to know).

    Never evaluates arithmetic: `9**9**9**9` in a change must not stall the controller."""
    if not _constant(node):
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _truthy_constant(node.operand)
        return None if inner is None else not inner
    if isinstance(node, ast.BoolOp):
        values = [_truthy_constant(v) for v in node.values]
        if None in values:
            return None
        return any(values) if isinstance(node.op, ast.Or) else all(values)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        try:
            left, right = ast.literal_eval(node.left), ast.literal_eval(node.comparators[0])
            return bool(
                {ast.Eq: lambda: left == right, ast.NotEq: lambda: left != right, ast.Is: lambda: left is right, ast.IsNot: lambda: left is not right}.get(
                    type(node.ops[0]), lambda: None
                )()
            )
        except Exception:  # noqa: BLE001 - not plain literals, or not comparable
            return None
    try:
        return bool(ast.literal_eval(node))
    except Exception:  # noqa: BLE001 - arithmetic or containers of it: constant, truth not computed
        return None


def _same(a: ast.AST, b: ast.AST) -> bool:
    return ast.dump(a) == ast.dump(b)


def tautology(test: ast.AST) -> str | None:
    """Why the assertion `assert test` cannot fail, or None."""
    if _constant(test) and _truthy_constant(test) is not False:
        return "compares constants" if isinstance(test, ast.Compare) else "asserts a constant"
    if isinstance(test, ast.Tuple) and test.elts:
        return "asserts a non-empty tuple (always true)"
    if isinstance(test, ast.BoolOp):
        parts = [tautology(v) for v in test.values]
        if isinstance(test.op, ast.Or) and any(parts):
            return "an `or` with an operand that is always true"
        if isinstance(test.op, ast.And) and all(parts):
            return "every operand is always true"
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and _truthy_constant(test.operand) is False:
        return "negates a false constant"
    if isinstance(test, ast.Compare):
        operands = [test.left, *test.comparators]
        if len(test.ops) == 1 and _same(operands[0], operands[1]) and isinstance(test.ops[0], (ast.Eq, ast.Is, ast.LtE, ast.GtE)):
            return "compares a value with itself"
        if _constant(test):
            return "compares constants"
        if (
            len(test.ops) == 1
            and isinstance(test.ops[0], ast.GtE)
            and isinstance(test.left, ast.Call)
            and _name_of(test.left.func) == "len"
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == 0
        ):
            return "a length is always >= 0"
    if (
        isinstance(test, ast.Call)
        and _name_of(test.func) == "isinstance"
        and len(test.args) == 2
        and isinstance(test.args[1], ast.Name)
        and test.args[1].id == "object"
    ):
        return "everything is an instance of object"
    return None


def _call_tautology(call: ast.Call) -> str | None:
    """unittest-style assertions that cannot fail (assertTrue(True), assertEqual(x, x), ...)."""
    name = _name_of(call.func)
    args = call.args
    if name in ("assertTrue", "assert_", "failUnless") and args:
        return tautology(args[0])
    if name in ("assertFalse",) and args and _truthy_constant(args[0]) is False:
        return "asserts a false constant is false"
    if (
        name
        in (
            "assertEqual",
            "assertEquals",
            "assertIs",
            "assertLessEqual",
            "assertGreaterEqual",
            "assertCountEqual",
            "assertAlmostEqual",
            "assertDictEqual",
            "assertListEqual",
        )
        and len(args) >= 2
    ):
        if _same(args[0], args[1]):
            return "compares a value with itself"
        if _constant(args[0]) and _constant(args[1]):
            return "compares constants"
    if name in ("assertIsNotNone",) and args and _constant(args[0]):
        return "asserts a constant is not None"
    return None


def _is_assertion_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = _name_of(node.func)
    return name.startswith("assert") or name in ("raises", "warns", "fail", "deprecated_call", "fail_")


def _stops(stmt: ast.stmt) -> bool:
    """A statement after which the rest of its block never runs."""
    if isinstance(stmt, (ast.Return, ast.Raise, ast.Continue, ast.Break)):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        name = _name_of(stmt.value.func)
        return name in _EXITS | {"skip", "xfail", "skipTest"}
    if isinstance(stmt, ast.If):
        truth = _truthy_constant(stmt.test)
        body_stops = any(_stops(s) for s in stmt.body)
        else_stops = any(_stops(s) for s in stmt.orelse)
        return (truth is True and body_stops) or (truth is False and else_stops) or (body_stops and else_stops)
    return False  # not a `with`: pytest.raises() around a raise lets the test go on


def _catches_assertions(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    names = [handler.type] if not isinstance(handler.type, ast.Tuple) else list(handler.type.elts)
    return any(_name_of(n) in _BROAD_EXCEPTIONS for n in names)


@dataclass
class Assertion:
    text: str
    node: ast.AST
    neutralised: str = ""  # why it can never fail, or ""


def _assertions(fn: ast.AST) -> list[Assertion]:
    """The assertions of a test function, each marked when it can never fail."""
    found: list[Assertion] = []

    def visit_block(stmts: list[ast.stmt], why: str) -> None:
        dead = why
        for stmt in stmts:
            visit_stmt(stmt, dead)
            if not dead and _stops(stmt):
                dead = "unreachable (after a return, raise, skip or exit)"

    def visit_stmt(stmt: ast.stmt, why: str) -> None:
        if isinstance(stmt, ast.Assert):
            reason = why or (f"a tautology: {t}" if (t := tautology(stmt.test)) else "")
            found.append(Assertion(ast.unparse(stmt), stmt, reason))
            return
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return  # a nested helper's assertions only count where it is called
        if isinstance(stmt, ast.If):
            truth = _truthy_constant(stmt.test)
            visit_block(stmt.body, why or ("inside `if <false constant>`" if truth is False else ""))
            visit_block(stmt.orelse, why or ("in the `else` of an always-true `if`" if truth is True else ""))
            collect_calls(stmt.test, why)
            return
        if isinstance(stmt, ast.While):
            truth = _truthy_constant(stmt.test)
            visit_block(stmt.body, why or ("inside `while <false constant>`" if truth is False else ""))
            visit_block(stmt.orelse, why)
            return
        if isinstance(stmt, (ast.Try, ast.TryStar)):
            swallowed = any(_catches_assertions(h) for h in stmt.handlers)
            visit_block(stmt.body, why or ("inside a try whose except swallows AssertionError" if swallowed else ""))
            for handler in stmt.handlers:
                visit_block(handler.body, why)
            visit_block(stmt.orelse, why)
            visit_block(stmt.finalbody, why)
            return
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                collect_calls(item.context_expr, why)
            visit_block(stmt.body, why)
            return
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            empty = isinstance(stmt.iter, (ast.List, ast.Tuple, ast.Set)) and not stmt.iter.elts
            visit_block(stmt.body, why or ("in a loop over nothing" if empty else ""))
            visit_block(stmt.orelse, why)
            return
        if isinstance(stmt, ast.Match):
            for case in stmt.cases:
                visit_block(case.body, why)
            return
        collect_calls(stmt, why)

    def collect_calls(node: ast.AST, why: str) -> None:
        for child in ast.walk(node):
            if _is_assertion_call(child):
                assert isinstance(child, ast.Call)
                reason = why or (f"a tautology: {t}" if (t := _call_tautology(child)) else "")
                found.append(Assertion(ast.unparse(child), child, reason))

    body = getattr(fn, "body", [])
    visit_block(body, "")
    return found


# --------------------------------------------------------------------------------------------------
# a test module


@dataclass
class CaseInfo:
    asserts: int  # effective assertions: ones that can fail
    skipped: bool
    dump: str = ""
    assertions: list[Assertion] = field(default_factory=list)
    is_class: bool = False

    @property
    def effective(self) -> list[Assertion]:
        return [a for a in self.assertions if not a.neutralised]


def _is_skip_marker(node: ast.AST) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return _name_of(target) in _SKIP_NAMES


def _skip_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and _name_of(node.func) in ("skip", "xfail", "skipTest", "importorskip")


def inventory_of_tests(source: str) -> tuple[dict[str, CaseInfo], bool]:
    """{qualified test name: CaseInfo}, and whether the module as a whole is skipped."""
    tree = ast.parse(source)
    tests: dict[str, CaseInfo] = {}
    module_skipped = False
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets) and node.value is not None:
                module_skipped = module_skipped or any(_is_skip_marker(n) for n in ast.walk(node.value))
        if isinstance(node, ast.Expr) and _skip_call(node.value):
            module_skipped = True
        if isinstance(node, ast.If) and any(_skip_call(n) for n in ast.walk(node)):
            module_skipped = True
        if _stops(node) and isinstance(node, ast.Expr):
            module_skipped = True  # sys.exit()/os._exit() at import time

    def visit(body: list[ast.stmt], prefix: str, class_skipped: bool) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                skipped = class_skipped or any(_is_skip_marker(d) for d in node.decorator_list)
                tests[f"{prefix}{node.name}"] = CaseInfo(asserts=0, skipped=skipped, dump=ast.dump(node), is_class=True)
                visit(node.body, f"{prefix}{node.name}.", skipped)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                skipped = class_skipped or any(_is_skip_marker(d) for d in node.decorator_list)
                skipped = skipped or any(_skip_call(n) for n in ast.walk(node))
                found = _assertions(node)
                tests[f"{prefix}{node.name}"] = CaseInfo(
                    asserts=sum(1 for a in found if not a.neutralised), skipped=skipped, dump=ast.dump(node), assertions=found
                )

    visit(tree.body, "", False)
    return tests, module_skipped


_STRICT = (ast.Eq, ast.Is)
_LOOSER = {ast.Lt: ast.LtE, ast.Gt: ast.GtE}


def _loosened(old: ast.AST, new: ast.AST) -> str | None:
    """Why `new` is a weaker check than `old` (paired assertions at the same position), or None."""
    old_test = old.test if isinstance(old, ast.Assert) else old
    new_test = new.test if isinstance(new, ast.Assert) else new
    if isinstance(new_test, ast.BoolOp) and isinstance(new_test.op, ast.Or) and any(_same(v, old_test) for v in new_test.values):
        return "an `or` alternative was added"
    if isinstance(old_test, ast.Compare) and not isinstance(new_test, ast.Compare):
        return "the comparison was removed"
    if isinstance(old_test, ast.Compare) and isinstance(new_test, ast.Compare):
        for before, after in zip(old_test.ops, new_test.ops, strict=False):
            if type(before) is type(after):
                continue
            if isinstance(before, _STRICT) or _LOOSER.get(type(before)) is type(after):
                return f"`{_op(before)}` became `{_op(after)}`"
    if isinstance(old, ast.Call) and isinstance(new, ast.Call) and _name_of(old.func) == _name_of(new.func) == "raises":
        if old.args and new.args and _name_of(new.args[0]) in _BROAD_EXCEPTIONS and not _same(old.args[0], new.args[0]):
            return "now expects any exception"
    return None


def _op(op: ast.cmpop) -> str:
    return {
        ast.Eq: "==",
        ast.NotEq: "!=",
        ast.Lt: "<",
        ast.LtE: "<=",
        ast.Gt: ">",
        ast.GtE: ">=",
        ast.Is: "is",
        ast.IsNot: "is not",
        ast.In: "in",
        ast.NotIn: "not in",
    }.get(type(op), "?")


def compare_test_file(path: str, old: str | None, new: str | None) -> tuple[list[str], list[str]]:
    """(problems, flags) of one test file's change."""
    problems: list[str] = []
    flags: list[str] = []
    if new is None:
        if old is not None:
            problems.append(f"{path}: existing test file deleted")
        return problems, flags
    try:
        new_tests, new_module_skip = inventory_of_tests(new)
    except SyntaxError as exc:
        return [f"{path}: no longer parses ({exc.msg}, line {exc.lineno})"], flags
    old_tests: dict[str, CaseInfo] = {}
    old_module_skip = False
    if old is not None:
        try:
            old_tests, old_module_skip = inventory_of_tests(old)
        except SyntaxError:
            old_tests = {}
    if new_module_skip and not old_module_skip:
        problems.append(f"{path}: the whole module is now skipped (or exits at import)")
    for name, changed in new_tests.items():
        existing = old_tests.get(name)
        if existing is not None and existing.dump == changed.dump:
            continue
        old_neutral = {a.text for a in (existing.assertions if existing else []) if a.neutralised}
        for assertion in changed.assertions:
            if assertion.neutralised and assertion.text not in old_neutral:
                problems.append(f"{path}::{name}: `{assertion.text[:120]}` can never fail ({assertion.neutralised})")
    for name, before in old_tests.items():
        after = new_tests.get(name)
        if after is None:
            problems.append(f"{path}::{name} deleted")
            continue
        if after.skipped and not before.skipped:
            problems.append(f"{path}::{name} is now skipped or xfail")
            continue
        if after.dump == before.dump or before.is_class:
            continue
        if after.asserts < before.asserts:
            problems.append(f"{path}::{name} weakened: {before.asserts} assertion(s) before, {after.asserts} after")
            continue
        old_eff, new_eff = before.effective, after.effective
        new_texts = {a.text for a in new_eff}
        for position, assertion in enumerate(old_eff):
            if assertion.text in new_texts or position >= len(new_eff):
                continue
            why = _loosened(assertion.node, new_eff[position].node)
            if why:
                problems.append(f"{path}::{name} weakened: `{assertion.text[:100]}` -> `{new_eff[position].text[:100]}` ({why})")
            else:
                flags.append(f"{path}::{name}: assertion changed `{assertion.text[:100]}` -> `{new_eff[position].text[:100]}`")
        flags.append(f"{path}::{name}: an existing test was changed")
    if old is not None and old != new and not any(f.startswith(f"{path}::") for f in flags):
        flags.append(f"{path}: an existing test file was changed")
    return problems, flags


# --------------------------------------------------------------------------------------------------
# constants, configuration and test-run tricks


def literal_constants(source: str) -> dict[str, str]:
    """Module- and class-level names bound to a literal value: {name (Class.name): source of the value}."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found: dict[str, str] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            value: ast.expr | None
            targets: list[ast.expr]
            if isinstance(node, ast.Assign):
                value, targets = node.value, node.targets
            elif isinstance(node, ast.AnnAssign):
                value, targets = node.value, [node.target]
            else:
                continue
            if value is None or not _constant(value):
                continue
            for target in targets:
                if isinstance(target, ast.Name):
                    found[f"{prefix}{target.id}"] = ast.unparse(value)

    visit(tree.body, "")
    return found


def names_used(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[-1])
            names.add(node.name.split(".")[-1])
    return names


def changed_constants(path: str, old: str | None, new: str | None, test_names: dict[str, set[str]]) -> list[str]:
    """Flags for literal constants of `path` that changed or vanished and that test code uses."""
    if old is None:
        return []
    before = literal_constants(old)
    after = literal_constants(new) if new is not None else {}
    flags = []
    own_test = is_test_file(path)
    for name, value in before.items():
        if after.get(name) == value:
            continue
        short = name.split(".")[-1]
        users = sorted(p for p, used in test_names.items() if short in used and p != path)
        if own_test or users:
            where = "in the test itself" if own_test else f"used by {', '.join(users[:5])}"
            now = after.get(name, "removed")
            flags.append(f"{path}: constant {name} changed {value} -> {now} ({where})")
    return flags


def suspicious_code(path: str, old: str | None, new: str | None) -> list[str]:
    """Flags for calls and imports, new in `path`, that can fake a test run or rewrite files."""
    if new is None or not path.endswith(".py"):
        return []
    test_code = is_test_file(path) or posixpath.basename(path) == "conftest.py"

    def found(source: str | None) -> set[str]:
        if not source:
            return set()
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return set()
        hits: set[str] = set()
        # Names a test binds itself (locals, fixtures' results): setting their attributes is its own business.
        local_names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        local_names |= {
            a.arg
            for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for a in [*n.args.args, *n.args.kwonlyargs, *n.args.posonlyargs]
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _name_of(node.func)
                owner = node.func.value if isinstance(node.func, ast.Attribute) else None
                on_module = isinstance(owner, ast.Name) and owner.id in _PROCESS_MODULES
                if (
                    name in _SUSPICIOUS_CALLS
                    or (on_module and name in _SUSPICIOUS_MODULE_CALLS)
                    or (isinstance(node.func, ast.Name) and name in _BARE_SUSPICIOUS)
                ):
                    hits.add(f"{name}()")
                elif name == "open" and any(
                    isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax+")
                    for a in [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "mode")]
                ):
                    hits.add("open() for writing")
            elif test_code and isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                for target in targets:
                    root = target
                    while isinstance(root, (ast.Attribute, ast.Subscript)):
                        root = root.value
                    if (
                        isinstance(target, (ast.Attribute, ast.Subscript))
                        and isinstance(root, ast.Name)
                        and root.id not in ("self", "cls")
                        and root.id not in local_names
                    ):
                        hits.add(f"assigns {ast.unparse(target)[:60]} (changes imported code, not through monkeypatch)")
            elif isinstance(node, ast.Attribute) and node.attr in _SUSPICIOUS_ATTRIBUTES:
                hits.add(f".{node.attr}")
            elif isinstance(node, ast.Name) and node.id == "__builtins__":
                hits.add("__builtins__")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                hits |= {f"import {m}" for m in modules if m.split(".")[0] in _SUSPICIOUS_MODULES}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "junit" in node.value.lower():
                hits.add("mentions the junit report")
        return hits

    new_hits = sorted(found(new) - found(old))
    if not new_hits:
        return []
    return [f"{path}: new code that can fake a test run or rewrite files: {', '.join(new_hits[:8])}"]


def collection_tricks(diff: str, paths: Iterable[str]) -> list[str]:
    """Flags: test configuration files changed, and added lines that configure test collection."""
    flags = [f"{p}: test configuration or package init changed" for p in paths if posixpath.basename(p) in TEST_CONFIG_FILES]
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++") and _COLLECTION_TRICKS.search(line):
            flags.append(f"test collection changed: {line[1:].strip()[:120]}")
    return flags


def weakened_tests(path: str, old: str | None, new: str | None) -> list[str]:
    """Reasons a change to one test file weakens the tests (empty: it does not)."""
    return compare_test_file(path, old, new)[0]


@dataclass
class IntactReport:
    problems: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    test_files: int = 0
    # What the change did to the tests themselves, for judging the run: a test that failed on the base
    # must pass as it was, not because its own code or the constants it reads were edited.
    changed_tests: dict[tuple[str, str], str] = field(default_factory=dict)  # (path, Class.test) -> why
    changed_constants: dict[str, str] = field(default_factory=dict)  # constant name -> description
    test_sources: dict[str, str] = field(default_factory=dict)  # every test file after the change

    def edits_behind(self, path: str, name: str) -> str | None:
        """Why the test `name` of `path` no longer is the test it was on the base, or None."""
        if (path, name) in self.changed_tests:
            return self.changed_tests[(path, name)]
        source = self.test_sources.get(path)
        if not source or not self.changed_constants:
            return None
        used = _names_in_test(source, name)
        hit = sorted(n for n in self.changed_constants if n in used)
        return self.changed_constants[hit[0]] if hit else None


def _names_in_test(source: str, qualified: str) -> set[str]:
    """Names a test function reads, with its module's (and class's) fixtures and helpers left aside."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    body: list[ast.stmt] = tree.body
    node: ast.AST | None = None
    for part in qualified.split("."):
        node = next((n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == part), None)
        if node is None:
            return set()
        body = getattr(node, "body", [])
    return names_used(ast.unparse(node)) if node is not None else set()


def _changed_test_functions(path: str, old: str | None, new: str | None) -> dict[tuple[str, str], str]:
    if old is None or new is None:
        return {}
    try:
        before, _ = inventory_of_tests(old)
        after, _ = inventory_of_tests(new)
    except SyntaxError:
        return {}
    return {
        (path, name): f"{path}::{name} itself was edited"
        for name, info in before.items()
        if not info.is_class and name in after and after[name].dump != info.dump
    }


def judge_tests_intact(diff: str, files: dict[str, str | None], old: dict[str, str | None], base_tests: dict[str, str]) -> IntactReport:
    """Everything "tests intact" says about a change whose new contents are `files` (None: deleted)."""
    report = IntactReport()
    paths = list(files)
    report.flags += collection_tricks(diff, paths)
    report.test_sources = dict(base_tests)
    for path, content in files.items():
        if is_test_file(path):
            if content is None:
                report.test_sources.pop(path, None)
            else:
                report.test_sources[path] = content
    test_names = {p: names_used(s) for p, s in report.test_sources.items()}
    for path in paths:
        before, after = old.get(path), files[path]
        if is_test_file(path):
            report.test_files += 1
            problems, flags = compare_test_file(path, before, after)
            report.problems += problems
            report.flags += flags
            report.changed_tests.update(_changed_test_functions(path, before, after))
        elif in_test_tree(path) and not path.endswith(".py"):
            report.flags.append(f"{path}: a non-Python file of the tests {'added' if before is None else 'changed'}; a person reads it")
        if path.endswith(".py"):
            constant_flags = changed_constants(path, before, after, test_names)
            report.flags += constant_flags
            for flag in constant_flags:
                match = re.search(r"constant ([\w.]+) changed", flag)
                if match:
                    report.changed_constants[match.group(1).split(".")[-1]] = flag
            report.flags += suspicious_code(path, before, after)
    report.flags = list(dict.fromkeys(report.flags))
    return report


def test_file_of(classname: str, paths: Iterable[str]) -> tuple[str, str] | None:
    """(path, qualified class prefix) of a JUnit classname (``tests.test_x.TestPool``) among `paths`."""
    dotted = {p[:-3].replace("/", "."): p for p in paths if p.endswith(".py")}
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        path = dotted.get(module) or next((p for d, p in dotted.items() if d.endswith("." + module)), None)
        if path:
            return path, ".".join(parts[cut:])
    return None
