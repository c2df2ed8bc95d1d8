"""Crons and scheduled runs, pure: next ticks (cronsim's, in a timezone), deterministic run
ids, the missed-fire rule, and the dispatcher's decisions and fold on their records."""

from __future__ import annotations

import datetime as dt

import pytest

from dispatcher import State, step
from dispatcher.firing import Fire, complete_triggers, pending_timers, timer_ops
from dispatcher.snapshot import Snapshot, dump, load
from eventstore.cronexpr import (
    cron_run_id,
    expression_problem,
    iso,
    next_fire,
    next_fires,
    parse_instant,
    rearm_after,
    schedule_run_id,
)
from eventstore.timers import at_header
from schemas import RunCreated, RunRejected, Scope, StepDef, Task, TriggerKind, WorkflowDef
from schemas.messages import (
    CronArmed,
    CronCreated,
    CronDeleted,
    CronFired,
    CronRejected,
    ScheduleCreated,
    ScheduleDeleted,
    ScheduleFired,
    ScheduleRejected,
)

SCOPE = Scope("acme", "default")
T0 = dt.datetime(2026, 12, 6, 23, 50, 30, tzinfo=dt.UTC)
WF = WorkflowDef(name="Tick", version="v1", steps=(StepDef("only"),))
MAX = 1024 * 1024


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_next_fires_are_cronsims_in_utc_unless_a_timezone_is_given() -> None:
    assert next_fires("*/5 * * * *", None, T0, 2) == [
        dt.datetime(2026, 12, 6, 23, 55, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 7, 0, 0, tzinfo=dt.UTC),
    ]
    # 09:00 in Paris is 08:00 UTC in winter.
    assert next_fire("0 9 * * *", "Europe/Paris", T0) == dt.datetime(2026, 12, 7, 8, tzinfo=dt.UTC)
    # Six fields: seconds first.
    assert next_fire("* * * * * *", None, T0) == at(1)
    # Strictly after: a tick at ``after`` itself is not the next one.
    assert next_fire("* * * * * *", None, at(1)) == at(2)


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("0 25 * * *", "field 2 (hour) is invalid"),
        ("* * * * 8", "field 5 (day-of-week) is invalid"),
        ("70 * * * * *", "field 1 (second) is invalid"),
        ("* * *", "has 3 fields: use 5"),
        ("@hourly", "has 1 fields"),
    ],
)
def test_a_bad_expression_says_where_and_what(expression: str, why: str) -> None:
    problem = expression_problem(expression)
    assert problem is not None and why in problem and expression in problem


def test_an_unknown_timezone_is_named() -> None:
    assert "unknown timezone 'Mars/Base'" in (expression_problem("* * * * *", "Mars/Base") or "")


def test_run_ids_of_fires_are_deterministic_and_scoped() -> None:
    assert cron_run_id("acme.default", "n", "x") == cron_run_id("acme.default", "n", "x")
    assert cron_run_id("acme.default", "n", "x") != cron_run_id("acme.other", "n", "x")
    assert cron_run_id("acme.default", "n", "x") != cron_run_id("acme.default", "n", "y")
    assert schedule_run_id("a.default", "s") != schedule_run_id("b.default", "s")


def test_a_late_fire_rearms_from_now_so_missed_ticks_start_nothing() -> None:
    tick = at(1)
    late = at(90)
    assert rearm_after(tick, late) == late
    assert next_fire("* * * * * *", None, rearm_after(tick, late)) == at(91)
    assert rearm_after(tick, at(0.5)) == tick  # read early (clock skew): after the tick


def test_at_header_is_rfc3339_utc_to_the_millisecond() -> None:
    assert at_header("2026-12-06T23:50:46.300153+00:00") == "@at 2026-12-06T23:50:46.300Z"
    assert at_header("2026-12-07T00:50:46+01:00") == "@at 2026-12-06T23:50:46.000Z"


def cron_state() -> tuple[State, CronCreated]:
    state = State()
    step(state, SCOPE, WF, T0, MAX)
    created = CronCreated("c1", "every", "Tick", "* * * * * *", {"n": 1})
    out = step(state, SCOPE, created, T0, MAX)
    assert [o.message for o in out] == [CronArmed("every", "c1", iso(at(1)), at=iso(T0))]
    return state, created


def test_a_fire_starts_one_run_and_arms_the_next_tick() -> None:
    state, _ = cron_state()
    fire = Fire("cron", "every", "c1", iso(at(1)))
    out = step(state, SCOPE, fire, at(1.2), MAX)
    kinds = [type(o.message) for o in out]
    assert kinds == [RunCreated, Task, CronFired, CronArmed]
    created = out[0].message
    assert created.trigger.kind is TriggerKind.CRON and created.trigger.fire_at == iso(at(1))
    assert created.run_id == cron_run_id("acme.default", "every", iso(at(1)))
    assert out[-1].message.fire_at == iso(at(2))
    # The same fire again (redelivered): nothing.
    assert step(state, SCOPE, fire, at(1.3), MAX) == []


def test_a_fire_read_late_starts_one_run_and_the_next_tick_is_after_now() -> None:
    state, _ = cron_state()
    out = step(state, SCOPE, Fire("cron", "every", "c1", iso(at(1))), at(60.5), MAX)
    assert sum(isinstance(o.message, RunCreated) for o in out) == 1
    assert out[-1].message.fire_at == iso(at(61))


