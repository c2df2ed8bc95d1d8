"""Driving the pure dispatcher as the service does, and keeping its log.

Each input is decided on, appended to the log, folded, and so is each output; a tick runs
``due()`` (checked against a scan of every run, ``tests.property.scan``) and applies its
decisions in turn. Every output is checked by :class:`History` before it is folded, and the
state after every decision (its deadline heap included).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable
from typing import Any

import attrs

from dispatcher import Event, Output, State, complete, fold, step
from dispatcher.moved import moves
from dispatcher.policy import iso
from dispatcher.step import settle
from dispatcher.workers import Workers
from schemas import (
    RunCancelRequested,
    RunRequested,
    RunStatus,
    StepAssigned,
    StepResult,
    WorkflowDef,
    encode,
    parse,
)
from schemas.durable import StepWaiting, WaitCondition, WaitKind
from schemas.ratelimits import RateLimitDuration, RateLimitSet
from tests.property.history import SCOPE, History
from tests.property.scan import assert_indexed, checked_due
from tests.property.strategies import (
    STATIC_KEY,
    STATIC_LIMIT,
    Action,
    Again,
    Assign,
    Cancel,
    Outcome,
    Reject,
    Request,
    Restart,
    Result,
    Suspend,
    Trigger,
    Wait,
)
from tests.wire import validate_message

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAX_BYTES = 1024 * 1024 - 1024  # what the dispatcher may append on a default server
IN_FLIGHT = (RunStatus.QUEUED, RunStatus.RUNNING)
# Drain bound: per run, each of at most 7 steps makes at most 3 attempts, each needing at
# most a result and a tick; at most 4 runs (r0, r1 and two events, in these scripts).
DRAIN_LIMIT = 4 * 7 * 3 * 2


@attrs.frozen
class Logged:
    """One message of the tenant's stream: its sequence, subject and body."""

    seq: int
    subject: str
    message: Any


@attrs.frozen
class Decision:
    start: int  # the log index of its first output
    cause: Any  # the input it answers, or None (a tick)
    outputs: list[Output]
    now: dt.datetime


def subject_of(message: Any) -> str:
    if isinstance(message, WorkflowDef):
        return SCOPE.workflow(message.name)
    if isinstance(message, Event):
        return SCOPE.event(message.key)
    if isinstance(message, RateLimitSet):
        return SCOPE.ratelimit(message.key)
    return SCOPE.run(message.run_id, message.KIND)


def seq_at(index: int) -> int:
    """Stream sequences leave room between messages for duplicates stored later."""
    return 10 * (index + 1)


def rebuild(log: Iterable[Logged]) -> State:
    """The dispatcher's restart: fold the log (events and results fold to nothing)."""
    state = State()
    for entry in log:
        fold(state, parse(entry.subject).scope, entry.message, entry.seq)
    return state


