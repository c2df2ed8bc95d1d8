"""The JSON Schemas in ``schemas/json/``: current, valid draft 2020-12, and their examples
are what the Python codec reads back; bodies that break them fail validation."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from natchet.cli.schema_export import DEFAULT_DIR, differences
from schemas import decode_subject, parse
from schemas.codec import decode_as
from schemas.examples import EXAMPLES
from schemas.jsonschema import WIRE_KINDS, documents, message_schema
from schemas.tenancy import decode_system
from tests.wire import kind_of, problems, validator

KINDS = sorted(WIRE_KINDS)


def test_the_checked_in_files_are_what_the_types_generate() -> None:
    assert differences(DEFAULT_DIR) == [], "run: natchet schemas export"
    assert sorted(documents()) == sorted(p.name for p in DEFAULT_DIR.glob("*.json"))


@pytest.mark.parametrize("kind", KINDS)
def test_every_schema_is_valid_draft_2020_12(kind: str) -> None:
    schema = message_schema(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is True
    assert schema["examples"], f"{kind} has no example"


def subject_for(kind: str, body: dict[str, Any]) -> str:
    """The example's subject: ``x-subject`` with its placeholders filled from the body."""
    names = {
        "<tenant>": "acme",
        "<namespace>": "default",
        "<run_id>": body.get("run_id"),
        "<workflow>": body.get("workflow") or body.get("name"),
        "<step>": body.get("step"),
        "<worker_id>": body.get("worker_id"),
        "<token_id>": body.get("token_id"),
        "<operator_id>": body.get("operator_id"),
        "<name>": body.get("name"),
        "<schedule_id>": body.get("schedule_id"),
        "<cron|schedule>": body.get("kind"),
        "<key>": body.get("key"),
    }
    subject = str(message_schema(kind)["x-subject"])
    for placeholder, name in names.items():
        if placeholder in subject:
            subject = subject.replace(placeholder, str(name))
    return subject


@pytest.mark.parametrize("kind", KINDS)
def test_every_example_validates_and_decodes_to_the_message(kind: str) -> None:
    cls, _ = WIRE_KINDS[kind]
    examples = message_schema(kind)["examples"]
    assert len(examples) == len(EXAMPLES[kind])
    for body, message in zip(examples, EXAMPLES[kind], strict=True):
        subject = subject_for(kind, body)
        assert kind_of(subject) == kind
        data = orjson.dumps(body)
        assert problems(subject, data) == []
        if kind in ("refused", "timer"):  # read by their kind: no log subject
            assert decode_as(cls, cls.KIND, data) == message
        elif subject.startswith("natchet.system."):
            assert decode_system(subject, data) == message
        else:
            assert decode_subject(parse(subject), data) == message


@pytest.mark.parametrize("kind", KINDS)
def test_a_body_without_a_required_field_fails(kind: str) -> None:
    schema = message_schema(kind)
    body = schema["examples"][0]
    assert schema["required"], f"{kind} requires nothing"
    for field in schema["required"]:
        broken = {k: v for k, v in body.items() if k != field}
        assert not validator(kind).is_valid(broken), f"{kind} without {field} passed"


@pytest.mark.parametrize("kind", KINDS)
def test_a_field_of_the_wrong_type_fails(kind: str) -> None:
    schema = message_schema(kind)
    body = schema["examples"][0]
    wrong = {"string": 1, "integer": "one", "number": "1.5", "boolean": "yes", "array": {}}
    for field, prop in schema["properties"].items():
        types = prop.get("type")
        first = types[0] if isinstance(types, list) else types
        if first in wrong:
            broken = copy.deepcopy(body) | {field: wrong[first]}
            assert not validator(kind).is_valid(broken), f"{kind}.{field} took {wrong[first]!r}"
    assert not validator(kind).is_valid([body]), "a list is not a message"


def test_a_true_is_not_an_attempt() -> None:
    """JSON's true is no integer (Python's bool is an int: the schema is stricter)."""
    body = message_schema("result")["examples"][0] | {"attempt": True}
    assert not validator("result").is_valid(body)


def test_nested_types_are_checked() -> None:
    created = message_schema("created")["examples"][0]
    bad_step = copy.deepcopy(created)
    bad_step["steps"][0]["retries"] = "two"
    assert not validator("created").is_valid(bad_step)
    finished = message_schema("finished")["examples"][0]
    bad_status = copy.deepcopy(finished)
    bad_status["steps"][0]["status"] = "DONE"
    assert not validator("finished").is_valid(bad_status)


def test_unknown_fields_are_allowed_and_v1_is_documented() -> None:
    body = message_schema("result")["examples"][0] | {"added_in_a_later_version": [1, 2]}
    assert validator("result").is_valid(body)
    assert message_schema("created")["properties"]["v"]["default"] == 2


def test_events_have_no_schema() -> None:
    assert kind_of("acme.default.events.user:created") is None
    index = orjson.loads(documents()["index.json"])
    assert index["events"]["schema"] is None
    assert set(index["kinds"]) == set(KINDS)
