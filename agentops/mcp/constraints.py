"""Argument constraints in an MCP tool's grant, and the controller's check of a call against them.

A grant's scope narrows what the model may pass: per top-level argument, allowed values, path
prefixes and a regular expression. Every constraint given for an argument must hold (they narrow
together), a constrained argument must be present (else the server would pick a default nobody
granted), and nothing the server says (its description) can widen a scope: the scope is the admin's.

Prefixes compare normalized POSIX paths on whole components: "src" allows "src" and "src/a" but not
"srcx"; "src/" (trailing slash) allows only what is strictly below src. A value with a ".." component
is refused outright under a prefix: normpath is not symlink-aware, so "link/../x" may leave the prefix
on disk even when it looks inside.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

import jsonschema

from agentops.tools.registry import ScopeViolation, ToolError

MAX_PATTERN_LENGTH = 500
MAX_MATCHED_LENGTH = 10_000  # a pattern is matched against at most this many characters (no regex timeout in `re`)

_SCALAR = {"type": ["string", "number", "integer", "boolean", "null"]}

ARGUMENT_CONSTRAINTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "arguments": {
            "type": "object",
            "propertyNames": {"minLength": 1, "maxLength": 200},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "properties": {
                    "values": {"type": "array", "items": _SCALAR, "minItems": 1, "maxItems": 1000},
                    "prefixes": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 4096}, "minItems": 1, "maxItems": 1000},
                    "pattern": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN_LENGTH},
                },
            },
        }
    },
}


def _schema_messages(schema: dict[str, Any], value: Any, *, validator: jsonschema.protocols.Validator | None = None) -> list[str]:
    validator = validator or jsonschema.Draft202012Validator(schema)
    messages = []
    for error in sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path]):
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        messages.append(f"{where}: {error.message}")
    return messages


def _compile(pattern: str) -> re.Pattern[str]:
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"pattern longer than {MAX_PATTERN_LENGTH} characters")
    return re.compile(pattern)


def _declared_types(prop: Any) -> set[str] | None:
    if not isinstance(prop, dict) or "type" not in prop:
        return None  # unknown (a $ref, anyOf, or no type): do not guess
    declared = prop["type"]
    return {declared} if isinstance(declared, str) else {t for t in declared if isinstance(t, str)}


def constraint_errors(scope: dict[str, Any], input_schema: dict[str, Any]) -> list[str]:
    """Why scope is not a usable grant scope for a tool with input_schema ([] when it is)."""
    errors = _schema_messages(ARGUMENT_CONSTRAINTS_SCHEMA, scope)
    if errors:
        return errors
    try:
        jsonschema.Draft202012Validator.check_schema(input_schema)
    except jsonschema.SchemaError as exc:
        return [f"the tool's input schema is invalid: {exc.message}"]
    properties = input_schema.get("properties") if isinstance(input_schema, dict) else None
    properties = properties if isinstance(properties, dict) else {}
    root = jsonschema.Draft202012Validator(input_schema)
    for arg, rules in sorted(scope.get("arguments", {}).items()):
        if arg not in properties:
            errors.append(f"arguments/{arg}: the tool has no argument {arg!r} (it has: {', '.join(sorted(properties)) or 'none'})")
            continue
        prop = properties[arg]
        types = _declared_types(prop)
        if ("prefixes" in rules or "pattern" in rules) and types is not None and "string" not in types:
            errors.append(f"arguments/{arg}: prefixes and patterns apply to strings, and {arg!r} is {'/'.join(sorted(types))}")
        if "pattern" in rules:
            try:
                _compile(rules["pattern"])
            except (re.error, ValueError) as exc:
                errors.append(f"arguments/{arg}/pattern: does not compile: {exc}")
        for prefix in rules.get("prefixes", []):
            if "\0" in prefix or ".." in prefix.split("/"):
                errors.append(f"arguments/{arg}/prefixes: {prefix!r} may not contain NUL or '..'")
        if isinstance(prop, (dict, bool)):
            sub = root.evolve(schema=prop)  # keeps the root's $defs for $ref
            for value in rules.get("values", []):
                if not sub.is_valid(value):
                    errors.append(f"arguments/{arg}/values: {value!r} is not a valid {arg!r} for this tool")
    return errors


def _same_value(a: Any, b: Any) -> bool:
    # JSON equality: True is not 1, 1 is 1.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float)))) and a == b


def _under_prefix(value: str, prefix: str) -> bool:
    path, base = posixpath.normpath(value), posixpath.normpath(prefix)
    strictly_below = prefix.endswith("/") and base not in ("/", "//")
    if base == ".":
        return not path.startswith("/") and path != "." if strictly_below else not path.startswith("/")
    if base in ("/", "//"):
        return path.startswith("/")
    if path == base:
        return not strictly_below
    return path.startswith(base + "/")


def _check_prefixes(arg: str, value: Any, prefixes: list[str]) -> None:
    if not isinstance(value, str):
        raise ScopeViolation(f"argument {arg!r} must be a path under {prefixes}, got a {type(value).__name__}")
    if "\0" in value:
        raise ScopeViolation(f"argument {arg!r} contains a NUL character")
    if ".." in value.split("/"):
        raise ScopeViolation(f"argument {arg!r} may not contain '..' (it is limited to {prefixes})")
    if not any(_under_prefix(value, prefix) for prefix in prefixes):
        raise ScopeViolation(f"argument {arg!r} = {value[:200]!r} is outside the allowed prefixes {prefixes}")


def _check_pattern(arg: str, value: Any, pattern: str) -> None:
    if not isinstance(value, str):
        raise ScopeViolation(f"argument {arg!r} must be a string matching {pattern!r}, got a {type(value).__name__}")
    if len(value) > MAX_MATCHED_LENGTH:
        raise ScopeViolation(f"argument {arg!r} is too long to check against its pattern ({len(value)} > {MAX_MATCHED_LENGTH} characters)")
    try:
        compiled = _compile(pattern)
    except (re.error, ValueError) as exc:
        raise ScopeViolation(f"the grant's pattern for {arg!r} does not compile: {exc}") from exc
    if compiled.fullmatch(value) is None:
        raise ScopeViolation(f"argument {arg!r} = {value[:200]!r} does not match the allowed pattern {pattern!r}")


_SCOPE_VALIDATOR = jsonschema.Draft202012Validator(ARGUMENT_CONSTRAINTS_SCHEMA)
# Validators of input schemas already checked, by the schema's canonical text: checking a schema costs
# ~0.6 ms, and a run calls the same few tools again and again. Bounded: a server cannot grow it forever.
_VALIDATORS: dict[str, jsonschema.protocols.Validator] = {}
_VALIDATORS_MAX = 512


def _checked_validator(input_schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    try:
        key = json.dumps(input_schema, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ToolError("the tool's input schema is not JSON, so no call can be checked") from exc
    validator = _VALIDATORS.get(key)
    if validator is None:
        try:
            jsonschema.Draft202012Validator.check_schema(input_schema)
        except jsonschema.SchemaError as exc:
            raise ToolError(f"the tool's input schema is invalid, so no call can be checked: {exc.message}") from exc
        # Its own copy: the caller's dict may change later, the checked schema must not.
        validator = jsonschema.Draft202012Validator(json.loads(key))
        if len(_VALIDATORS) >= _VALIDATORS_MAX:
            _VALIDATORS.clear()
        _VALIDATORS[key] = validator
    return validator


def check_arguments(arguments: dict[str, Any], *, input_schema: dict[str, Any], scope: dict[str, Any]) -> None:
    """Raise ToolError (arguments invalid for the tool) or ScopeViolation (outside the grant); None when allowed."""
    if not isinstance(arguments, dict):
        raise ToolError(f"arguments must be an object, got {type(arguments).__name__}")
    validator = _checked_validator(input_schema)
    errors = _schema_messages(input_schema, arguments, validator=validator)
    if errors:
        raise ToolError("arguments do not match the tool's input schema: " + "; ".join(errors[:10]))
    scope = scope or {}
    scope_errors = _schema_messages(ARGUMENT_CONSTRAINTS_SCHEMA, scope, validator=_SCOPE_VALIDATOR)
    if scope_errors:
        # Fail closed: a scope the controller cannot read allows nothing.
        raise ScopeViolation("the grant's scope is invalid: " + "; ".join(scope_errors[:5]))
    for arg, rules in sorted(scope.get("arguments", {}).items()):
        if arg not in arguments:
            raise ScopeViolation(f"argument {arg!r} is constrained by the grant, so it must be given")
        value = arguments[arg]
        if "values" in rules and not any(_same_value(value, allowed) for allowed in rules["values"]):
            raise ScopeViolation(f"argument {arg!r} = {str(value)[:200]!r} is not one of the allowed values {rules['values']}")
        if "prefixes" in rules:
            _check_prefixes(arg, value, rules["prefixes"])
        if "pattern" in rules:
            _check_pattern(arg, value, rules["pattern"])
