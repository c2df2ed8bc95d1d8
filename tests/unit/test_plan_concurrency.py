"""A run's concurrency key and its workflow's concurrency in the read model (issue 15): a
``created`` that carries them gives the run both; a malformed one is a rejection, with a
reason that says what is wrong."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import schemas
from eventstore import Record
from projector import ops
from projector.plan import plan

TENANT = "t1"
AT = "2025-01-01T00:00:00.123456+00:00"
SUBJECT = f"{TENANT}.default.runs.r1.created"


def created(**changes: Any) -> dict[str, Any]:
    good = schemas.RunCreated("r1", "wf", "v1", {"user": "u1"}, [schemas.StepDef("a")], None, AT)
    body: dict[str, Any] = orjson.loads(schemas.encode(good))
    return {**body, **changes}


def planned(body: dict[str, Any]) -> list[ops.Op]:
    schemas.parse(f"{TENANT}.default.events.x")
    return plan(TENANT, Record(7, SUBJECT, orjson.dumps(body), None, 10**18))


CONC = {"expression": "input.user", "max_runs": 2, "limit_strategy": "CANCEL_NEWEST"}


def test_a_created_with_a_key_carries_it_and_the_concurrency() -> None:
    [op] = planned(created(concurrency=CONC, concurrency_key="u1"))
    assert isinstance(op, ops.Created)
    assert op.concurrency_key == "u1"
    assert op.concurrency is not None and orjson.loads(op.concurrency) == CONC


def test_a_created_without_concurrency_has_no_key() -> None:
    [op] = planned(created())
    assert isinstance(op, ops.Created)
    assert (op.concurrency_key, op.concurrency) == (None, None)


def test_the_default_strategy_is_stored() -> None:
    [op] = planned(created(concurrency={"expression": "input.user"}, concurrency_key="u1"))
    assert isinstance(op, ops.Created) and op.concurrency is not None
    assert orjson.loads(op.concurrency)["limit_strategy"] == "GROUP_ROUND_ROBIN"
    assert orjson.loads(op.concurrency)["max_runs"] == 1


@pytest.mark.parametrize(
    "changes, says",
    [
        ({"concurrency": CONC}, "concurrency key exactly when"),
        ({"concurrency_key": "u1"}, "concurrency key exactly when"),
        ({"concurrency": {**CONC, "max_runs": 0}, "concurrency_key": "u1"}, "max_runs"),
        ({"concurrency": {**CONC, "max_runs": True}, "concurrency_key": "u1"}, "max_runs"),
        ({"concurrency": {**CONC, "expression": "input."}, "concurrency_key": "u1"}, "concurrency"),
        ({"concurrency": {**CONC, "limit_strategy": "NOPE"}, "concurrency_key": "u1"}, ""),
        ({"concurrency": CONC, "concurrency_key": "k" * 257}, "longer than 256"),
        ({"concurrency": CONC, "concurrency_key": 5}, ""),
        ({"concurrency": "input.user", "concurrency_key": "u1"}, ""),
    ],
)
def test_a_malformed_concurrency_is_a_rejection(changes: dict[str, Any], says: str) -> None:
    [op] = planned(created(**changes))
    assert isinstance(op, ops.Rejection), op
    assert says in op.reason
