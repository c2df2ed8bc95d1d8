"""The rebuild's planning fast path gives the same operations as the general path, for
every record: the usual ones it plans itself, the rest (malformed, old versions, wrong
types, other tenants) it leaves to ``plan``, which records the same rejections."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from eventstore import Record
from projector import ops
from projector.fastplan import _fast, plan_fast
from projector.plan import plan
from schemas.examples import EXAMPLES

TENANT = "t1"
AT = "2025-01-01T00:00:00.123456+00:00"
RUN = f"{TENANT}.default.runs.r1"


def body(msg: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(schemas.encode(msg))
    return decoded


SF = schemas.StepFinished
# The usual records, each of a kind the fast path plans itself: (subject, body).
USUAL: dict[str, tuple[str, dict[str, Any]]] = {
    "queued": (f"{RUN}.queued", body(schemas.StepQueued("r1", "a", 1, AT))),
    "assigned": (f"{RUN}.assigned", body(schemas.StepAssigned("r1", "a", 1, 2, "w", "n", AT))),
    "log": (f"{RUN}.log", body(schemas.StepLog("r1", "a", 1, 1, "li\x00ne", AT))),
    "result": (
        f"{RUN}.result",
        body(schemas.StepResult("r1", "a", 1, 1, "w", True, {"x": 1}, finished_at=AT)),
    ),
    "failed": (
        f"{RUN}.result",
        body(schemas.StepResult("r1", "a", 2, 1, "w", False, None, "boom", AT)),
    ),
    "handed_back": (
        f"{RUN}.result",
        body(schemas.StepResult("r1", "a", 1, 1, "w", False, finished_at=AT, handed_back=True)),
    ),
    "carried": (
        f"{RUN}.result",
        body(
            schemas.StepResult(
                "r1", "a", 1, 1, "w", True, 1, finished_at=AT, worker_name="n", started_at=AT
            )
        ),
    ),
    "step_finished": (
        f"{RUN}.step_finished",
        body(SF("r1", "a", 1, 1, schemas.RunStatus.SUCCEEDED, at=AT)),
    ),
    "step_failed": (
        f"{RUN}.step_finished",
        body(SF("r1", "a", 1, 1, schemas.RunStatus.FAILED, error="x", at=AT)),
    ),
    "finished": (
        f"{RUN}.finished",
        body(
            schemas.RunFinished(
                "r1",
                schemas.RunStatus.FAILED,
                "x",
                AT,
                steps=[
                    SF("r1", "a", 1, 1, schemas.RunStatus.FAILED, error="x", at=AT),
                    SF("r1", "b", 1, 1, schemas.RunStatus.CANCELLED, at=AT),
                ],
            )
        ),
    ),
    "finished_ok": (
        f"{RUN}.finished",
        body(
            schemas.RunFinished(
                "r1",
                schemas.RunStatus.SUCCEEDED,
                at=AT,
                steps=[SF("r1", "a", 1, 1, schemas.RunStatus.SUCCEEDED, 5, at=AT)],
            )
        ),
    ),
    "retry": (
        f"{RUN}.retry_scheduled",
        body(schemas.StepRetryScheduled("r1", "a", 1, 2, AT, "e", AT)),
    ),
    "rejected": (f"{RUN}.rejected", body(schemas.RunRejected("r1", "wf", "no", AT))),
    "created": (
        f"{RUN}.created",
        body(
            schemas.RunCreated(
                "r1",
                "wf",
                "v1",
                {"i": [1]},
                [schemas.StepDef("a"), schemas.StepDef("b", ("a",))],
                created_at=AT,
                on_failure=schemas.StepDef("f", ("a",)),
            )
        ),
    ),
    "created_event": (
        f"{RUN}.created",
        body(
            schemas.RunCreated(
                "r1",
                "wf",
                "v1",
                None,
                [schemas.StepDef("a")],
                schemas.Trigger.of_event("k", "7"),
                AT,
            )
        ),
    ),
    "created_replay": (
        f"{RUN}.created",
        body(
            schemas.RunCreated(
                "r1",
                "wf",
                "v1",
                1,
                [schemas.StepDef("a"), schemas.StepDef("b", ("a",))],
                schemas.Trigger.of_replay("r0", "b"),
                AT,
                kept={"a": {"o": 1}},
            )
        ),
    ),
    "task": (
        f"{TENANT}.default.tasks.wf.a",
        body(schemas.Task("r1", "wf", "a", 1, {}, {}, 1.0, AT)),
    ),
}
# Records the general path alone plans: events, workflows, heartbeats, other kinds, an old
# version of a message, another tenant.
OTHERS: list[tuple[str, dict[str, Any] | list[Any]]] = [
    (f"{TENANT}.default.events.order:created", {"x": 1}),
    (
        f"{TENANT}.default.workflows.wf",
        body(schemas.WorkflowDef("wf", "v1", [schemas.StepDef("a")])),
    ),
    (f"{TENANT}.default.workers.w1", {"worker_id": "w1"}),
    (f"{RUN}.cancel_requested", body(schemas.RunCancelRequested("r1", "why", AT))),
    (f"{RUN}.requested", body(schemas.RunRequested("r1", "wf", {}, AT))),
    (
        f"{RUN}.created",
        {**USUAL["created_event"][1], "additional_metadata": {"team": "billing"}},
    ),
    (
        f"{RUN}.created",
        {
            **{k: v for k, v in USUAL["created_event"][1].items() if k != "trigger"},
            "v": 1,
            "triggered_by": {"event_key": "k", "event_id": "7"},
        },
    ),
    (f"{RUN}.created", {k: v for k, v in USUAL["created"][1].items() if k != "v"}),  # v1: upcast
    # A run with a concurrency key (issue 15), and one whose concurrency is malformed.
    (
        f"{RUN}.created",
        {
            **USUAL["created"][1],
            "concurrency": {"expression": "input.i", "max_runs": 2},
            "concurrency_key": "u1",
        },
    ),
    (
        f"{RUN}.created",
        {
            **USUAL["created"][1],
            "concurrency": {"expression": "input.i", "max_runs": 0},
            "concurrency_key": "u1",
        },
    ),
    ("other.default.runs.r1.queued", USUAL["queued"][1]),
    (f"{TENANT}.default.runs.r2.queued", USUAL["queued"][1]),  # the body names r1
    (f"{TENANT}.default.tasks.wf.b", USUAL["task"][1]),  # the body says step a
    (f"{RUN}.exploded", USUAL["queued"][1]),
    (f"{RUN}.queued", []),
    # Durable steps: waits, wakes, and a task again after a wait.
    (f"{RUN}.waiting", {**body(EXAMPLES["waiting"][0]), "run_id": "r1"}),
    (f"{RUN}.woken", {**body(EXAMPLES["woken"][1]), "run_id": "r1"}),
    (f"{TENANT}.default.tasks.wf.a", {**USUAL["task"][1], "wakes": [body(EXAMPLES["woken"][0])]}),
    (f"{TENANT}.default.tasks.wf.a", {**USUAL["task"][1], "delivery_offset": 2}),
]


def rec(subject: str, data: Any, seq: int = 7) -> Record:
    return Record(
        seq, subject, data if isinstance(data, bytes) else orjson.dumps(data), None, 10**18
    )


@pytest.fixture(autouse=True)
def scope_known() -> None:
    schemas.parse(f"{TENANT}.default.events.x")  # what the fast path needs to have seen


@pytest.mark.parametrize("name", sorted(USUAL))
def test_the_usual_records_take_the_fast_path_to_the_same_operations(name: str) -> None:
    record = rec(*USUAL[name])
    planned = plan(TENANT, record)
    assert not any(isinstance(op, ops.Rejection) for op in planned)
    assert _fast(TENANT, record) == planned
    assert plan_fast(TENANT, record) == planned


@pytest.mark.parametrize("subject, data", OTHERS)
def test_the_other_records_take_the_general_path(subject: str, data: Any) -> None:
    record = rec(subject, data)
    with pytest.raises(Exception):  # noqa: B017 (any exception means: not usual)
        _fast(TENANT, record)
    assert plan_fast(TENANT, record) == plan(TENANT, record)


def test_a_rejection_is_the_general_paths() -> None:
    subject, good = USUAL["assigned"]
    record = rec(subject, {**good, "attempt": "1"})
    planned = plan_fast(TENANT, record)
    assert planned == plan(TENANT, record)
    assert [type(op) for op in planned] == [ops.Rejection]


WORDS = ["", "a", "r1", "wf", "x\x00", AT, "2025-01-01", "SUCCEEDED", "FAILED", "CANCELLED",
         "event", "replay"]  # fmt: skip
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(WORDS)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


# Fields whose default is the time of decoding: a body without one plans differently each
# time (in the general path too), so these are changed, never dropped.
STAMPED = {"at", "queued_at", "started_at", "created_at", "finished_at", "requested_at"}


@st.composite
def changed(draw: st.DrawFn) -> tuple[str, Any]:
    """A usual record with one to three fields (perhaps nested) replaced, removed or added."""
    subject, good = USUAL[draw(st.sampled_from(sorted(USUAL)))]
    data: dict[str, Any] = dict(good)
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from([*sorted(data), "v", "extra", "steps"]), label="field")
        action = draw(st.sampled_from(["set", "drop", "nested"]), label="action")
        if action == "drop" and field not in STAMPED:
            data.pop(field, None)
        elif action == "nested" and isinstance(data.get(field), list) and data[field]:
            items = list(data[field])
            i = draw(st.integers(0, len(items) - 1))
            if isinstance(items[i], dict) and items[i]:
                item = dict(items[i])
                item[draw(st.sampled_from(sorted(item)))] = draw(json_values)
                items[i] = item
            else:
                items[i] = draw(json_values)
            data[field] = items
        else:
            data[field] = draw(json_values)
    return subject, data


@settings(max_examples=3000, deadline=None)
@given(changed())
def test_changed_records_plan_the_same_both_ways(record: tuple[str, Any]) -> None:
    subject, data = record
    r = rec(subject, data)
    assert plan_fast(TENANT, r) == plan(TENANT, r)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted({s for s, _ in USUAL.values()})),
    st.binary(max_size=40) | json_values.map(orjson.dumps),
)
def test_any_bytes_plan_the_same_both_ways(subject: str, data: bytes) -> None:
    r = rec(subject, data)
    assert plan_fast(TENANT, r) == plan(TENANT, r)
