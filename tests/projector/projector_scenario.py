"""A realistic history to project: an event triggers a diamond run (a -> b, a -> c,
b + c -> d) with a retry (b), a dead worker's redelivery (c) and log lines; a run request
the dispatcher rejects; and one run of each reliability path: a retry with backoff, a task
handed back at shutdown, a lost delivery, a cancelled run, a run whose on-failure step
runs, and a run logged as today's worker logs fast steps (results that carry their
assignment, no ``assigned``). Appended to a real stream with eventstore."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import attrs
from nats.aio.client import Client as NATS

import eventstore
from eventstore import Append, Record
from schemas import (
    RunCancelRequested,
    RunCreated,
    RunFinished,
    RunRejected,
    RunRequested,
    RunStatus,
    Scope,
    StepAssigned,
    StepDef,
    StepFinished,
    StepLog,
    StepQueued,
    StepResult,
    StepRetryScheduled,
    Task,
    Trigger,
    WorkflowDef,
    encode,
    encode_json,
)

T0 = dt.datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
EVENT_KEY = "order:created"
STEPS = (
    StepDef("a"),
    StepDef("b", ("a",), retries=1),
    StepDef("c", ("a",)),
    StepDef("d", ("b", "c")),
)
# s (retried with backoff) -> t, and an on-failure step.
FLAKY_STEPS = (StepDef("s", retries=2, backoff_factor=2.0), StepDef("t", ("s",)))
CLEANUP = StepDef("cleanup")
SINGLE_STEPS = (StepDef("s"),)
Worker = tuple[str, str]  # (id, name)
Key = tuple[str, str, int, int]  # (run, step, attempt, delivery)
W1: Worker = ("w-1", "worker-one")
W2: Worker = ("w-2", "worker-two")


def at(offset_s: float) -> str:
    return (T0 + dt.timedelta(seconds=offset_s)).isoformat(timespec="microseconds")


def workflow() -> WorkflowDef:
    return WorkflowDef(
        name="diamond", version="v1", steps=STEPS, on_events=(EVENT_KEY,), registered_at=at(0)
    )


def flaky_workflow() -> WorkflowDef:
    return WorkflowDef(
        name="flaky", version="v1", steps=FLAKY_STEPS, on_failure=CLEANUP, registered_at=at(0)
    )


def single_workflow() -> WorkflowDef:
    return WorkflowDef(name="single", version="v1", steps=SINGLE_STEPS, registered_at=at(0))


@attrs.frozen
class Diamond:
    run_id: str
    event_seq: int
    t: float
    last_seq: int


@attrs.frozen
class Run:
    """A reliability run: its id, its start time and the sequences of its turning points."""

    run_id: str
    t: float
    marks: dict[str, int]
    last_seq: int


class Writer:
    def __init__(self, nc: NATS, scope: Scope) -> None:
        self.nc = nc
        self.scope = scope

    def msg(self, message: Any) -> Append:
        if isinstance(message, Task):
            return Append(self.scope.task(message.workflow, message.step), encode(message))
        if isinstance(message, WorkflowDef):
            return Append(self.scope.workflow(message.name), encode(message))
        return Append(self.scope.run(message.run_id, message.KIND), encode(message))

    async def put(self, *messages: Any) -> int:
        """Append ``messages`` as one atomic batch; return the last sequence."""
        items = [m if isinstance(m, Append) else self.msg(m) for m in messages]
        return await eventstore.append_atomic(self.nc, items)

    def queue(
        self, run_id: str, step: str, attempt: int, t: float, workflow: str = "diamond"
    ) -> tuple[Any, Any]:
        return (
            StepQueued(run_id, step, attempt, queued_at=at(t)),
            Task(run_id, workflow, step, attempt, {"order": 42}, {}, 60.0, queued_at=at(t)),
        )

    def assign(self, k: Key, w: Worker, t: float) -> StepAssigned:
        return StepAssigned(*k, worker_id=w[0], worker_name=w[1], started_at=at(t))

    def result(
        self, k: Key, w: Worker, t: float, output: Any = None, error: str | None = None
    ) -> Any:
        return StepResult(*k, w[0], error is None, output, error, finished_at=at(t))

    def carried(
        self,
        k: Key,
        w: Worker,
        t0: float,
        t1: float,
        output: Any = None,
        error: str | None = None,
        *,
        handed_back: bool = False,
    ) -> StepResult:
        """A result that carries its assignment (started at ``t0``), as a worker writes it
        today; alone in the log for a step done within the worker's grace."""
        return StepResult(
            *k, w[0], error is None and not handed_back, output, error, finished_at=at(t1),
            handed_back=handed_back, worker_name=w[1], started_at=at(t0),
        )  # fmt: skip

    def done(self, k: Key, output: Any, t: float) -> StepFinished:
        return StepFinished(*k, RunStatus.SUCCEEDED, output, at=at(t))

    def cancelled(self, k: Key, why: str, t: float) -> StepFinished:
        return StepFinished(*k, RunStatus.CANCELLED, error=why, at=at(t))

    async def diamond(self, t: float = 0.0, run_id: str | None = None) -> Diamond:
        """A whole successful run triggered by a new event, starting ``t`` seconds in."""
        r = run_id or str(uuid.uuid4())
        event_seq = await self.put(Append(self.scope.event(EVENT_KEY), encode_json({"order": 42})))
        trigger = Trigger.of_event(EVENT_KEY, str(event_seq))
        await self.put(
            RunCreated(r, "diamond", "v1", {"order": 42}, STEPS, trigger, created_at=at(t + 2))
        )
        await self.put(*self.queue(r, "a", 1, t + 3))
        await self.put(self.assign((r, "a", 1, 1), W1, t + 4))
        await self.put(StepLog(r, "a", 1, 1, "charging order 42", at=at(t + 4.5)))
        await self.put(self.result((r, "a", 1, 1), W1, t + 5, {"charged": 42}))
        await self.put(
            self.done((r, "a", 1, 1), {"charged": 42}, t + 6),
            *self.queue(r, "b", 1, t + 6),
            *self.queue(r, "c", 1, t + 6),
        )
        await self.put(self.assign((r, "b", 1, 1), W1, t + 7))
        await self.put(self.assign((r, "c", 1, 1), W2, t + 7.5))
        await self.put(self.result((r, "b", 1, 1), W1, t + 8, error="boom"))
        await self.put(*self.queue(r, "b", 2, t + 9))
        await self.put(self.assign((r, "b", 2, 1), W2, t + 10))
        await self.put(self.result((r, "b", 2, 1), W2, t + 11, {"b": 2}))
        await self.put(self.done((r, "b", 2, 1), {"b": 2}, t + 11.5))
        # w-2 died holding c: the task comes back to w-1 as delivery 2.
        await self.put(self.assign((r, "c", 1, 2), W1, t + 12))
        await self.put(StepLog(r, "c", 1, 2, "redelivered", at=at(t + 12.5)))
        await self.put(self.result((r, "c", 1, 2), W1, t + 13, {"c": 3}))
        await self.put(self.done((r, "c", 1, 2), {"c": 3}, t + 14), *self.queue(r, "d", 1, t + 14))
        await self.put(self.assign((r, "d", 1, 1), W1, t + 15))
        await self.put(StepLog(r, "d", 1, 1, "done", at=at(t + 15.5)))
        await self.put(self.result((r, "d", 1, 1), W1, t + 16, {"sum": 5}))
        last = await self.put(
            self.done((r, "d", 1, 1), {"sum": 5}, t + 17),
            RunFinished(r, RunStatus.SUCCEEDED, at=at(t + 17)),
        )
        return Diamond(r, event_seq, t, last)

    async def rejected(self, t: float = 0.0, run_id: str | None = None) -> str:
        r = run_id or str(uuid.uuid4())
        await self.put(RunRequested(r, "nope", {"x": 1}, requested_at=at(t)))
        await self.put(RunRejected(r, "nope", "unknown workflow 'nope'", at=at(t + 1)))
        return r

    async def created(self, run_id: str, t: float, *, single: bool = False) -> int:
        if single:
            return await self.put(
                RunCreated(run_id, "single", "v1", {"n": 1}, SINGLE_STEPS, created_at=at(t))
            )
        return await self.put(
            RunCreated(
                run_id, "flaky", "v1", {"n": 1}, FLAKY_STEPS, created_at=at(t), on_failure=CLEANUP
            )
        )

    async def retry(self, t: float) -> Run:
        """s fails, its retry waits out a backoff, then succeeds; t follows; the on-failure
        step is cancelled as the run succeeds."""
        r, marks = str(uuid.uuid4()), {}
        await self.created(r, t)
        await self.put(*self.queue(r, "s", 1, t + 1, "flaky"))
        await self.put(self.assign((r, "s", 1, 1), W1, t + 2))
        await self.put(self.result((r, "s", 1, 1), W1, t + 3, error="boom 1"))
        marks["scheduled"] = await self.put(
            StepRetryScheduled(r, "s", 1, 2, due_at=at(t + 5), error="boom 1", at=at(t + 3.5))
        )
        marks["queued"] = await self.put(*self.queue(r, "s", 2, t + 5, "flaky"))
        await self.put(self.assign((r, "s", 2, 1), W2, t + 6))
        await self.put(self.result((r, "s", 2, 1), W2, t + 7, {"s": 2}))
        await self.put(self.done((r, "s", 2, 1), {"s": 2}, t + 8), *self.queue(r, "t", 1, t + 8))
        await self.put(self.assign((r, "t", 1, 1), W1, t + 9))
        await self.put(self.result((r, "t", 1, 1), W1, t + 10, {"t": 1}))
        last = await self.put(
            self.done((r, "t", 1, 1), {"t": 1}, t + 11),
            self.cancelled((r, "cleanup", 0, 0), "the run succeeded without it", t + 11),
            RunFinished(r, RunStatus.SUCCEEDED, at=at(t + 11)),
        )
        return Run(r, t, marks, last)

    async def handed_back(self, t: float) -> Run:
        """w-1 shuts down holding s and hands it back; w-2 gets delivery 2 and succeeds."""
        r, marks = str(uuid.uuid4()), {}
        await self.created(r, t, single=True)
        await self.put(*self.queue(r, "s", 1, t + 1, "single"))
        await self.put(self.assign((r, "s", 1, 1), W1, t + 2))
        marks["handed_back"] = await self.put(
            StepResult(r, "s", 1, 1, W1[0], False, finished_at=at(t + 3), handed_back=True)
        )
        await self.put(self.assign((r, "s", 1, 2), W2, t + 4))
        await self.put(self.result((r, "s", 1, 2), W2, t + 5, {"s": 1}))
        last = await self.put(
            self.done((r, "s", 1, 2), {"s": 1}, t + 6),
            RunFinished(r, RunStatus.SUCCEEDED, at=at(t + 6)),
        )
        return Run(r, t, marks, last)

    async def lost(self, t: float) -> Run:
        """w-1 goes silent holding s; delivery 2 goes to w-2 and succeeds; w-1's late
        result arrives after the run ended."""
        r, marks = str(uuid.uuid4()), {}
        await self.created(r, t, single=True)
        await self.put(*self.queue(r, "s", 1, t + 1, "single"))
        await self.put(self.assign((r, "s", 1, 1), W1, t + 2))
        await self.put(StepLog(r, "s", 1, 1, "working", at=at(t + 2.5)))
        marks["redelivered"] = await self.put(self.assign((r, "s", 1, 2), W2, t + 4))
        await self.put(self.result((r, "s", 1, 2), W2, t + 5, {"s": 1}))
        marks["finished"] = await self.put(
            self.done((r, "s", 1, 2), {"s": 1}, t + 6),
            RunFinished(r, RunStatus.SUCCEEDED, at=at(t + 6)),
        )
        last = await self.put(self.result((r, "s", 1, 1), W1, t + 7, error="w-1 came back"))
        return Run(r, t, marks, last)

    async def cancel(self, t: float) -> Run:
        """Cancelled while s runs; w-1's result for s arrives after the run ended."""
        r, marks = str(uuid.uuid4()), {}
        await self.created(r, t)
        await self.put(*self.queue(r, "s", 1, t + 1, "flaky"))
        await self.put(self.assign((r, "s", 1, 1), W1, t + 2))
        marks["requested"] = await self.put(
            RunCancelRequested(r, "not needed", requested_at=at(t + 3))
        )
        why = "the run ended CANCELLED"
        marks["finished"] = await self.put(
            self.cancelled((r, "s", 1, 0), why, t + 4),
            self.cancelled((r, "t", 0, 0), why, t + 4),
            self.cancelled((r, "cleanup", 0, 0), why, t + 4),
            RunFinished(r, RunStatus.CANCELLED, "cancelled: not needed", at=at(t + 4)),
        )
        await self.put(RunCancelRequested(r, "again", requested_at=at(t + 5)))  # too late
        last = await self.put(self.result((r, "s", 1, 1), W1, t + 6, {"s": "late"}))
        return Run(r, t, marks, last)

    async def fast_steps(self, t: float) -> Run:
        """Today's worker: fast deliveries leave only their result (it carries the
        assignment). w-1 goes silent holding s (its ``assigned`` is in the log); delivery 2
        goes to w-2, is handed back within the grace; delivery 3 goes to w-1 and succeeds
        fast; then t runs slow (``assigned``, then a result carrying it too)."""
        r, marks = str(uuid.uuid4()), {}
        await self.created(r, t)
        await self.put(*self.queue(r, "s", 1, t + 1, "flaky"))
        await self.put(self.assign((r, "s", 1, 1), W1, t + 2))
        marks["handed_back"] = await self.put(
            self.carried((r, "s", 1, 2), W2, t + 3, t + 3.01, handed_back=True)
        )
        marks["result"] = await self.put(
            self.carried((r, "s", 1, 3), W1, t + 4, t + 4.02, {"s": 3})
        )
        await self.put(
            self.done((r, "s", 1, 3), {"s": 3}, t + 5), *self.queue(r, "t", 1, t + 5, "flaky")
        )
        await self.put(self.assign((r, "t", 1, 1), W2, t + 6))
        marks["slow"] = await self.put(self.carried((r, "t", 1, 1), W2, t + 6, t + 7, {"t": 1}))
        last = await self.put(
            self.done((r, "t", 1, 1), {"t": 1}, t + 8),
            self.cancelled((r, "cleanup", 0, 0), "the run succeeded without it", t + 8),
            RunFinished(r, RunStatus.SUCCEEDED, at=at(t + 8)),
        )
        return Run(r, t, marks, last)

    async def on_failure(self, t: float) -> Run:
        """s fails for good (non-retryable); the on-failure step runs; t never runs."""
        r, marks = str(uuid.uuid4()), {}
        await self.created(r, t)
        await self.put(*self.queue(r, "s", 1, t + 1, "flaky"))
        await self.put(self.assign((r, "s", 1, 1), W1, t + 2))
        await self.put(
            StepResult(
                r, "s", 1, 1, W1[0], False, error="bad input", finished_at=at(t + 3),
                non_retryable=True,
            )
        )  # fmt: skip
        await self.put(
            StepFinished(r, "s", 1, 1, RunStatus.FAILED, error="bad input", at=at(t + 4)),
            *self.queue(r, "cleanup", 1, t + 4, "flaky"),
        )
        await self.put(self.assign((r, "cleanup", 1, 1), W2, t + 5))
        await self.put(StepLog(r, "cleanup", 1, 1, "cleaning up", at=at(t + 5.5)))
        await self.put(self.result((r, "cleanup", 1, 1), W2, t + 6, {"cleaned": True}))
        last = await self.put(
            self.done((r, "cleanup", 1, 1), {"cleaned": True}, t + 7),
            self.cancelled((r, "t", 0, 0), "the run ended FAILED", t + 7),
            RunFinished(r, RunStatus.FAILED, "step 's' failed: bad input", at=at(t + 7)),
        )
        return Run(r, t, marks, last)