class Sim:
    def __init__(self, wf: WorkflowDef, workers: Workers | None = None) -> None:
        self.wf = wf
        self.state = State()
        # The live workers (an outside input, like time): the service sets its one registry
        # on every state it restores; so does this.
        self.workers = Workers() if workers is None else workers
        self.state.workers = self.workers
        self.now = T0
        self.log: list[Logged] = []
        self.inputs: list[Any] = []
        self.history = History()
        # Deliveries that already reported: a worker sends one result per delivery (its dedup
        # id names the delivery); running the step again is a new delivery.
        self.reported: set[tuple[str, str, int, int]] = set()
        # When each delivery that has an ``assigned`` started: its result says the same.
        self.started: dict[tuple[str, str, int, int], str] = {}
        # Every decision: where its outputs start in the log, what input made it (None: a
        # tick), its outputs, and the time it was made.
        self.decisions: list[Decision] = []
        self.feed(wf)
        self.feed(RateLimitSet(STATIC_KEY, STATIC_LIMIT, RateLimitDuration.SECOND, at=iso(T0)))

    # -- the service's loop ---------------------------------------------------------------
    def feed(self, message: Any, *, again: bool = False) -> list[Any]:
        seq = 0 if again else seq_at(len(self.log))  # again: the state has it already
        outputs = step(self.state, SCOPE, message, self.now, MAX_BYTES, seq)
        if again:
            assert outputs == [], f"{message!r} delivered again decided again: {outputs}"
        else:
            subject = subject_of(message)
            if not isinstance(message, Event):  # an event is the user's JSON: no schema
                validate_message(subject, encode(message), " (an input)")
            self.log.append(Logged(seq_at(len(self.log)), subject, message))
            self.inputs.append(message)
            self.history.saw_input(message)
        self.record(outputs, None if again else message)
        return [o.message for o in outputs]

    def record(self, outputs: list[Output], cause: Any = None) -> None:
        """A decision, already folded, goes to the log (and the checks)."""
        self.decisions.append(Decision(len(self.log), cause, outputs, self.now))
        for out in outputs:
            validate_message(out.subject, out.body, " (a decision's output)")
            self.history.saw_output(out, self.now)
            self.log.append(Logged(seq_at(len(self.log)), out.subject, out.message))
        self.history.saw_decision(outputs)
        self.history.check_state(self.state)
        assert_indexed(self.state)

    def tick(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)
        for moved in moves(self.state, self.now):  # placed on a worker that went since
            self.record(settle(self.state, None, None, moved, MAX_BYTES, self.now))
        if self.state.holds.due(self.now):  # the service's tick: held tasks rechecked first
            self.record(settle(self.state, None, None, [], MAX_BYTES, self.now))
        for decided in checked_due(self.state, self.now):
            self.record(settle(self.state, None, None, decided, MAX_BYTES, self.now))

    def restart(self) -> None:
        rebuilt = rebuild(self.log)
        assert rebuilt == self.state, "the state rebuilt from the log differs from the live one"
        assert_indexed(rebuilt)
        self.state = rebuilt
        self.state.workers = self.workers
        # As the service starts: what the log implies (held tasks made again, gated again).
        for decided in complete(self.state, self.now):
            outputs = settle(self.state, None, None, decided, MAX_BYTES, self.now)
            if outputs:
                self.record(outputs)

    # -- the world around it --------------------------------------------------------------
    def act(self, action: Action) -> None:
        now = iso(self.now)
        match action:
            case Request(run=i):
                self.feed(RunRequested(f"r{i}", self.wf.name, {"i": i}, requested_at=now))
            case Reject(run=i):
                self.feed(RunRequested(f"x{i}", "nope", None, requested_at=now))
            case Trigger():
                self.feed(Event("go", seq_at(len(self.log)), {"n": len(self.log)}))
            case Assign(pick=pick, late=late):
                target = self.target(pick, late)
                if target is not None:
                    self.assign(*target)
            case Result():
                self.result(action)
            case Cancel(pick=pick):
                runs = sorted(self.history.created)
                if runs:
                    run_id = runs[pick % len(runs)]
                    self.feed(RunCancelRequested(run_id, reason="user", requested_at=now))
            case Wait(seconds=seconds):
                self.tick(seconds)
            case Suspend():
                self.suspend(action)
            case Again(pick=pick):
                if len(self.inputs) > 1:  # never the registration
                    self.feed(self.inputs[1 + pick % (len(self.inputs) - 1)], again=True)
            case Restart():
                self.restart()

    def target(self, pick: int, late: bool, retried: bool = False) -> tuple[str, str, int] | None:
        """The current attempt of a step in flight (``late``: of any step ever queued;
        ``retried``: preferably of a step past its first attempt)."""
        keys = self.history.queued_order
        if not late:
            keys = [k for k in keys if getattr(self.step(*k), "status", None) in IN_FLIGHT]
        # A held step's task is not offered (flow control): no worker can take it.
        keys = [k for k in keys if not getattr(self.step(*k), "held", ())]
        if retried:
            keys = [k for k in keys if self.history.queued[k].attempt > 1] or keys
        if not keys:
            return None
        run_id, step = keys[pick % len(keys)]
        return run_id, step, self.history.queued[(run_id, step)].attempt

    def step(self, run_id: str, name: str) -> Any:
        run = self.state.runs.get(run_id)
        return None if run is None else run.steps[name]

    def assign(self, run_id: str, step: str, attempt: int, *, fast: bool = False) -> int:
        """A worker takes the next delivery; it appends ``assigned`` unless ``fast`` (done
        within its grace: the result alone will carry the assignment)."""
        delivery = self.history.deliveries.get((run_id, step, attempt), 0) + 1
        if not fast:
            worker, started_at = f"w{delivery}", iso(self.now)
            self.started[(run_id, step, attempt, delivery)] = started_at
            self.feed(
                StepAssigned(run_id, step, attempt, delivery, worker, worker, started_at=started_at)
            )
        return delivery

    def suspend(self, action: Suspend) -> None:
        """A worker takes a delivery of a step in flight, and the step reaches its next
        durable wait (the index its task's wakes say)."""
        target = self.target(action.pick, False)
        step = None if target is None else self.step(*target[:2])
        if target is None or step is None or step.waiting is not None:
            return
        run_id, name, attempt = target
        conditions = []
        if action.seconds is not None:
            until = iso(self.now + dt.timedelta(seconds=action.seconds))
            conditions.append(WaitCondition(WaitKind.SLEEP, until=until))
        if action.event or action.seconds is None:
            conditions.append(WaitCondition(WaitKind.EVENT, event_key="go"))
        delivery = self.assign(run_id, name, attempt)
        index = len(step.wakes)
        waiting = StepWaiting(
            run_id, name, attempt, delivery, index, tuple(conditions), "w", "w", at=iso(self.now)
        )
        self.feed(waiting)

    def result(self, action: Result) -> None:
        target = self.target(action.pick, action.late, retried=action.stale > 0)
        if target is not None:
            run_id, step, attempt = target
            attempt = max(1, attempt - action.stale)
            self.answer(
                run_id, step, attempt, action.outcome, zombie=action.zombie, fast=action.fast
            )

    def answer(
        self,
        run_id: str,
        step: str,
        attempt: int,
        outcome: Outcome,
        *,
        zombie: bool = False,
        fast: bool = False,
    ) -> None:
        key = (run_id, step, attempt)
        delivery = self.history.deliveries.get(key)
        # A worker takes a delivery before it runs the step (appending ``assigned`` unless
        # the step is fast); a handed-back task comes back to a worker as a new delivery. A
        # fast result is of a delivery never assigned: a new one (when one is held, JetStream
        # redelivered the task, its holder presumed dead).
        if fast or delivery is None or self.history.handed_back.get(key, 0) >= delivery:
            delivery = self.assign(run_id, step, attempt, fast=fast)
        if zombie and delivery > 1:
            delivery -= 1
        if (*key, delivery) in self.reported:
            delivery = self.assign(run_id, step, attempt, fast=fast)
        self.reported.add((*key, delivery))
        started_at = self.started.get((*key, delivery), iso(self.now))
        self.feed(report(run_id, step, attempt, delivery, outcome, self.now, started_at))

    # -- termination ----------------------------------------------------------------------
    def drain(self, outcomes: list[Outcome]) -> int:
        """Answer whatever is in flight, and let time pass, until every run is over.
        Returns how many rounds that took; fails if it takes more than DRAIN_LIMIT."""
        if not self.history.created:
            self.act(Request(0))
        answers = itertools.cycle(outcomes)
        for rounds in range(DRAIN_LIMIT):
            if not self.state.runs:
                return rounds
            live = [
                (run.run_id, s.spec.name, s)
                for run in self.state.runs.values()
                for s in run.steps.values()
                if s.status in IN_FLIGHT and not s.waiting_retry and not s.held
            ]
            if live:
                run_id, name, step = live[0]
                outcome = next(answers)
                if outcome is Outcome.TIMEOUT and not step.assigned:
                    self.tick(self.state.runs[run_id].schedule_timeout_s)
                    continue
                if outcome is Outcome.TIMEOUT:
                    outcome = Outcome.ERROR
                # Every other step fast: its result alone, no ``assigned``.
                self.answer(run_id, name, step.attempt, outcome, fast=rounds % 2 == 1)
                continue
            due_at = [s.retry_due for r in self.state.runs.values() for s in r.steps.values()]
            due_at.append(self.state.holds.next_check)  # held tasks' next look
            due_at += [  # a held step no gate will release times out
                s.queued_at + dt.timedelta(seconds=r.schedule_timeout_s)
                for r in self.state.runs.values()
                for s in r.steps.values()
                if s.held and s.queued_at is not None
            ]
            pending = [d for d in due_at if d is not None]
            assert pending, f"runs stuck with nothing in flight: {self.state.runs}"
            # A retry of a failing run stays due and is never released: look further.
            later = [d for d in pending if d > self.now] or pending
            self.tick(max((min(later) - self.now).total_seconds(), 0.0))
        raise AssertionError(f"runs not finished after {DRAIN_LIMIT} rounds: {self.state.runs}")


def report(
    run_id: str,
    step: str,
    attempt: int,
    delivery: int,
    outcome: Outcome,
    now: dt.datetime,
    started_at: str,
) -> StepResult:
    """A worker's result; like every result a worker writes, it carries its assignment."""
    ok = outcome is Outcome.OK
    return StepResult(
        run_id,
        step,
        attempt,
        delivery,
        f"w{delivery}",
        ok=ok,
        output={"step": step, "attempt": attempt} if ok else None,
        error=None if ok else f"{step} attempt {attempt} {outcome.value}",
        finished_at=iso(now),
        non_retryable=outcome is Outcome.NON_RETRYABLE,
        handed_back=outcome is Outcome.HANDED_BACK,
        worker_name=f"w{delivery}",
        started_at=started_at,
    )
