"""The JSON type each field of a wire type takes, checked when a body is decoded.

attrs does not check types, so without this a body sent by hand with ``"ok": "no"`` or
``"attempt": 1.0`` was decoded as it was: the dispatcher took the string ``"no"`` for a
success while the projector refused the message, and the two disagreed about the run. The
rules come from the classes' type hints (as the JSON Schemas do, :mod:`schemas.jsonschema`):
a string, an integer (not a boolean), a number, a boolean, null where ``X | None``, an
array of strings or integers, an object. ``Any`` fields (user data) are not checked; an
enum's values are checked by its converter. Exact type lookups, so the cost is a set lookup
per field. Pure: no IO.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs

# A field's rule: the Python types its value may have, and those of its items (an array).
Rule = tuple[frozenset[type], frozenset[type] | None]

_SCALARS: dict[Any, frozenset[type]] = {
    str: frozenset({str}),
    int: frozenset({int}),
    float: frozenset({float, int}),
    bool: frozenset({bool}),
}
_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    tuple: "an array",
    dict: "an object",
    type(None): "null",
}
_RULES: dict[type, dict[str, Rule]] = {}


def _rule(hint: Any) -> Rule | None:
    """The rule for a type hint, or None for one that is not checked (``Any``)."""
    if hint in _SCALARS:
        return _SCALARS[hint], None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and type(None) in args and len(args) == 2:
        inner = _rule(next(a for a in args if a is not type(None)))
        return None if inner is None else (inner[0] | {type(None)}, inner[1])
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return frozenset({list, tuple}), _SCALARS.get(args[0])
    if origin is dict:
        return frozenset({dict}), None
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return frozenset({str, hint}), None
    if isinstance(hint, type) and attrs.has(hint):
        return frozenset({dict, hint}), None
    return None


def rules(cls: type) -> dict[str, Rule]:
    """The checked fields of an attrs class and their rules (built once per class)."""
    found = _RULES.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = {}
        for field in attrs.fields(cls):
            rule = _rule(hints.get(field.name, Any))
            if rule is not None:
                found[field.name] = rule
        _RULES[cls] = found
    return found


def _describe(allowed: frozenset[type]) -> str:
    names = sorted({_JSON_NAMES[t] for t in allowed if t in _JSON_NAMES})
    return " or ".join(names) or "one of " + ", ".join(t.__name__ for t in allowed)


def _json_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return _JSON_NAMES.get(type(value), type(value).__name__)


def check(cls: type, data: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` naming the first field of ``data`` whose value is not of its
    field's JSON type (fields ``cls`` does not have are left to the caller)."""
    table = _RULES.get(cls)
    if table is None:  # not ``or``: a class with no checked field has an empty table
        table = rules(cls)
    for name, value in data.items():
        rule = table.get(name)
        if rule is None:
            continue
        allowed, items = rule
        if type(value) not in allowed:
            raise TypeError(
                f"{name} must be {_describe(allowed)}, not {_json_name(value)} ({value!r:.60})"
            )
        if items is not None and type(value) is not type(None):
            for item in value:
                if type(item) not in items:
                    raise TypeError(
                        f"{name} must hold {_describe(items)} only, not {_json_name(item)}"
                    )
