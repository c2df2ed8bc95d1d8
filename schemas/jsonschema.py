"""JSON Schemas (draft 2020-12) of every message kind, generated from the attrs wire types.

One schema per kind (:data:`WIRE_KINDS`), built from the class's fields and type hints: a
field without a default is required; nested attrs classes become ``$defs`` and ``$ref``;
a StrEnum is the enum of its values. ``additionalProperties`` stays true: decoders ignore
fields they do not know, so a newer writer never breaks an older reader. Each schema says
the subject it is sent on (``x-subject``) and carries examples encoded from real messages
(:mod:`schemas.examples`), the very bytes the code writes. ``natchet schemas export`` writes
them to ``schemas/json/``. The system stream's kinds (:mod:`schemas.tenancy`) have theirs
too. Events are raw user JSON: they have no schema. Pure: no IO.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from schemas import messages as m
from schemas import tenancy as sys_
from schemas.codec import encode
from schemas.examples import EXAMPLES
from schemas.ratelimits import RateLimitSet

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://natchet.dev/schemas/"

RUN_SUBJECT = "<tenant>.<namespace>.runs.<run_id>.{kind}"
EVENT_SUBJECT = "<tenant>.<namespace>.events.<key...>"

# Every kind with a schema: its class and the subject pattern it is sent on.
WIRE_KINDS: dict[str, tuple[type, str]] = {
    **{kind: (cls, RUN_SUBJECT.format(kind=kind)) for kind, cls in m.RUN_KINDS.items()},
    m.WorkflowDef.KIND: (m.WorkflowDef, "<tenant>.<namespace>.workflows.<workflow>"),
    m.Task.KIND: (m.Task, "<tenant>.<namespace>.tasks.<workflow>.<step>"),
    m.WorkerHeartbeat.KIND: (m.WorkerHeartbeat, "<tenant>.<namespace>.workers.<worker_id>"),
    m.WorkerRefused.KIND: (m.WorkerRefused, "<tenant>.<namespace>.workers.<worker_id>.refused"),
    # The engine's own system stream (tenants, tokens, operators): no worker writes them.
    sys_.TenantCreated.KIND: (sys_.TenantCreated, "natchet.system.tenants.<tenant>"),
    sys_.TenantLimitsChanged.KIND: (sys_.TenantLimitsChanged, "natchet.system.limits.<tenant>"),
    sys_.TenantLogFull.KIND: (sys_.TenantLogFull, "natchet.system.full.<tenant>"),
    sys_.TokenCreated.KIND: (sys_.TokenCreated, "natchet.system.tokens.<token_id>.created"),
    sys_.TokenRevoked.KIND: (sys_.TokenRevoked, "natchet.system.tokens.<token_id>.revoked"),
    sys_.OperatorCreated.KIND: (
        sys_.OperatorCreated,
        "natchet.system.operators.<operator_id>.created",
    ),
    sys_.OperatorRevoked.KIND: (
        sys_.OperatorRevoked,
        "natchet.system.operators.<operator_id>.revoked",
    ),
    # Crons and scheduled runs (docs/triggers.md): a client appends created and deleted, the
    # dispatcher the rest; the timers' fires stay in schedules-<tenant>, engine only.
    **{
        f"cron_{kind}": (cls, f"<tenant>.<namespace>.crons.<name>.{kind}")
        for kind, cls in m.CRON_KINDS.items()
    },
    **{
        f"schedule_{kind}": (cls, f"<tenant>.<namespace>.schedules.<schedule_id>.{kind}")
        for kind, cls in m.SCHEDULE_KINDS.items()
    },
    m.TimerFired.KIND: (m.TimerFired, "<tenant>.<namespace>.fires.<cron|schedule>.<name>"),
    # A static rate limit set by a client (docs/flow-control.md): the latest of a key wins.
    RateLimitSet.KIND: (RateLimitSet, "<tenant>.<namespace>.ratelimits.<key>"),
}


def stream_of(subject: str) -> str | None:
    """The stream that keeps messages on ``subject`` (None: published, not kept)."""
    if subject.startswith("natchet.system."):
        return sys_.SYSTEM_STREAM
    if subject.endswith(".refused"):
        return None
    if ".fires." in subject:
        return "schedules-<tenant>"
    return "live-<tenant>" if ".workers." in subject else "natchet-<tenant>"


# Fields holding an ISO-8601 UTC time (documented as such; the projector checks them).
_TIMES = frozenset(
    {"at", "registered_at", "requested_at", "created_at", "queued_at", "started_at"}
    | {"finished_at", "due_at", "schedule_deadline", "revoked_at", "expires_at"}
    | {"fire_at", "trigger_at"}
)
_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    Any: {},
}


def file_name(kind: str) -> str:
    return f"{kind}.json"


def schema_id(kind: str) -> str:
    return BASE_ID + file_name(kind)


class _Builder:
    """Types to schemas for one message kind, collecting the nested classes in ``defs``."""

    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}

    def type_schema(self, hint: Any) -> dict[str, Any]:
        if hint in _SCALARS:
            return dict(_SCALARS[hint])
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (types.UnionType, typing.Union):
            if type(None) not in args and all(a in _SCALARS and a is not Any for a in args):
                return {"type": [_SCALARS[a]["type"] for a in args]}  # e.g. a label: str | int
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1 or len(args) != 2:
                raise TypeError(f"only X | None unions have a schema, not {hint!r}")
            inner = self.type_schema(rest[0])
            if set(inner) == {"type"} and isinstance(inner["type"], str):
                return {"type": [inner["type"], "null"]}
            return {"anyOf": [inner, {"type": "null"}]}
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": self.type_schema(args[0])}
        if origin is dict and args[0] is str:
            values = self.type_schema(args[1])
            return {"type": "object", **({"additionalProperties": values} if values else {})}
        if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
            return {"type": "string", "enum": [member.value for member in hint]}
        if isinstance(hint, type) and attrs.has(hint):
            if hint.__name__ not in self.defs:
                self.defs[hint.__name__] = {}  # a placeholder first: no endless recursion
                self.defs[hint.__name__] = self.object_schema(hint)
            return {"$ref": f"#/$defs/{hint.__name__}"}
        raise TypeError(f"no JSON Schema for {hint!r}")

    def object_schema(self, cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in attrs.fields(cls):
            prop = self.type_schema(hints[field.name])
            if field.name == "v":
                prop = _version(field.default)
            elif field.name in _TIMES:
                prop["description"] = "an ISO-8601 UTC time"
            if field.default is attrs.NOTHING:
                required.append(field.name)
            elif not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                prop.setdefault("default", _json(field.default))
            properties[field.name] = prop
        schema: dict[str, Any] = {"title": cls.__name__, "type": "object"}
        if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):  # attrs' own doc
            schema["description"] = inspect.cleandoc(cls.__doc__)
        schema |= {"properties": properties, "required": required, "additionalProperties": True}
        return schema


def _version(current: int) -> dict[str, Any]:
    return {
        "type": "integer",
        "minimum": 1,
        "default": current,
        "description": (
            f"the message's version: {current} is the one this schema describes; a reader "
            "upcasts an older one on read (schemas/upcast.py) and an absent one is 1"
        ),
    }


def _json(value: Any) -> Any:
    """A default as JSON (a tuple as a list, an enum as its value)."""
    return orjson.loads(encode(value))


def message_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of ``kind``'s body."""
    cls, subject = WIRE_KINDS[kind]
    builder = _Builder()
    body = builder.object_schema(cls)
    description = body.get("description", cls.__name__)
    body["description"] = (
        f"{description}\n\nReaders ignore fields they do not know (forward compatibility): "
        "additionalProperties is true."
    )
    schema: dict[str, Any] = {"$schema": DRAFT, "$id": schema_id(kind), **body}
    schema["x-kind"] = kind
    schema["x-subject"] = subject
    if builder.defs:
        schema["$defs"] = dict(sorted(builder.defs.items()))
    schema["examples"] = [orjson.loads(encode(example)) for example in EXAMPLES[kind]]
    return schema


