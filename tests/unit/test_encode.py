"""``schemas.encode`` writes every message exactly as ``orjson.dumps(attrs.asdict(m))`` did
(it now lets orjson walk the attrs instances itself, without building the dicts first)."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
from hypothesis import given
from hypothesis import strategies as st

from schemas import encode
from schemas.codec import decode_run_message
from schemas.messages import (
    RunCancelRequested,
    RunCreated,
    RunFinished,
    RunRejected,
    RunRequested,
    RunStatus,
    StepAssigned,
    StepDef,
    StepFinished,
    StepLog,
    StepQueued,
    StepResult,
    StepRetryScheduled,
    Task,
    Trigger,
    WorkerHeartbeat,
    WorkflowDef,
)
from schemas.tenancy import TenantCreated, TenantLogFull, TokenCreated, TokenRevoked

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
TOKEN_ID = "tok0123456789abcdef"
STEP = StepDef("a", ("p",), 1.5, 2, 2.0, None)


def messages(value: Any) -> list[object]:
    wf = WorkflowDef("wf", "v1", (STEP, StepDef("p")), ("go",), StepDef("f"), 30.0, "t")
    return [
        wf,
        RunRequested("r", "wf", value),
        RunCreated("r", "wf", "v1", value, (STEP,), Trigger.of_event("k", "7"), "t", STEP, 5.0),
        RunRejected("r", "wf", "no such workflow"),
        StepQueued("r", "a", 1),
        Task("r", "wf", "a", 1, value, {"p": value}, 60.0, step_errors={"b": "boom"}),
        StepAssigned("r", "a", 1, 2, "w1", "worker"),
        StepLog("r", "a", 1, 1, "a line"),
        StepResult("r", "a", 1, 1, "w1", ok=False, output=value, error="e", handed_back=True),
        StepResult("r", "a", 1, 2, "w1", ok=True, output=value, worker_name="w", started_at="t"),
        StepRetryScheduled("r", "a", 1, 2, "t", "e"),
        RunCancelRequested("r", None),
        StepFinished("r", "a", 1, 1, RunStatus.SUCCEEDED, value),
        RunFinished("r", RunStatus.FAILED, "e"),
        WorkerHeartbeat("w1", "worker", ("wf:a",), 4, 1, "ACTIVE", "t"),
        TenantCreated(tenant="acme"),
        TenantLogFull(tenant="acme", max_bytes=10, reason="full"),
        TokenCreated(token_id=TOKEN_ID, tenant="acme", secret_sha256="0" * 64, name="n"),
        TokenRevoked(token_id=TOKEN_ID, revoked_at="t"),
    ]


@given(json_values)
def test_every_message_encodes_as_its_asdict_did(value: Any) -> None:
    for message in messages(value):
        assert encode(message) == orjson.dumps(attrs.asdict(message, recurse=True)), message


def test_a_result_written_before_it_carried_its_assignment_still_decodes() -> None:
    """Results written before ``worker_name`` and ``started_at`` existed: no assignment."""
    old = b'{"run_id":"r","step":"a","attempt":1,"delivery":1,"worker_id":"w1","ok":true,"v":1}'
    result = decode_run_message("result", old)
    assert isinstance(result, StepResult)
    assert (result.worker_name, result.started_at) == ("", None)
    new = StepResult("r", "a", 1, 1, "w1", ok=True, worker_name="n", started_at="t")
    assert decode_run_message("result", encode(new)) == new
