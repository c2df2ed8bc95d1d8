"""orjson codec for natchet messages, with version upcasting.

Bodies are plain JSON objects, so any language can read and write them.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import orjson

from schemas.errors import NatchetError
from schemas.messages import (
    CRON_KINDS,
    RUN_KINDS,
    SCHEDULE_KINDS,
    RunMessage,
    Task,
    WorkerHeartbeat,
    WorkflowDef,
)
from schemas.ratelimits import RateLimitSet
from schemas.structure import field_names, structure
from schemas.subjects import DIRECT, ParsedSubject
from schemas.upcast import upcast

T = TypeVar("T")


class DecodeError(NatchetError, ValueError):
    """A message body that is not valid JSON, or not the shape its subject promises."""


def encode(message: Any) -> bytes:
    """A message as its JSON object: the same bytes as ``orjson.dumps(attrs.asdict(m))``,
    without building the dicts first (asdict also copied every user payload inside)."""
    return orjson.dumps(message, default=_fields)


def _fields(value: Any) -> dict[str, Any]:
    """orjson's hook for what it cannot encode itself: attrs instances, field by field."""
    cls = type(value)
    if not attrs.has(cls):
        raise TypeError(f"cannot encode {cls.__name__}")
    return {name: getattr(value, name) for name in field_names(cls)}


def encode_json(value: Any) -> bytes:
    """Encode user data; raises ``TypeError`` for what JSON cannot carry."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"not JSON-serializable: {exc}") from None


def decode_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"body is not valid JSON: {exc}") from None


def decode_as(cls: type[T], kind: str, data: bytes) -> T:
    body = decode_json(data)
    if not isinstance(body, dict):
        raise DecodeError(f"{kind} body must be a JSON object")
    try:
        return structure(cls, upcast(kind, body))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise DecodeError(f"bad {kind} message: {exc}") from None


def decode_run_message(kind: str, data: bytes) -> RunMessage:
    cls = RUN_KINDS.get(kind)
    if cls is None:
        raise DecodeError(f"unknown run message kind {kind!r}")
    return decode_as(cls, kind, data)


def _decode_kind(kinds: dict[str, type[T]], area: str, kind: str, data: bytes) -> T:
    cls = kinds.get(kind)
    if cls is None:
        raise DecodeError(f"unknown {area} message kind {kind!r}")
    return decode_as(cls, f"{area} {kind}", data)


def decode_subject(parsed: ParsedSubject, data: bytes) -> Any:
    """Decode a natchet message by its subject. Events come back as their raw JSON value.

    The subject is the truth: a body that names another run, workflow, step or worker than
    its subject is refused (``DecodeError``), so nobody can steer a message at a run by
    what it writes in the body."""
    message: Any
    if parsed.area == "runs":
        message = decode_run_message(parsed.run_kind, data)
        _agree(parsed, "run id", message.run_id, parsed.run_id)
    elif parsed.area == "workflows":
        message = decode_as(WorkflowDef, WorkflowDef.KIND, data)
        _agree(parsed, "workflow", message.name, parsed.rest[0])
    elif parsed.area == "tasks":
        message = decode_as(Task, Task.KIND, data)
        rest = parsed.rest
        if rest[0] == DIRECT:  # placed on one worker: ~direct.<worker_id>.<workflow>.<step>
            if len(rest) != 4:
                raise DecodeError(f"a directed task's subject needs 4 tokens after tasks: {rest}")
            _agree(parsed, "worker id", message.worker_id, rest[1])
            rest = rest[2:]
        else:
            _agree(parsed, "worker id", message.worker_id, None)
        _agree(parsed, "task", f"{message.workflow}.{message.step}", ".".join(rest))
    elif parsed.area == "crons":
        message = _decode_kind(CRON_KINDS, "cron", parsed.kind, data)
        _agree(parsed, "cron name", message.name, parsed.name)
    elif parsed.area == "schedules":
        message = _decode_kind(SCHEDULE_KINDS, "schedule", parsed.kind, data)
        _agree(parsed, "schedule id", message.schedule_id, parsed.name)
    elif parsed.area == "ratelimits":
        message = decode_as(RateLimitSet, RateLimitSet.KIND, data)
        _agree(parsed, "rate limit key", message.key, parsed.rest[0])
    elif parsed.area == "workers":
        message = decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, data)
        _agree(parsed, "worker id", message.worker_id, parsed.rest[0])
    else:
        message = decode_json(data)
    return message


def _agree(parsed: ParsedSubject, what: str, body: object, subject: str | None) -> None:
    if body != subject:
        raise DecodeError(
            f"the body's {what} {body!r} differs from the subject's {subject!r} "
            f"({parsed.scope.prefix}.{parsed.area}.{'.'.join(parsed.rest)})"
        )
