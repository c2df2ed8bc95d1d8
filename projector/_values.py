"""Checking decoded values before they become SQL parameters.

``schemas`` structures messages without checking field types, so a body with a number
where a string belongs decodes fine; here every value is checked (a failure is a
:class:`schemas.DecodeError`, which the projector records as a rejection) and made
storable: Postgres text and jsonb cannot hold NUL characters, which become U+FFFD.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from schemas import DecodeError

INT4_MAX = 2**31 - 1
NUL = "\x00"
REPLACEMENT = "\ufffd"


def text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"{field} must be a string, not {type(value).__name__}")
    return value.replace(NUL, REPLACEMENT) if NUL in value else value


def opt_text(value: object, field: str) -> str | None:
    return None if value is None else text(value, field)


def texts(value: object, field: str) -> list[str]:
    if not isinstance(value, list | tuple):
        raise DecodeError(f"{field} must be a list of strings")
    return [text(v, field) for v in value]


def count(value: object, field: str) -> int:
    """An attempt or delivery number: a positive int that fits Postgres ``integer``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT4_MAX:
        raise DecodeError(f"{field} must be an integer from 0 to {INT4_MAX}, not {value!r}")
    return value


def flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise DecodeError(f"{field} must be true or false, not {value!r}")
    return value


def timestamp(value: object, field: str) -> dt.datetime:
    """An ISO-8601 time; one without a zone is UTC (the writers always write UTC)."""
    if not isinstance(value, str):
        raise DecodeError(f"{field} must be an ISO-8601 string, not {type(value).__name__}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise DecodeError(f"{field} is not an ISO-8601 time: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT)
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strip_nul(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise DecodeError(f"value cannot be stored as JSON: {exc}") from None
    if b"\\u0000" in data:  # jsonb refuses NUL characters
        data = orjson.dumps(_strip_nul(value))
    return data


def mapping(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"{field} must be an object, not {type(value).__name__}")
    return value


def json_text(value: Any) -> str:
    """``value`` as JSON text for a jsonb column (JSON ``null`` for ``None``), checked now."""
    return dumps(value).decode()


def text_array(values: list[str]) -> str:
    """``values`` (checked texts) as a Postgres ``text[]`` literal: every element quoted, so
    none reads as ``NULL`` and commas, braces and spaces stay in it."""
    quoted = (x.replace("\\", "\\\\").replace('"', '\\"') for x in values)
    return "{" + ",".join(f'"{x}"' for x in quoted) + "}"
