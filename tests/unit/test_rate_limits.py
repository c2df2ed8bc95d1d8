"""Rate limits (``dispatcher.ratelimits``, ``schemas.ratelimits``): a sliding window per
limit, global to the dispatcher; a task waits (held, no slot) until its units fit; static
limits come from ``ratelimits.<key>`` (the latest wins), dynamic ones from a CEL key; what
can never run fails at once; the SDK refuses a bad declaration with one line."""

from __future__ import annotations

import datetime as dt
import importlib
from typing import Any

import attrs
import orjson
import pytest

from dispatcher import State, due, fold
from dispatcher.decide import Output
from dispatcher.snapshot import Snapshot, dump, load
from dispatcher.tally import held as held_tally
from schemas import (
    RunFinished,
    RunRequested,
    RunStatus,
    Scope,
    StepDef,
    StepResult,
    Task,
    WorkflowDef,
)
from schemas.codec import encode
from schemas.concurrency import ConcurrencyDef
from schemas.definition import workflow_version
from schemas.errors import ConfigError
from schemas.holds import HoldKind, StepHeld
from schemas.ratelimits import RateLimitDef, RateLimitDuration, RateLimitSet
from worker import Hatchet, RateLimit
from worker.declare import spec_of

dstep = importlib.import_module("dispatcher.step")
SCOPE = Scope("acme", "default")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAX_BYTES = 1024 * 1024 - 1024
SECOND = RateLimitDuration.SECOND


def workflow(*limits: RateLimitDef, name: str = "Calls") -> WorkflowDef:
    return WorkflowDef(
        name=name,
        version="v1",
        steps=(StepDef("call", rate_limits=limits),),
        schedule_timeout_s=600.0,
    )