def test_a_fire_of_a_deleted_or_replaced_cron_starts_nothing() -> None:
    state, _ = cron_state()
    step(state, SCOPE, CronDeleted("every"), T0, MAX)
    assert step(state, SCOPE, Fire("cron", "every", "c1", iso(at(1))), at(1), MAX) == []
    state, _ = cron_state()
    step(state, SCOPE, CronCreated("c2", "every", "Tick", "*/2 * * * * *"), T0, MAX)
    assert step(state, SCOPE, Fire("cron", "every", "c1", iso(at(1))), at(1), MAX) == []


def test_a_fire_of_an_unregistered_workflow_is_a_recorded_rejection() -> None:
    state = State()
    step(state, SCOPE, CronCreated("c1", "every", "Gone", "* * * * * *"), T0, MAX)
    out = step(state, SCOPE, Fire("cron", "every", "c1", iso(at(1))), at(1), MAX)
    assert [type(o.message) for o in out] == [RunRejected, CronFired, CronArmed]


def test_a_bad_cron_record_is_rejected_and_never_exists() -> None:
    state = State()
    out = step(state, SCOPE, CronCreated("c1", "bad", "Tick", "0 25 * * *"), T0, MAX)
    (rejected,) = [o.message for o in out]
    assert isinstance(rejected, CronRejected) and "field 2 (hour)" in rejected.reason
    assert state.triggers.crons == {}


def test_a_schedule_fires_once_and_a_deleted_one_never() -> None:
    state = State()
    step(state, SCOPE, WF, T0, MAX)
    kept = ScheduleCreated("s1", "Tick", iso(at(3)), {"k": 1})
    gone = ScheduleCreated("s2", "Tick", iso(at(3)))
    assert step(state, SCOPE, kept, T0, MAX) == []
    step(state, SCOPE, gone, T0, MAX)
    step(state, SCOPE, ScheduleDeleted("s2"), T0, MAX)
    assert [t.name for t in pending_timers(state)] == ["s1"]
    out = step(state, SCOPE, Fire("schedule", "s1", "s1", iso(at(3))), at(3), MAX)
    assert [type(o.message) for o in out] == [RunCreated, Task, ScheduleFired]
    assert out[0].message.run_id == schedule_run_id("acme.default", "s1")
    assert step(state, SCOPE, Fire("schedule", "s1", "s1", iso(at(3))), at(3), MAX) == []
    assert step(state, SCOPE, Fire("schedule", "s2", "s2", iso(at(3))), at(3), MAX) == []
    # A created folded again (a snapshot's overlap) does not revive it.
    step(state, SCOPE, kept, at(4), MAX)
    assert state.triggers.schedules == {}


def test_a_schedule_with_a_bad_time_is_rejected() -> None:
    out = step(State(), SCOPE, ScheduleCreated("s1", "Tick", "tomorrow"), T0, MAX)
    (rejected,) = [o.message for o in out]
    assert isinstance(rejected, ScheduleRejected) and "not ISO 8601" in rejected.reason


def test_timers_follow_the_decisions() -> None:
    state = State()
    created = CronCreated("c1", "every", "Tick", "* * * * * *")
    out = step(state, SCOPE, created, T0, MAX)
    (op,) = timer_ops(state, SCOPE, created, out)
    assert (op.kind, op.name, op.fire_at) == ("cron", "every", iso(at(1)))
    deleted = CronDeleted("every")
    out = step(state, SCOPE, deleted, T0, MAX)
    (op,) = timer_ops(state, SCOPE, deleted, out)
    assert (op.kind, op.name, op.fire_at) == ("cron", "every", None)


def test_a_cron_left_unarmed_is_armed_on_recovery() -> None:
    state, _ = cron_state()
    # Cut short between fired and armed: the fired record is folded, no armed after it.
    step(state, SCOPE, CronFired("every", "c1", iso(at(1)), "r"), at(1), MAX)
    (decision,) = complete_triggers(state, at(5.5))
    assert decision[0].message.fire_at == iso(at(6))


def test_a_snapshot_keeps_crons_and_schedules() -> None:
    state, _ = cron_state()
    step(state, SCOPE, ScheduleCreated("s1", "Tick", iso(at(3))), T0, MAX)
    step(state, SCOPE, ScheduleCreated("s2", "Tick", iso(at(3))), T0, MAX)
    step(state, SCOPE, ScheduleDeleted("s2"), T0, MAX)
    loaded = load(dump(Snapshot(7, state))).state
    assert loaded.triggers == state.triggers
    assert parse_instant(loaded.triggers.crons[(SCOPE, "every")].pending or "") == at(1)


def test_a_workflow_is_named_by_its_name_its_v0_class_or_its_v1_object() -> None:
    from worker import Context, Hatchet
    from worker.triggers import workflow_name

    hatchet = Hatchet(env={})

    @hatchet.workflow(name="Renamed")
    class Local:
        @hatchet.step()
        def only(self, context: Context) -> None:
            return None

    v1 = hatchet.workflow(name="V1")
    assert workflow_name("W") == "W"
    assert workflow_name(Local) == "Renamed"
    assert workflow_name(v1) == "V1"
