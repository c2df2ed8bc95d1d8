"""plan() is pure and total: whatever bytes arrive on whatever subject, it returns
operations or a rejection, never raises; and every statement the store sends is scoped to
the tenant."""

from __future__ import annotations

import re
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from eventstore import Record
from projector import ops, store
from projector.fold import Fold
from projector.plan import plan
from schemas.concurrency import ConcurrencyDef

TENANT = "t1"
KINDS = ["requested", "created", "rejected", "queued", "assigned", "log", "result",
         "step_finished", "finished", "retry_scheduled", "cancel_requested",
         "exploded"]  # fmt: skip
SUBJECTS = [f"{TENANT}.default.runs.r1.{k}" for k in KINDS] + [
    f"{TENANT}.default.tasks.wf.a",
    f"{TENANT}.default.workflows.wf",
    f"{TENANT}.default.events.order:created",
    f"{TENANT}.default.workers.w1",
    "other.default.events.x",
]
FIELDS = ["run_id", "workflow", "workflow_version", "input", "steps", "trigger", "step",
          "attempt", "delivery", "worker_id", "worker_name", "ok", "output", "error", "status",
          "line", "at", "created_at", "queued_at", "started_at", "finished_at", "reason",
          "name", "version", "on_events", "registered_at", "parents", "v", "on_failure",
          "handed_back", "non_retryable", "next_attempt", "due_at", "requested_at",
          "schedule_timeout_s", "kept", "kind", "replay_of", "from_step",
          "additional_metadata", "on_success", "event_filter", "concurrency",
          "concurrency_key", "expression", "max_runs", "limit_strategy"]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values).map(lambda d: {"run_id": "r1", **d})

# A valid body of every kind, to break one or two fields of.
VALID: dict[str, dict[str, Any]] = {
    kind: orjson.loads(schemas.encode(msg))
    for kind, msg in {
        "requested": schemas.RunRequested("r1", "wf", {}),
        "created": schemas.RunCreated(
            "r1", "wf", "v1", {}, [schemas.StepDef("a")], on_failure=schemas.StepDef("f")
        ),
        "created_keyed": schemas.RunCreated(
            "r1",
            "wf",
            "v1",
            {"u": 1},
            [schemas.StepDef("a")],
            concurrency=ConcurrencyDef("input.u", 2),
            concurrency_key="1",
        ),
        "rejected": schemas.RunRejected("r1", "wf", "no"),
        "queued": schemas.StepQueued("r1", "a", 1),
        "assigned": schemas.StepAssigned("r1", "a", 1, 1, "w", "n"),
        "log": schemas.StepLog("r1", "a", 1, 1, "line"),
        "result": schemas.StepResult("r1", "a", 1, 1, "w", True, 1),
        "handed_back": schemas.StepResult("r1", "a", 1, 1, "w", False, handed_back=True),
        "carried": schemas.StepResult(
            "r1", "a", 1, 1, "w", True, 1, worker_name="n", started_at="2025-01-01T00:00:00"
        ),
        "retry_scheduled": schemas.StepRetryScheduled("r1", "a", 1, 2, "2025-01-01T00:00:00"),
        "cancel_requested": schemas.RunCancelRequested("r1", "why"),
        "step_finished": schemas.StepFinished("r1", "a", 1, 1, schemas.RunStatus.SUCCEEDED),
        "finished": schemas.RunFinished(
            "r1",
            schemas.RunStatus.FAILED,
            "x",
            steps=[schemas.StepFinished("r1", "a", 1, 1, schemas.RunStatus.FAILED, error="x")],
        ),
        "task": schemas.Task("r1", "wf", "a", 1, {}, {}, 1.0),
        "workflow": schemas.WorkflowDef("wf", "v1", [schemas.StepDef("a")]),
        "heartbeat": schemas.WorkerHeartbeat(
            "w1", "w", ("wf:a",), 1, 0, schemas.WorkerStatus.ACTIVE, "2025-01-01T00:00:00"
        ),
    }.items()
}
SUBJECT_OF = {
    **{k: f"{TENANT}.default.runs.r1.{k}" for k in KINDS},
    "handed_back": f"{TENANT}.default.runs.r1.result",
    "created_keyed": f"{TENANT}.default.runs.r1.created",
    "carried": f"{TENANT}.default.runs.r1.result",
    "heartbeat": f"{TENANT}.default.workers.w1",
    "task": f"{TENANT}.default.tasks.wf.a",
    "workflow": f"{TENANT}.default.workflows.wf",
}


