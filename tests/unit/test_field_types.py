"""The codec refuses a body whose fields are not of their JSON type (``schemas.fieldtypes``):
the dispatcher once took ``"ok": "no"`` for a success the projector refused."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import DecodeError, StepResult, encode
from schemas.codec import decode_as, decode_run_message
from schemas.examples import EXAMPLES

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
