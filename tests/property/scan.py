"""The reference for ``dispatcher.decide.due``: the scan of every run in flight it replaced
(as it was, but for its name), and the checks that the deadline heap agrees with it."""

from __future__ import annotations

import datetime as dt

from dispatcher import Output, State, due
from dispatcher.decide import _step_failed, _wake, queue_task
from dispatcher.policy import after
from dispatcher.snapshot import Snapshot, dump, load
from dispatcher.state import deadlines_of
from dispatcher.wakes import woken_by_time
from schemas import RunStatus


def scan_due(state: State, now: dt.datetime) -> list[list[Output]]:
    """Retries whose backoff is over, durable sleeps over, and queued steps nobody picked up
    in time: at most one
    decision per run per call, found by looking at every step of every run in flight."""
    decisions: list[list[Output]] = []
    limits: dict[float, dt.datetime] = {}
    for run in list(state.runs.values()):
        limit = limits.get(run.schedule_timeout_s)
        if limit is None:
            limit = limits[run.schedule_timeout_s] = after(now, -run.schedule_timeout_s)
        for step in run.steps.values():
            if (
                step.retry_due is not None
                and step.retry_due <= now
                and not step.terminal
                and not run.failed_error  # a failing run releases nothing more
            ):
                decisions.append(queue_task(run, step, step.next_attempt, now))
                break
            wake = woken_by_time(run, step, now)  # a durable wait's sleep is over
            if wake is not None:
                decisions.append(_wake(run, step, wake[1], now))
                break
            if step.status is not RunStatus.QUEUED or step.assigned:
                continue
            since = step.waiting_since
            if since is not None and since <= limit:
                reason = (
                    f"not picked up by any worker within {run.schedule_timeout_s:g}s "
                    "(schedule_timeout): is a worker for this workflow running?"
                )
                if step.held:
                    reason = (
                        f"held back for {run.schedule_timeout_s:g}s (schedule_timeout) and "
                        f"never offered to a worker: {step.held_reason}"
                    )
                decisions.append(_step_failed(run, step, step.attempt, 1, reason, now))
                break
    return decisions


def by_run(decisions: list[list[Output]]) -> dict[str, list[Output]]:
    """Each decision under its run's id (a run decides at most once a call)."""
    out = {d[0].message.run_id: d for d in decisions}
    assert len(out) == len(decisions), f"a run decided twice: {decisions}"
    return out


def assert_indexed(state: State) -> None:
    """Every deadline a step has now is in the heap, at exactly its moment."""
    entries = set(state.deadlines)
    for run in state.runs.values():
        for name, step in run.steps.items():
            for when in deadlines_of(run, step):
                assert (when, run.run_id, name) in entries, f"{run.run_id}/{name} not indexed"


def checked_due(state: State, now: dt.datetime, *, snapshot: bool = True) -> list[list[Output]]:
    """``due(state, now)``, checked: the scan decides the same for every run; asked again
    before anything is folded, it decides the same; the state loaded from a snapshot of it
    (its heap built from the runs, not by folding) decides the same, in the same order
    (unless not ``snapshot``)."""
    expected = by_run(scan_due(state, now))
    got = due(state, now)
    assert by_run(got) == expected
    assert due(state, now) == got
    assert_indexed(state)
    if snapshot:
        assert due(load(dump(Snapshot(0, state))).state, now) == got
    return got