@st.composite
def broken_messages(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(sorted(VALID)))
    body = dict(VALID[kind])
    for field in draw(st.lists(st.sampled_from(sorted(body)), min_size=1, max_size=2)):
        body[field] = draw(json_values)
    return SUBJECT_OF[kind], body


def encode(body: Any) -> bytes:
    return orjson.dumps(body)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SUBJECTS), bodies | st.lists(json_values))
def test_any_json_body_plans_or_rejects(subject: str, body: Any) -> None:
    planned = plan(TENANT, Record(7, subject, encode(body)))
    assert all(isinstance(op, ops.Op) for op in planned)
    # One operation per message, but a run's end: its verdicts, then its own.
    assert len(planned) <= 1 or subject.endswith(".finished")


@settings(max_examples=1000, deadline=None)
@given(broken_messages())
def test_valid_messages_with_broken_fields_plan_or_reject(message: tuple[str, Any]) -> None:
    subject, body = message
    plan(TENANT, Record(7, subject, encode(body)))


def test_a_run_end_plans_its_verdicts_before_itself() -> None:
    planned = plan(TENANT, Record(7, SUBJECT_OF["finished"], encode(VALID["finished"])))
    assert [type(op) for op in planned] == [ops.StepFinished, ops.Finished]
    verdict = planned[0]
    assert isinstance(verdict, ops.StepFinished)
    assert (verdict.run_id, verdict.step, verdict.status, verdict.seq) == ("r1", "a", "FAILED", 7)


def test_every_valid_message_plans() -> None:
    for kind, body in VALID.items():
        planned = plan(TENANT, Record(7, SUBJECT_OF[kind], encode(body)))
        # Run ids are per tenant: another tenant holding the same id is no reason to reject.
        assert not any(isinstance(op, ops.Rejection) for op in planned), kind


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64) | bodies.map(encode))
def test_worker_heartbeats_plan_nothing(data: bytes) -> None:
    """Heartbeats age out of the log (message TTL): not projected, not even as rejections."""
    assert plan(TENANT, Record(7, f"{TENANT}.default.workers.w1", data)) == []
    assert plan(TENANT, Record(7, f"{TENANT}.default.workers.w1.extra", data)) == []


def folded(*kinds: str) -> Fold:
    """A fold that applied an event, then one valid message of each of ``kinds`` after its
    run's creation."""
    fold = Fold((), (), ())
    fold.apply(*plan(TENANT, Record(3, f"{TENANT}.default.events.order:created", b"{}")))
    for kind in ("created", *kinds):
        for op in plan(TENANT, Record(7 + len(kind), SUBJECT_OF[kind], encode(VALID[kind]))):
            fold.apply(op)
    return fold


# A run id used to pick rows, and the tenant next to it.
RUN_ID_MATCH = re.compile(r"\b(?:run_)?id = ANY\(%\(ids\)s")
TENANT_MATCH = re.compile(r"\btenant = %\(tenant\)s")
KEYS = {
    "runs": "(tenant, id)",
    "steps": "(tenant, run_id, name)",
    "attempts": "(tenant, run_id, step, attempt, delivery)",
}


def test_every_statement_is_scoped_to_the_tenant() -> None:
    """Run ids are unique only within a tenant: every load picks rows by tenant and run id,
    every row written carries the batch's tenant, and every upsert's conflict target is the
    tenant-scoped key."""
    for load in (store.LOAD_RUNS, store.LOAD_STEPS, store.LOAD_ATTEMPTS):
        assert len(RUN_ID_MATCH.findall(load)) == len(TENANT_MATCH.findall(load)) == 1, load
    fold = folded(*(k for k in VALID if k not in ("created", "heartbeat")))
    fold.apply(ops.Rejection(99, "x", "y", None))
    stmts = store.statements(TENANT, fold)
    assert {sql.split()[2] for sql, _ in stmts} == {
        "events", "workflows", "runs", "steps", "attempts", "step_logs", "rejections"
    }  # fmt: skip
    for sql, params in stmts:
        table = sql.split()[2]
        assert sql.startswith(f"INSERT INTO {table} (tenant, "), sql
        assert "SELECT %(tenant)s::text, " in sql and params["tenant"] == TENANT, sql
        if table in KEYS:
            assert f"ON CONFLICT {KEYS[table]} DO UPDATE" in sql, sql
            assert sql.endswith(f"WHERE {table}.last_seq < excluded.last_seq"), sql
        else:
            assert sql.endswith("ON CONFLICT DO NOTHING"), sql


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SUBJECTS), st.binary(max_size=64))
def test_any_bytes_plan_or_reject(subject: str, data: bytes) -> None:
    plan(TENANT, Record(7, subject, data))