@attrs.frozen
class History:
    diamond: Diamond
    rejected: str
    retry: Run
    handed_back: Run
    lost: Run
    cancel: Run
    on_failure: Run
    fast_steps: Run

    @property
    def last_seq(self) -> int:
        return self.fast_steps.last_seq

    def run_ids(self) -> list[str]:
        """Every run, newest first (as ``list_runs`` orders them)."""
        runs = (
            self.fast_steps, self.on_failure, self.cancel, self.lost, self.handed_back, self.retry
        )  # fmt: skip
        return [r.run_id for r in runs] + [self.rejected, self.diamond.run_id]


async def write_history(nc: NATS, tenant: str) -> History:
    """The workflows, one diamond run, one rejected run and the reliability runs."""
    w = Writer(nc, Scope(tenant))
    await w.put(workflow(), flaky_workflow(), single_workflow())
    diamond = await w.diamond()
    rejected = await w.rejected(t=30)
    return History(
        diamond,
        rejected,
        retry=await w.retry(t=40),
        handed_back=await w.handed_back(t=60),
        lost=await w.lost(t=80),
        cancel=await w.cancel(t=100),
        on_failure=await w.on_failure(t=120),
        fast_steps=await w.fast_steps(t=140),
    )


async def read_all(nc: NATS, tenant: str) -> list[Record]:
    return [r async for r in eventstore.replay(nc, tenant)]


