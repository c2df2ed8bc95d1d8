"""The codec refuses a body whose fields are not of their JSON type (``schemas.fieldtypes``):
the dispatcher once took ``"ok": "no"`` for a success the projector refused."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import DecodeError, StepResult, encode
from schemas.codec import decode_as, decode_run_message
from schemas.examples import EXAMPLES
from schemas.jsonschema import WIRE_KINDS, message_schema
from schemas.structure import structure
from schemas.upcast import upcast
from tests.wire import validator

RESULT: dict[str, Any] = orjson.loads(encode(EXAMPLES["result"][0]))
CREATED: dict[str, Any] = orjson.loads(encode(EXAMPLES["created"][0]))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ok": "no"}, "ok must be true or false, not a string"),
        ({"attempt": "one"}, "attempt must be an integer, not a string"),
        ({"attempt": 1.0}, "attempt must be an integer, not a number"),
        ({"attempt": True}, "attempt must be an integer, not a boolean"),
        ({"handed_back": "false"}, "handed_back must be true or false"),
        ({"error": 3}, "error must be a string or null, not an integer"),
        ({"worker_id": None}, "worker_id must be a string, not null"),
    ],
)
def test_a_result_of_the_wrong_type_is_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=f"bad result message: {reason}"):
        decode_as(StepResult, "result", orjson.dumps(RESULT | change))


def test_nested_fields_are_checked_too() -> None:
    steps = [CREATED["steps"][0] | {"retries": "2"}, *CREATED["steps"][1:]]
    with pytest.raises(DecodeError, match="retries must be an integer"):
        decode_run_message("created", orjson.dumps(CREATED | {"steps": steps}))
    parents = [CREATED["steps"][0] | {"parents": ["a", 1]}]
    with pytest.raises(DecodeError, match="parents must hold a string only"):
        decode_run_message("created", orjson.dumps(CREATED | {"steps": parents}))


def test_what_json_allows_still_decodes() -> None:
    """A whole number for a float field, null where a field is optional, unknown fields,
    and any JSON in the user's fields."""
    body = RESULT | {"output": [1, "x", None], "started_at": None, "later": {"x": 1}}
    assert decode_as(StepResult, "result", orjson.dumps(body)).output == [1, "x", None]
    steps = [CREATED["steps"][0] | {"timeout_s": 30}]
    created = decode_run_message("created", orjson.dumps(CREATED | {"steps": steps}))
    assert created.steps[0].timeout_s == 30  # type: ignore[union-attr]


WRONG = {"string": 1, "integer": "one", "number": "1.5", "boolean": "yes", "array": {}}
WRONG |= {"object": [], "null": 5}


def _wrong_value(prop: dict[str, Any]) -> Any:
    """A JSON value of another type than ``prop`` takes (None: no such simple value)."""
    if "$ref" in prop or "anyOf" in prop:
        return 5
    types = prop.get("type")
    first = types[0] if isinstance(types, list) else types
    return WRONG.get(first) if first else None


@pytest.mark.parametrize("kind", sorted(WIRE_KINDS))
def test_the_codec_refuses_what_the_schema_refuses(kind: str) -> None:
    """Field by field, a value of the wrong type fails the JSON Schema and the codec alike:
    nothing the schema refuses is decoded silently."""
    cls, _ = WIRE_KINDS[kind]
    schema = message_schema(kind)
    body = schema["examples"][0]
    for field, prop in schema["properties"].items():
        wrong = _wrong_value(prop)
        if wrong is None:  # Any: user data, every JSON value is right
            continue
        broken = body | {field: wrong}
        assert not validator(kind).is_valid(broken), f"the schema took {kind}.{field}={wrong!r}"
        with pytest.raises((TypeError, ValueError)):
            structure(cls, upcast(kind, broken))