def at(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def registered(*wfs: WorkflowDef, limit: int | None = 3) -> State:
    state = State()
    for wf in wfs:
        fold(state, SCOPE, wf)
    if limit is not None:
        fold(state, SCOPE, RateLimitSet("openai", limit, SECOND))
    return state


def apply(state: State, message: Any, now: dt.datetime) -> list[Output]:
    return dstep.step(state, SCOPE, message, now, MAX_BYTES)


def tick(state: State, now: dt.datetime) -> list[Output]:
    return dstep.settle(state, None, None, [], MAX_BYTES, now)


def request(state: State, i: int, now: dt.datetime, wf: str = "Calls", **inp: Any) -> list[Output]:
    return apply(state, RunRequested(f"r{i}", wf, inp or {"i": i}), now)


def tasks(outputs: list[Output]) -> list[Task]:
    return [o.message for o in outputs if isinstance(o.message, Task)]


def held(outputs: list[Output]) -> list[StepHeld]:
    return [o.message for o in outputs if isinstance(o.message, StepHeld)]


STATIC = RateLimitDef(static_key="openai", units=1)


def test_a_static_limit_admits_its_units_per_window_and_holds_the_rest() -> None:
    state = registered(workflow(STATIC))
    offered = [t for i in range(5) for t in tasks(request(state, i, at(0.1 * i)))]
    assert [t.run_id for t in offered] == ["r0", "r1", "r2"]
    assert offered[0].rate_limits[0].key == "openai" and offered[0].rate_limits[0].units == 1
    why = state.runs["r3"].steps["call"].held_reason or ""
    assert why.startswith("rate limit 'openai' allows 3 units per 1s; next room at ")
    assert state.runs["r3"].steps["call"].held == (HoldKind.RATE_LIMIT,)
    assert tick(state, at(0.99)) == []  # r0's unit is still in the window
    assert [t.run_id for t in tasks(tick(state, at(1.0)))] == ["r3"]  # r0's left: one room
    assert [t.run_id for t in tasks(tick(state, at(1.1)))] == ["r4"]


def test_units_count_and_a_step_larger_than_its_limit_fails_at_once() -> None:
    state = registered(
        workflow(RateLimitDef(static_key="openai", units=2)),
        workflow(RateLimitDef(static_key="openai", units=4), name="Huge"),
    )
    assert len(tasks(request(state, 0, at(0)))) == 1
    assert held(request(state, 1, at(0)))  # 2 + 2 > 3
    end = request(state, 2, at(0), "Huge")[-1].message
    assert isinstance(end, RunFinished) and end.status is RunStatus.FAILED
    assert "rate limit 'openai' allows 3 units per 1s; step 'call' takes 4" in (end.error or "")


def test_an_undefined_static_key_waits_until_it_is_put() -> None:
    state = registered(workflow(STATIC), limit=None)
    [said] = held(request(state, 0, at(0)))
    assert said.reason.startswith("rate limit 'openai' is not defined: hatchet.rate_limits.put(")
    assert tick(state, at(100)) == []  # no recheck time: it waits for the limit
    fold(state, SCOPE, RateLimitSet("openai", 1, SECOND))  # put (folded by the service)
    assert [t.run_id for t in tasks(tick(state, at(100)))] == ["r0"]


def test_the_latest_put_wins_and_namespaces_do_not_share_limits() -> None:
    state = registered(workflow(STATIC), limit=1)
    fold(state, SCOPE, RateLimitSet("openai", 2, SECOND))
    assert len(tasks(request(state, 0, at(0)) + request(state, 1, at(0)))) == 2
    other = Scope("acme", "other")
    fold(state, other, workflow(STATIC))
    out = dstep.step(state, other, RunRequested("o1", "Calls", {}), at(0), MAX_BYTES)
    assert held(out)  # 'openai' of namespace other was never put


def test_a_held_step_holds_no_slot_and_its_schedule_timeout_runs() -> None:
    wf = WorkflowDef(
        name="Calls", version="v1", steps=(StepDef("call", rate_limits=(STATIC,)),),
        schedule_timeout_s=5.0,
    )  # fmt: skip
    state = registered(wf, limit=1)
    request(state, 0, at(0))
    request(state, 1, at(0))
    out = [
        o for d in due(state, at(5)) for o in dstep.settle(state, None, None, d, MAX_BYTES, at(5))
    ]  # fmt: skip
    ends = {o.message.run_id: o.message for o in out if isinstance(o.message, RunFinished)}
    assert "held back for 5s (schedule_timeout)" in (ends["r1"].error or "")
    assert "rate limit 'openai'" in (ends["r1"].error or "")


def test_a_dynamic_key_limits_each_value_on_its_own() -> None:
    per_user = RateLimitDef(dynamic_key="input.user", units=1, limit=2, duration=SECOND)
    state = registered(workflow(per_user), limit=None)
    got = [
        t.run_id
        for i, user in enumerate(["a", "a", "a", "b", "b", "b"])
        for t in tasks(request(state, i, at(0), user=user))
    ]
    assert got == ["r0", "r1", "r3", "r4"]
    bad = request(state, 9, at(0), other=1)  # no input.user: the key cannot be evaluated
    [end] = [o.message for o in bad if isinstance(o.message, RunFinished)]
    assert "rate limit dynamic_key 'input.user' failed" in (end.error or "")


def test_the_windows_come_back_from_the_log_and_from_a_snapshot() -> None:
    state = registered(workflow(STATIC), limit=2)
    log: list[Output] = []
    for i in range(3):
        log += request(state, i, at(0.1 * i))
    rebuilt = registered(workflow(STATIC), limit=2)
    for i in range(3):
        fold(rebuilt, SCOPE, RunRequested(f"r{i}", "Calls", {"i": i}))
    for o in log:
        fold(rebuilt, SCOPE, o.message)
    assert rebuilt.runs == state.runs and rebuilt.windows == state.windows
    loaded = load(dump(Snapshot(1, state))).state
    for s in (rebuilt, loaded):
        assert held(request(s, 7, at(0.5)))  # two units taken in the window: full
        assert tasks(tick(s, at(1.0))) != []  # r0's unit left at 1.0


def test_retries_take_units_again() -> None:
    wf = WorkflowDef(
        name="Calls", version="v1",
        steps=(StepDef("call", retries=1, rate_limits=(STATIC,)),),
    )  # fmt: skip
    state = registered(wf, limit=1)
    request(state, 0, at(0))
    failed = StepResult("r0", "call", 1, 1, "w1", ok=False, error="boom")
    assert held(apply(state, failed, at(0.5)))  # the retry waits for room
    assert [(t.attempt, t.run_id) for t in tasks(tick(state, at(1.0)))] == [(1 + 1, "r0")]


@pytest.mark.parametrize(
    ("limit", "error"),
    [
        (RateLimit(), "exactly one"),
        (RateLimit(static_key="a", dynamic_key="input.x"), "exactly one"),
        (RateLimit(static_key="a", units=0), "units must be a whole number >= 1"),
        (RateLimit(dynamic_key="input.x"), "needs a limit"),
        (RateLimit(dynamic_key="input.x +", limit=1), "does not parse"),
        (RateLimit(static_key="a.b"), "rate limit key 'a.b'"),
        (RateLimit(static_key="a", limit=3), "set with hatchet.rate_limits.put"),
        (RateLimit(static_key="a", duration="FORTNIGHT"), "not one of SECOND"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_rate_limit_is_refused_when_declared(limit: RateLimit, error: str) -> None:
    hatchet = Hatchet()
    wf = hatchet.workflow(name="Bad")
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace("+", r"\+")):
        wf.task(rate_limits=[limit])(lambda i, c: None)
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace("+", r"\+")):
        hatchet.step(rate_limits=[limit])


def test_rate_limits_are_hashed_only_when_set() -> None:
    plain = WorkflowDef("W", "", (StepDef("s"),))
    body = dict(orjson.loads(encode(plain)))
    assert body["steps"][0]["rate_limits"] == []
    without = {**body, "steps": [{k: v for k, v in body["steps"][0].items() if k != "rate_limits"}]}
    assert workflow_version(body) == workflow_version(without)
    limited = WorkflowDef("W", "", (StepDef("s", rate_limits=(STATIC,)),))
    assert workflow_version(orjson.loads(encode(limited))) != workflow_version(body)


def test_the_sdk_declares_rate_limits_v0_and_v1() -> None:
    hatchet = Hatchet()
    wf = hatchet.workflow(name="Limited")

    @wf.task(rate_limits=[RateLimit(static_key="openai", units=2)])
    def call(input: Any, ctx: Any) -> None: ...

    @wf.task(rate_limits=[RateLimit(dynamic_key="input.user_id", limit=10, duration=SECOND)])
    def per_user(input: Any, ctx: Any) -> None: ...

    steps = {s.name: s for s in wf.definition.steps}  # type: ignore[attr-defined]
    assert steps["call"].rate_limits == (RateLimitDef(static_key="openai", units=2),)
    assert steps["per_user"].rate_limits[0].limit == 10

    @hatchet.workflow(name="LimitedV0")
    class V0:
        @hatchet.step(rate_limits=[RateLimit(static_key="openai")])
        def call(self, ctx: Any) -> None: ...

    assert spec_of(V0).definition.steps[0].rate_limits[0].static_key == "openai"


def test_a_held_step_is_counted_once_for_the_metrics() -> None:
    state = registered(workflow(STATIC), limit=1)
    request(state, 0, at(0))
    out = request(state, 1, at(0))
    assert held_tally(state, out).counts == {("held", "default", "Calls"): 1}
    assert held_tally(state, tick(state, at(0.5))).counts == {}  # held already: not again


def test_workflows_sharing_a_limit_take_turns_in_the_order_they_came() -> None:
    state = registered(workflow(STATIC, name="A"), workflow(STATIC, name="B"), limit=1)
    request(state, 0, at(0), "B")  # takes the unit
    request(state, 1, at(0.1), "B")  # held first
    request(state, 2, at(0.2), "A")  # held second: A sorts first by name, not by turn
    request(state, 3, at(0.3), "B")
    got = [t.run_id for s in (1.0, 2.0, 3.0) for t in tasks(tick(state, at(s)))]
    assert got == ["r1", "r2", "r3"]


def test_a_keyed_run_held_by_a_limit_goes_before_a_run_its_key_admits_later() -> None:
    """Found while chasing a run-machine property failure: room that came back in a limit's
    window went to a run its concurrency key admitted in the same decision, ahead of an
    older run of the key admitted before and held by the limit since."""
    keyed = attrs.evolve(workflow(STATIC), concurrency=ConcurrencyDef('"k"', 2))
    state = registered(keyed, limit=1)
    assert [t.run_id for t in tasks(request(state, 0, at(0)))] == ["r0"]  # takes the unit
    assert tasks(request(state, 1, at(0.1))) == []  # admitted by the key, held by the limit
    assert tasks(request(state, 2, at(0.2))) == []  # waits for the key: two in flight
    # r0 ends after its unit has left the window (no tick came between): the key admits r2,
    # and the one unit goes to r1, first in line.
    ended = apply(state, StepResult("r0", "call", 1, 1, "w1", ok=True, output={}), at(1.5))
    assert [t.run_id for t in tasks(ended)] == ["r1"]
    assert [t.run_id for t in tasks(tick(state, at(2.5)))] == ["r2"]
