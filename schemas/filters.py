"""Event filters: a CEL expression per workflow that an event must satisfy to start it.

An expression sees ``input`` (the event's payload), ``additional_metadata`` (the event's
metadata, a map of strings) and ``event_key`` (the key it was published on), as Hatchet's
filters do. It is compiled once per expression text (:func:`compile_filter`, cached), so
every workflow version sharing it shares one program.

- An expression that does not parse is refused where it is declared (the SDK raises
  ``ConfigError``) and where it is registered (the dispatcher ignores the registration; the
  read model records it as a rejection), with the line and column of the error.
- At event time, anything but ``true`` is "does not match": ``false``, a value that is not
  a boolean, and an evaluation error (a missing field, a wrong type) alike; an error is
  returned as its reason for the caller to log (:func:`evaluate`). It never raises.

Pure (cel-python, ``celpy``, parses and evaluates; no IO). celpy is imported, and its
parser built, on the first expression compiled: that costs about a second, which every
process importing ``schemas`` without a filter to compile (the CLI, a worker, an engine
whose workflows have none) would otherwise pay at start.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from schemas.errors import ConfigError

if TYPE_CHECKING:
    import celpy

# The longest expression a workflow may carry (it travels in every registration).
MAX_FILTER_CHARS = 4096
_REASON_CHARS = 300


class FilterError(ConfigError):
    """An event filter that cannot be compiled; ``line`` and ``column`` are 1-based (0:
    not known)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


@attrs.frozen
class Verdict:
    """Whether an event matched a filter, and why not when evaluating it failed."""

    matched: bool
    error: str | None = None


@functools.cache
def _environment() -> celpy.Environment:
    """The one CEL environment, made on first use (see the module's docstring)."""
    import celpy

    return celpy.Environment()


@functools.lru_cache(maxsize=1024)
def compile_filter(expression: str, what: str = "event filter") -> celpy.Runner:
    """The program of ``expression``; :class:`FilterError` naming the line and column of a
    syntax error (``what``: what the expression is, for the message)."""
    from celpy.celparser import CELParseError

    if not isinstance(expression, str) or not expression.strip():
        raise FilterError(f"an {what} must be a non-empty CEL expression")
    if len(expression) > MAX_FILTER_CHARS:
        raise FilterError(
            f"an {what} may be at most {MAX_FILTER_CHARS} characters, not {len(expression)}"
        )
    try:
        env = _environment()
        return env.program(env.compile(expression))
    except CELParseError as exc:
        line, column = getattr(exc, "line", None) or 0, getattr(exc, "column", None) or 0
        where = f" at line {line} column {column}" if line else ""
        caret = str(exc).rstrip("\n")
        raise FilterError(
            f"{what} {expression!r} does not parse{where}:\n{caret}", line, column
        ) from None
    except Exception as exc:  # celpy may raise others on odd input: still a refusal
        raise FilterError(f"{what} {expression!r} does not compile: {exc}") from None


def filter_error(expression: str | None, what: str = "event filter") -> str | None:
    """Why ``expression`` cannot be used, on one line, or None (None: no filter, fine)."""
    if expression is None:
        return None
    if not isinstance(expression, str):
        return f"an {what} must be a string, not {type(expression).__name__}"
    try:
        compile_filter(expression, what)
    except FilterError as exc:
        return " ".join(str(exc).split("\n", 1)[0].split()).rstrip(":")
    return None


def evaluate(expression: str, payload: Any, metadata: Mapping[str, str], event_key: str) -> Verdict:
    """Whether the event matches ``expression`` (compiled, cached); never raises."""
    from celpy.adapter import json_to_cel
    from celpy.celtypes import BoolType

    try:
        program = compile_filter(expression)
        result = program.evaluate(
            {
                "input": json_to_cel(payload),
                "additional_metadata": json_to_cel(dict(metadata)),
                "event_key": json_to_cel(event_key),
            }
        )
    except Exception as exc:  # CELEvalError, or anything a hostile payload provokes
        return Verdict(False, _reason(exc))
    if isinstance(result, Exception):
        return Verdict(False, _reason(result))
    if isinstance(result, BoolType | bool):
        return Verdict(bool(result))
    return Verdict(False, f"the filter gave {type(result).__name__} {result!r}, not a boolean")


def _reason(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."