LOST = "no result: the task was redelivered to another worker (worker presumed dead)"
HANDED_BACK = "handed back: the worker shut down before finishing"
RUN_ENDED = "the run ended before this attempt reported"


def attempt(
    n: tuple[int, int],
    w: Worker,
    status: str,
    *,
    t0: float,
    t1: float | None,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "attempt": n[0],
        "delivery": n[1],
        "worker_id": w[0],
        "worker_name": w[1],
        "status": status,
        "started_at": at(t0),
        "finished_at": None if t1 is None else at(t1),
        "error": error,
    }


def expected_run(d: Diamond, tenant: str) -> dict[str, Any]:
    """What ``projector.get_run`` must say about the diamond run."""
    t = d.t

    def step(
        name: str,
        parents: Sequence[str],
        output: Any,
        *,
        times: tuple[float, ...],
        attempts: list[dict[str, Any]],
        logs: list[tuple[float, str, int]],
    ) -> Any:
        return {
            "name": name,
            "parents": list(parents),
            "status": "SUCCEEDED",
            "output": output,
            "error": None,
            "queued_at": at(t + times[0]),
            "started_at": at(t + times[1]),
            "finished_at": at(t + times[2]),
            "retry_due_at": None,
            "on_failure": False,
            "on_success": False,
            "waiting_for": None,
            "waits": [],
            "attempts": attempts,
            "logs": [{"at": at(t + x), "line": line, "attempt": n} for x, line, n in logs],
        }

    return {
        "id": d.run_id,
        "tenant": tenant,
        "namespace": "default",
        "workflow": "diamond",
        "workflow_version": "v1",
        "status": "SUCCEEDED",
        "input": {"order": 42},
        "triggered_by": {"event_key": EVENT_KEY, "event_id": str(d.event_seq)},
        "error": None,
        "created_at": at(t + 2),
        "started_at": at(t + 4),
        "finished_at": at(t + 17),
        "cancel_requested_at": None,
        "cancel_reason": None,
        "replay_of": None,
        "parent": None,
        "children": [],
        "additional_metadata": {},
        "fired_by": None,
        "concurrency_key": None,
        "concurrency": None,
        "priority": None,
        "waiting_for": None,
        "steps": [
            step(
                "a",
                (),
                {"charged": 42},
                times=(3, 4, 6),
                attempts=[attempt((1, 1), W1, "SUCCEEDED", t0=t + 4, t1=t + 5)],
                logs=[(4.5, "charging order 42", 1)],
            ),
            step(
                "b",
                ("a",),
                {"b": 2},
                times=(6, 7, 11.5),
                attempts=[
                    attempt((1, 1), W1, "FAILED", t0=t + 7, t1=t + 8, error="boom"),
                    attempt((2, 1), W2, "SUCCEEDED", t0=t + 10, t1=t + 11),
                ],
                logs=[],
            ),
            step(
                "c",
                ("a",),
                {"c": 3},
                times=(6, 7.5, 14),
                attempts=[
                    attempt((1, 1), W2, "LOST", t0=t + 7.5, t1=t + 12, error=LOST),
                    attempt((1, 2), W1, "SUCCEEDED", t0=t + 12, t1=t + 13),
                ],
                logs=[(12.5, "redelivered", 1)],
            ),
            step(
                "d",
                ("b", "c"),
                {"sum": 5},
                times=(14, 15, 17),
                attempts=[attempt((1, 1), W1, "SUCCEEDED", t0=t + 15, t1=t + 16)],
                logs=[(15.5, "done", 1)],
            ),
        ],
    }


def read_breaking_after(n: int) -> Callable[..., AsyncIterator[Record]]:
    """``eventstore.read_to_end`` that fails as a lost connection does after ``n`` records
    (for a test to monkeypatch in)."""
    real = eventstore.read_to_end

    async def breaks(*args: Any, **kwargs: Any) -> AsyncIterator[Record]:
        read = 0
        async for record in real(*args, **kwargs):
            if read == n:
                raise eventstore.TransportError("the connection went away")
            read += 1
            yield record

    return breaks
