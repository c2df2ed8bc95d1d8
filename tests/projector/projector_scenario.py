"""A realistic history to project: an event triggers a diamond run (a -> b, a -> c,
b + c -> d) with a retry (b), a dead worker's redelivery (c) and log lines; plus a run
request the dispatcher rejects. Appended to a real stream with eventstore."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import attrs
from nats.aio.client import Client as NATS

import eventstore
from eventstore import Append, Record
from schemas import (
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
    Task,
    TriggeredBy,
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


@attrs.frozen
class Diamond:
    run_id: str
    event_seq: int
    t: float
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

    def queue(self, run_id: str, step: str, attempt: int, t: float) -> tuple[Any, Any]:
        return (
            StepQueued(run_id, step, attempt, queued_at=at(t)),
            Task(run_id, "diamond", step, attempt, {"order": 42}, {}, 60.0, queued_at=at(t)),
        )

    def assign(self, k: Key, w: Worker, t: float) -> StepAssigned:
        return StepAssigned(*k, worker_id=w[0], worker_name=w[1], started_at=at(t))

    def result(
        self, k: Key, w: Worker, t: float, output: Any = None, error: str | None = None
    ) -> Any:
        return StepResult(*k, w[0], error is None, output, error, finished_at=at(t))

    def done(self, k: Key, output: Any, t: float) -> StepFinished:
        return StepFinished(*k, RunStatus.SUCCEEDED, output, at=at(t))

    async def diamond(self, t: float = 0.0) -> Diamond:
        """A whole successful run triggered by a new event, starting ``t`` seconds in."""
        r = str(uuid.uuid4())
        event_seq = await self.put(Append(self.scope.event(EVENT_KEY), encode_json({"order": 42})))
        trigger = TriggeredBy(EVENT_KEY, str(event_seq))
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

    async def rejected(self, t: float = 0.0) -> str:
        r = str(uuid.uuid4())
        await self.put(RunRequested(r, "nope", {"x": 1}, requested_at=at(t)))
        await self.put(RunRejected(r, "nope", "unknown workflow 'nope'", at=at(t + 1)))
        return r


async def write_history(nc: NATS, tenant: str) -> tuple[Diamond, str]:
    """The workflow, one diamond run and one rejected run."""
    w = Writer(nc, Scope(tenant))
    await w.put(workflow())
    diamond = await w.diamond()
    return diamond, await w.rejected(t=30)


async def read_all(nc: NATS, tenant: str) -> list[Record]:
    return [r async for r in eventstore.replay(nc, tenant)]


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
                    attempt((1, 1), W2, "RUNNING", t0=t + 7.5, t1=None),
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