def index() -> dict[str, Any]:
    """Every kind: its schema file, subject and version; and events, which have none."""
    kinds = {
        kind: {
            "file": file_name(kind),
            "subject": subject,
            "version": attrs.fields_dict(cls)["v"].default,
            "stream": stream_of(subject),
            "class": f"schemas.messages.{cls.__name__}",
        }
        for kind, (cls, subject) in sorted(WIRE_KINDS.items())
    }
    return {
        "description": (
            "natchet's wire messages: one JSON Schema (draft 2020-12) per kind, generated "
            "from schemas/messages.py and schemas/tenancy.py by `natchet schemas export`. "
            "stream: where a message is kept (null: published, not kept); tasks are also "
            "sourced into tasks-<tenant>, the work queue workers pull from."
        ),
        "kinds": kinds,
        "events": {
            "subject": EVENT_SUBJECT,
            "stream": "natchet-<tenant>",
            "schema": None,
            "description": "an event's body is the user's own JSON value: it has no schema",
        },
    }


def render(document: Mapping[str, Any]) -> bytes:
    """A schema file's bytes: indented, keys in a stable order, a trailing newline."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def documents() -> dict[str, bytes]:
    """Every file of ``schemas/json/`` (but its README), by name, as it should read."""
    files = {file_name(kind): render(message_schema(kind)) for kind in sorted(WIRE_KINDS)}
    files["index.json"] = render(index())
    return files
