"""What the dispatcher has said so far, and the invariants every new output must keep.

:class:`History` sees the inputs and each output in log order, checks the output against
everything before it (a dedup id never reused, a step queued only once its parents
succeeded, one verdict per step, one end per run, ...), then records it.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from dispatcher import Output, State
from dispatcher.policy import backoff_s, parse_time
from schemas import (
    RunCancelRequested,
    RunCreated,
    RunFinished,
    RunRejected,
    RunStatus,
    Scope,
    StepAssigned,
    StepDef,
    StepFinished,
    StepResult,
    StepRetryScheduled,
    Task,
    parse,
)
from schemas.concurrency import LimitStrategy
from schemas.durable import StepWaiting, StepWoken, WaitKind
from schemas.holds import StepHeld
from tests.property.strategies import STATIC_KEY, STATIC_LIMIT

SCOPE = Scope("acme", "default")
TIMED_OUT = "(schedule_timeout)"
Key = tuple[str, str]  # (run, step)
# Known engine bug (see test_known_bugs.py): ``due()`` queues a backoff retry that was
# scheduled before the run started failing. Tolerated here so the properties keep looking
# for other bugs; set to False once the dispatcher is fixed.
TOLERATE_RETRY_OF_FAILING_RUN = False


class History:
    def __init__(self) -> None:
        self.msg_ids: set[str] = set()
        self.created: dict[str, RunCreated] = {}
        self.rejected: set[str] = set()
        self.finished: dict[str, RunFinished] = {}
        self.queued: dict[Key, Task] = {}  # the latest attempt queued (its task)
        self.queued_order: list[Key] = []  # every step ever queued, first queued first
        self.verdicts: dict[Key, StepFinished] = {}
        # The latest delivery a worker took: by its ``assigned``, or by its result (which
        # carries the assignment: a fast step's worker appends no ``assigned``).
        self.deliveries: dict[tuple[str, str, int], int] = {}
        self.handed_back: dict[tuple[str, str, int], int] = {}  # latest delivery handed back
        # (run, step, attempt) -> the outcomes reported: (ok, non_retryable)
        self.reported: defaultdict[tuple[str, str, int], set[tuple[bool, bool]]] = defaultdict(set)
        self.cancel_requested: set[str] = set()
        self.retries_scheduled: set[tuple[str, str, int]] = set()  # (run, step, next attempt)
        # (run, step, attempt) -> the durable waits its workers appended (the first of each
        # index), and the wakes the dispatcher answered them with.
        self.waits: dict[tuple[str, str, int], tuple[StepWaiting, ...]] = {}
        # Concurrency keys: the runs of each key admitted (a first task offered) and not
        # over, and those created and waiting, oldest first.
        self.admitted: dict[str, dict[str, None]] = {}
        self.held: dict[str, dict[str, None]] = {}
        self.woken: dict[tuple[str, str, int], tuple[StepWoken, ...]] = {}
        # Flow control: each step's latest attempt kept back (its ``held``), and when.
        self.kept_back: dict[tuple[str, str], StepHeld] = {}
        # Rate limits: the units each limit's offered tasks took, and when, in order.
        self.taken: dict[str, list[tuple[dt.datetime, int]]] = {}

    # -- inputs ---------------------------------------------------------------------------
    def saw_input(self, message: Any) -> None:
        if isinstance(message, StepAssigned | StepResult):
            key = (message.run_id, message.step, message.attempt)
            self.deliveries[key] = max(self.deliveries.get(key, 0), message.delivery)
        match message:
            case StepResult(handed_back=False):
                key = (message.run_id, message.step, message.attempt)
                self.reported[key].add((message.ok, message.non_retryable))
            case StepResult(handed_back=True):
                key = (message.run_id, message.step, message.attempt)
                self.handed_back[key] = max(self.handed_back.get(key, 0), message.delivery)
            case RunCancelRequested():
                self.cancel_requested.add(message.run_id)
            case StepWaiting():
                key = (message.run_id, message.step, message.attempt)
                if message.index == len(self.waits.get(key, ())):
                    self.waits[key] = (*self.waits.get(key, ()), message)

    # -- outputs --------------------------------------------------------------------------
    def spec(self, run_id: str, step: str) -> tuple[StepDef, bool]:
        created = self.created[run_id]
        if created.on_failure is not None and created.on_failure.name == step:
            return created.on_failure, True
        return next(s for s in created.steps if s.name == step), False

    def failing(self, run_id: str) -> bool:
        """A step of the run's DAG has failed for good."""
        return any(
            r == run_id and v.status is RunStatus.FAILED and not self.spec(r, s)[1]
            for (r, s), v in self.verdicts.items()
        )

    def saw_output(self, out: Output, now: dt.datetime) -> None:
        m = out.message
        assert out.msg_id not in self.msg_ids, f"dedup id {out.msg_id!r} reused by {m!r}"
        assert m.run_id not in self.finished, f"{m!r} after the run finished"
        parsed = parse(out.subject)
        assert parsed.scope == SCOPE
        if isinstance(m, Task):  # the task is its step queued
            self._task(out, m)
            self._rate_limits(m)
            self._queued(m, now)
        else:
            assert (parsed.area, parsed.run_id, parsed.run_kind) == ("runs", m.run_id, m.KIND)
        match m:
            case RunCreated():
                assert m.run_id not in self.created and m.run_id not in self.rejected
                self.created[m.run_id] = m
                if m.concurrency is not None:
                    assert m.concurrency_key is not None, f"{m!r} without its key"
                    self.held.setdefault(m.concurrency_key, {})[m.run_id] = None
            case RunRejected():
                assert m.run_id not in self.created and m.run_id not in self.rejected
                self.rejected.add(m.run_id)
            case StepRetryScheduled():
                self._retry(m, now)
            case StepWoken():
                key = (m.run_id, m.step, m.attempt)
                waited = self.waits.get(key, ())
                assert m.index == len(self.woken.get(key, ())) < len(waited), f"{m!r} unasked"
                cond = waited[m.index].conditions[m.condition]
                assert cond.kind is m.kind, f"{m!r} woken by a condition of another kind"
                if m.kind is WaitKind.SLEEP:
                    assert cond.until is not None and parse_time(cond.until) <= now
                self.woken[key] = (*self.woken.get(key, ()), m)
            case StepHeld():
                key = (m.run_id, m.step)
                assert key not in self.verdicts, f"{m!r} after the step's verdict"
                prev = self.queued.get(key)
                assert prev is None or prev.attempt <= m.attempt, f"{m!r} after {prev!r}"
                first = self.kept_back.get(key)
                if first is None or (first.attempt, first.wakes, first.moves) != (
                    m.attempt, m.wakes, m.moves,
                ):  # fmt: skip
                    self.kept_back[key] = m  # the attempt's (or move's) first hold: its wait starts
            case StepFinished():
                self._verdict(m, now)
            case RunFinished():
                self._left_its_key(m)
                for verdict in m.steps:  # the verdicts decided with the end, in order
                    assert verdict.run_id == m.run_id, f"{verdict!r} inside {m!r}"
                    self._verdict(verdict, now)
                self._run_finished(m)
        self.msg_ids.add(out.msg_id)

    def saw_decision(self, outputs: list[Output]) -> None:
        messages = [o.message for o in outputs]
        for m in messages:
            # A step is cancelled only by the run's end, inside its message.
            assert not (isinstance(m, StepFinished) and m.status is RunStatus.CANCELLED), (
                f"{m!r} on its own: the run goes on"
            )

    def _task(self, out: Output, task: Task) -> None:
        workflow = self.created[task.run_id].workflow
        if task.worker_id is None:
            assert out.subject == SCOPE.task(workflow, task.step)
        else:  # placed on one worker (issue 15)
            assert out.subject == SCOPE.directed_task(task.worker_id, workflow, task.step)
        spec, on_failure = self.spec(task.run_id, task.step)
        parents = {p: self.verdicts[(task.run_id, p)].output for p in spec.parents}
        assert task.parent_outputs == ({} if on_failure else parents)
        if on_failure:
            errors = {
                s: v.error
                for (r, s), v in self.verdicts.items()
                if r == task.run_id and v.status is RunStatus.FAILED
            }
            assert task.step_errors == errors

    def _rate_limits(self, m: Task) -> None:
        """A task takes units of every limit its step uses, and no limit ever has more than
        its units taken in any window (checked at each offer: a window's sum is largest
        at one)."""
        spec, _on_failure = self.spec(m.run_id, m.step)
        units: dict[str, int] = {}  # what the step takes of each key (one key may repeat)
        limits: dict[str, int] = {}
        for d in spec.rate_limits:
            key = d.static_key or next(u.key for u in m.rate_limits if u.key != STATIC_KEY)
            units[key] = units.get(key, 0) + d.units
            most = STATIC_LIMIT if d.static_key is not None else d.limit
            assert most is not None
            limits.setdefault(key, most)
        assert {u.key: u.units for u in m.rate_limits} == units, f"{m!r} for {spec!r}"
        for use in m.rate_limits:
            most = limits[use.key]
            when = parse_time(use.at)
            taken = self.taken.setdefault(use.key, [])
            assert not taken or taken[-1][0] <= when, f"{use!r} before {taken[-1]}"
            taken.append((when, use.units))
            since = when - dt.timedelta(seconds=use.window_s)
            used = sum(n for t, n in taken if t > since)
            assert used <= most, f"limit {use.key!r}: {used} units within {use.window_s}s"

    def _admit(self, m: Task, now: dt.datetime) -> None:
        """A keyed run's first task admits it: oldest first within its key (but for older
        runs held back until their schedule timeout, which fails them in this pass), and
        never more than ``max_runs`` of a key in flight."""
        created = self.created[m.run_id]
        key, spec = created.concurrency_key, created.concurrency
        if spec is None or key is None or m.run_id not in self.held.get(key, {}):
            return
        held = self.held[key]
        if spec.limit_strategy is not LimitStrategy.CANCEL_IN_PROGRESS:
            first = next(r for r in held if r == m.run_id or not self._timing_out(r, now))
            assert first == m.run_id, f"{m.run_id} admitted before {list(held)}"
        del held[m.run_id]
        admitted = self.admitted.setdefault(key, {})
        admitted[m.run_id] = None
        assert len(admitted) <= spec.max_runs, f"key {key!r}: {list(admitted)} in flight"

    def _left_its_key(self, m: RunFinished) -> None:
        """A keyed run over; a strategy's cancellation names exactly the runs it should."""
        created = self.created.get(m.run_id)
        key = None if created is None else created.concurrency_key
        if created is None or created.concurrency is None or key is None:
            return
        was_admitted = m.run_id in self.admitted.get(key, {})
        strategy = created.concurrency.limit_strategy
        if _by_step_key(created, m):
            pass  # a step's key cancelled it, not the run's
        elif "(CANCEL_NEWEST)" in (m.error or ""):
            assert strategy is LimitStrategy.CANCEL_NEWEST and not was_admitted
        elif "took its place" in (m.error or ""):
            assert strategy is LimitStrategy.CANCEL_IN_PROGRESS
            if was_admitted:  # the oldest in flight goes first
                assert next(iter(self.admitted[key])) == m.run_id
        self.admitted.get(key, {}).pop(m.run_id, None)
        self.held.get(key, {}).pop(m.run_id, None)

    def _timing_out(self, run_id: str, now: dt.datetime) -> bool:
        """A step of the run is held back and its schedule timeout has come."""
        timeout = dt.timedelta(seconds=self.created[run_id].schedule_timeout_s)
        return any(
            r == run_id and now - parse_time(kept.at) >= timeout
            for (r, _step), kept in self.kept_back.items()
        )

    def _queued(self, m: Task, now: dt.datetime) -> None:
        self._admit(m, now)
        key = (m.run_id, m.step)
        spec, on_failure = self.spec(*key)
        assert key not in self.verdicts, f"{m!r} after the step's verdict"
        prev = self.queued.get(key)
        if m.moves:  # placed on a worker that went: the same task, moved (dispatcher.moved)
            assert prev is not None and m.attempt == prev.attempt, f"{m!r} after {prev!r}"
            assert m.wakes == prev.wakes and m.moves == prev.moves + 1, f"{m!r} after {prev!r}"
            assert prev.worker_id is not None and m.moved_from == prev.worker_id, f"{m!r}"
            attempt = (m.run_id, m.step, m.attempt)
            assert m.delivery_offset == self.deliveries.get(attempt, 0), f"{m!r}: offset"
            self.handed_back[attempt] = max(self.handed_back.get(attempt, 0), m.delivery_offset)
            self.queued[key] = m
            return
        if m.wakes:  # a durable step's attempt queued again, woken: one wake more each time
            assert prev is not None and m.attempt == prev.attempt, f"{m!r} after {prev!r}"
            assert len(m.wakes) == len(prev.wakes) + 1 and m.wakes[:-1] == prev.wakes
            woken = self.woken.get((m.run_id, m.step, m.attempt), ())
            assert m.wakes == woken, f"{m!r}: the attempt's wakes are {woken!r}"
            # Back in the queue: the deliveries before it were given back with the wait.
            attempt = (m.run_id, m.step, m.attempt)
            assert m.delivery_offset == self.deliveries.get(attempt, 0), f"{m!r}: offset"
            self.handed_back[attempt] = max(self.handed_back.get(attempt, 0), m.delivery_offset)
            self.queued[key] = m
            return
        assert m.attempt == (prev.attempt + 1 if prev else 1), f"{m!r} after {prev!r}"
        assert m.attempt <= spec.retries + 1, f"{m!r}: only {spec.retries} retries"
        if prev is not None:
            reported = self.reported[(m.run_id, m.step, prev.attempt)]
            assert (False, False) in reported, f"{m!r}: attempt {prev.attempt} did not fail"
        if on_failure:
            assert self.failing(m.run_id) and m.attempt == 1, f"{m!r}: the run is not failing"
        else:
            for parent in spec.parents:
                verdict = self.verdicts.get((m.run_id, parent))
                assert verdict is not None and verdict.status is RunStatus.SUCCEEDED, (
                    f"{m!r} but parent {parent!r} is {verdict and verdict.status}"
                )
            scheduled = (m.run_id, m.step, m.attempt) in self.retries_scheduled
            tolerated = TOLERATE_RETRY_OF_FAILING_RUN and scheduled
            assert tolerated or not self.failing(m.run_id), f"{m!r} released in a failing run"
        if prev is None:
            self.queued_order.append(key)
        self.queued[key] = m

    def _retry(self, m: StepRetryScheduled, now: dt.datetime) -> None:
        spec, on_failure = self.spec(m.run_id, m.step)
        current = self.queued[(m.run_id, m.step)]
        assert not on_failure and spec.backoff_factor
        assert m.attempt == current.attempt and m.next_attempt == m.attempt + 1
        assert m.next_attempt <= spec.retries + 1
        assert (False, False) in self.reported[(m.run_id, m.step, m.attempt)]
        expected = now + dt.timedelta(seconds=backoff_s(spec, m.attempt))
        assert abs(parse_time(m.due_at) - expected) < dt.timedelta(milliseconds=1)
        self.retries_scheduled.add((m.run_id, m.step, m.next_attempt))

    def _verdict(self, m: StepFinished, now: dt.datetime) -> None:
        key = (m.run_id, m.step)
        assert key not in self.verdicts, f"second verdict {m!r} after {self.verdicts[key]!r}"
        assert m.status.terminal
        spec, on_failure = self.spec(*key)
        queued = self.queued.get(key)
        kept = self.kept_back.get(key)
        if TIMED_OUT in (m.error or "") and "held back" in (m.error or ""):
            # Held back until its schedule timeout: never offered, so never taken.
            assert kept is not None and kept.attempt == m.attempt, f"{m!r} never held"
            assert queued is None or queued.attempt < m.attempt or kept.wakes or kept.moves, (
                f"{m!r}"
            )
            timeout = dt.timedelta(seconds=self.created[m.run_id].schedule_timeout_s)
            assert now - parse_time(kept.at) >= timeout, f"{m!r} before its timeout"
            self.verdicts[key] = m
            return
        if "can never run" in (m.error or "") and m.status is RunStatus.FAILED:
            # A rate limit the step takes more units of than it allows: failed unoffered.
            assert spec.rate_limits and m.error and m.error.startswith("rate limit "), f"{m!r}"
            assert queued is None or queued.attempt < m.attempt, f"{m!r} after {queued!r}"
            self.verdicts[key] = m
            return
        if m.status is not RunStatus.CANCELLED:
            assert queued is not None and m.attempt == queued.attempt, f"{m!r} vs {queued!r}"
        reported = self.reported[(m.run_id, m.step, m.attempt)]
        if m.status is RunStatus.SUCCEEDED:
            assert (True, False) in reported, f"{m!r} without an ok result"
        elif m.status is RunStatus.FAILED and TIMED_OUT in (m.error or ""):
            assert queued is not None
            # Genuine only when no worker holds it: never taken (no assigned, no result), or
            # the newest delivery was handed back (back in the queue, timer re-armed).
            attempt = (m.run_id, m.step, m.attempt)
            held = self.deliveries.get(attempt, 0) > self.handed_back.get(attempt, 0)
            assert not held, f"{m!r} but assigned"
            timeout = dt.timedelta(seconds=self.created[m.run_id].schedule_timeout_s)
            assert now - parse_time(queued.queued_at) >= timeout
        elif m.status is RunStatus.FAILED:
            assert reported & {(False, False), (False, True)}, f"{m!r} without a failure"
            retryable = reported == {(False, False)} and not on_failure
            left = m.attempt <= spec.retries and not self.failing(m.run_id)
            assert not (retryable and left), f"{m!r} although retries are left"
        self.verdicts[key] = m

    def _run_finished(self, m: RunFinished) -> None:
        created = self.created[m.run_id]
        names = [s.name for s in created.steps]
        if created.on_failure is not None:
            names.append(created.on_failure.name)
        verdicts = {n: self.verdicts.get((m.run_id, n)) for n in names}
        missing = [n for n, v in verdicts.items() if v is None]
        assert not missing, f"{m!r} but steps {missing} have no verdict"
        dag = [verdicts[s.name].status for s in created.steps]  # type: ignore[union-attr]
        if m.status is RunStatus.SUCCEEDED:
            assert all(s is RunStatus.SUCCEEDED for s in dag), f"{m!r} but steps are {dag}"
        elif m.status is RunStatus.FAILED:
            assert RunStatus.FAILED in dag, f"{m!r} but no step failed: {dag}"
            if created.on_failure is not None:
                ran = verdicts[created.on_failure.name].status  # type: ignore[union-attr]
                assert ran is not RunStatus.CANCELLED, f"{m!r}: the on-failure step never ran"
        else:
            by_key = created.concurrency is not None and created.concurrency.limit_strategy in (
                LimitStrategy.CANCEL_IN_PROGRESS,
                LimitStrategy.CANCEL_NEWEST,
            )  # a strategy cancels runs of a full key (checked in _left_its_key)
            cancelled_by_key = by_key and "concurrency key" in (m.error or "")
            cancelled_by_key = cancelled_by_key or _by_step_key(created, m)
            assert m.run_id in self.cancel_requested or cancelled_by_key, (
                f"{m!r} without a cancel request"
            )
        self.finished[m.run_id] = m

    # -- state ----------------------------------------------------------------------------
    def check_state(self, state: State) -> None:
        """No impossible state: terminal stays terminal, in flight only once queued."""
        for run_id, run in state.runs.items():
            assert run_id not in self.finished
            for name, step in run.steps.items():
                verdict = self.verdicts.get((run_id, name))
                queued = self.queued.get((run_id, name))
                if verdict is not None:
                    assert step.status is verdict.status, f"{run_id}/{name}: {step.status}"
                else:
                    assert not step.terminal, f"{run_id}/{name} {step.status} without verdict"
                if step.held:  # kept back by flow control: its task not offered yet
                    assert step.status is RunStatus.QUEUED and not step.assigned
                    assert queued is None or queued.attempt <= step.attempt
                elif step.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                    assert queued is not None and step.attempt == queued.attempt
                if step.status is None:
                    assert queued is None, f"{run_id}/{name} queued but waiting"
                assert step.attempt <= step.spec.retries + 1
        for run_id in self.finished:
            assert run_id in state.done and run_id not in state.runs


def _by_step_key(created: RunCreated, m: RunFinished) -> bool:
    """The run was cancelled by a step key's ``CANCEL_*`` strategy (its reason names the
    step; ``tests/property/test_step_cancel.py`` checks it names exactly the right runs)."""
    cancelling = {
        s.name
        for s in (*created.steps, *((created.on_failure,) if created.on_failure else ()))
        if s.concurrency is not None
        and s.concurrency.limit_strategy is not LimitStrategy.GROUP_ROUND_ROBIN
    }
    error = m.error or ""
    return m.status is RunStatus.CANCELLED and any(
        f"step {n!r} concurrency key" in error for n in cancelling
    )
