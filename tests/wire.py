"""Checking messages against the published JSON Schemas (``schemas/json/``): pick the
schema a subject's body must follow, and validate the body against it."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

import schemas
from schemas import parse

SCHEMA_DIR = Path(schemas.__file__).parent / "json"


@functools.cache
def validator(kind: str) -> Draft202012Validator:
    """The checked-in schema of ``kind`` (what other languages read, not the generator's)."""
    schema = orjson.loads((SCHEMA_DIR / f"{kind}.json").read_bytes())
    return Draft202012Validator(schema)


SYSTEM = {"tenants": "tenant_created", "limits": "tenant_limits_changed"}
SYSTEM |= {"full": "tenant_log_full", "tokens": "token", "operators": "operator"}


def kind_of(subject: str) -> str | None:
    """The message kind a subject carries; None for an event (raw user JSON: no schema)."""
    if subject.startswith("natchet.system."):
        parts = subject.split(".")
        kind = SYSTEM[parts[2]]
        return f"{kind}_{parts[4]}" if kind in ("token", "operator") else kind
    if subject.split(".")[2:3] == ["fires"]:
        return "timer"  # a timer's fire, in schedules-<tenant> (not a log subject)
    parsed = parse(subject)
    if parsed.area == "runs":
        return parsed.run_kind
    if parsed.area == "workers":
        return "refused" if parsed.rest[1:] == ("refused",) else "heartbeat"
    if parsed.area in ("crons", "schedules"):
        return f"{parsed.area[:-1]}_{parsed.rest[-1]}"
    return {"workflows": "workflow", "tasks": "task", "ratelimits": "ratelimit"}.get(parsed.area)


def problems(subject: str, body: bytes) -> list[str]:
    """What is wrong with ``body`` as a message on ``subject``: [] when it is valid."""
    kind = kind_of(subject)
    return [] if kind is None else list(_problems(kind, body))


@functools.lru_cache(maxsize=65536)
def _problems(kind: str, body: bytes) -> tuple[str, ...]:
    """Remembered: the property suites send the same bodies again and again."""
    try:
        value: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return (f"(body): not JSON: {exc}",)
    return tuple(
        f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
        for e in validator(kind).iter_errors(value)
    )


def validate_message(subject: str, body: bytes, where: str = "") -> None:
    """Fail (``AssertionError``) when ``body`` does not follow its subject's schema."""
    found = problems(subject, body)
    assert not found, f"{subject}{where} does not follow its schema: {'; '.join(found)}"
