"""A tenant log of realistic runs, for ``bench/rebuild.py``: the message mix of real runs,
appended directly to JetStream, pipelined, runs overlapping in the log as under load.

Runs, by ``i % 20``:

- 10 of 20: a fast one-step run as today's engine logs it: event, ``created``, task, a
  ``result`` carrying its assignment, ``finished`` carrying the step's verdict (5 messages);
- 6: a 4-step diamond triggered by an event, each step slow enough to get an ``assigned``
  and writing a log line (event, ``created``, per step task, ``assigned``, ``log``,
  ``result``, ``step_finished``; ``finished``: 23 messages);
- 2: a one-step run whose first attempt fails and is retried after a backoff
  (``retry_scheduled``, the second attempt's task and result; 11 messages);
- 1: a run whose step fails for good (its ``step_finished`` and ``finished`` FAILED);
- 1: a run request the dispatcher rejects (``requested``, ``rejected``).

About 11 messages a run. The stream is written by this module alone, in order, on one
connection, so each message's sequence is known before it is sent (and checked against
the acknowledgements): an event's sequence goes into the trigger of the run it starts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from bench.projector_apply import KEY, SCOPE, TENANT, at
from eventstore import Append, Appender, Connection, ensure_tenant_stream, last_seq
from schemas import (
    RunCreated,
    RunFinished,
    RunRejected,
    RunRequested,
    RunStatus,
    StepAssigned,
    StepDef,
    StepFinished,
    StepLog,
    StepResult,
    StepRetryScheduled,
    Task,
    Trigger,
    WorkflowDef,
    encode,
    encode_json,
)

ONE = (StepDef("a"),)
RETRIED = (StepDef("a", retries=1, backoff_factor=2.0),)
DIAMOND = (StepDef("a"), StepDef("b", ("a",)), StepDef("c", ("a",)), StepDef("d", ("b", "c")))
PHASES = {"a": 2.0, "b": 8.0, "c": 8.0, "d": 14.0}  # a diamond step's start, after its run's
GAP = 0.25  # time units (ms) between run starts: ~40-60 runs in flight
CHUNK = 2000  # runs generated, sorted by time and appended at a time
WORKERS = [(f"w-{n}", f"worker-{n}") for n in range(8)]

Timed = tuple[float, int, int, str, bytes]  # (time, run, n, subject, body)
_REGISTERED = "2026-01-01T00:00:00+00:00"
WORKFLOWS = [
    WorkflowDef("one", "v1", ONE, on_events=(KEY,), registered_at=_REGISTERED),
    WorkflowDef("diamond", "v1", DIAMOND, on_events=(KEY,), registered_at=_REGISTERED),
    WorkflowDef("retried", "v1", RETRIED, registered_at=_REGISTERED),
    WorkflowDef("failing", "v1", ONE, registered_at=_REGISTERED),
]


class _Run:
    """One run's messages as (time, subject, body); ``{event}`` stands for its event's
    sequence until the run is placed in the log."""

    def __init__(self, i: int, workflow: str) -> None:
        self.i, self.r, self.t0, self.wf = i, str(uuid.UUID(int=i)), i * GAP, workflow
        self.worker = WORKERS[i % len(WORKERS)]
        self.out: list[tuple[float, str, bytes]] = []

    def put(self, t: float, kind: str, message: object) -> None:
        self.out.append((self.t0 + t, SCOPE.run(self.r, kind), encode(message)))

    def start(self, steps: tuple[StepDef, ...], *, event: bool = True) -> None:
        trigger = None
        if event:
            self.out.append((self.t0, SCOPE.event(KEY), encode_json({"order": self.i})))
            trigger = Trigger.of_event(KEY, "{event}")
        inp = {"order": self.i, "items": [self.i % 7, self.i % 11]}
        self.put(
            1, "created", RunCreated(self.r, self.wf, "v1", inp, steps, trigger, at(self.t0 + 1))
        )

    def task(self, t: float, step: str, attempt: int, parents: tuple[str, ...] = ()) -> None:
        outputs = {p: {"n": self.i} for p in parents}
        task = Task(
            self.r, self.wf, step, attempt, {"order": self.i}, outputs, 60.0, at(self.t0 + t)
        )
        self.out.append((self.t0 + t, SCOPE.task(self.wf, step), encode(task)))

    def result(self, t: float, step: str, attempt: int, error: str | None = None) -> None:
        wid, name = self.worker
        ok = error is None
        output = {"n": self.i, "step": step} if ok else None
        self.put(t, "result", StepResult(
            self.r, step, attempt, 1, wid, ok, output, error, at(self.t0 + t),
            worker_name=name, started_at=at(self.t0 + t - 0.5),
        ))  # fmt: skip

    def slow_step(self, t: float, step: str, attempt: int, error: str | None = None) -> None:
        """``assigned`` and a log line before the result (a step past the worker's grace)."""
        wid, name = self.worker
        self.put(t, "assigned", StepAssigned(self.r, step, attempt, 1, wid, name, at(self.t0 + t)))
        line = f"step {step} of order {self.i}: working"
        self.put(t + 1, "log", StepLog(self.r, step, attempt, 1, line, at(self.t0 + t + 1)))
        self.result(t + 2, step, attempt, error)

    def verdict(self, t: float, step: str, attempt: int, error: str | None = None) -> StepFinished:
        if error is None:
            out = {"n": self.i, "step": step}
            return StepFinished(
                self.r, step, attempt, 1, RunStatus.SUCCEEDED, out, at=at(self.t0 + t)
            )
        return StepFinished(
            self.r, step, attempt, 1, RunStatus.FAILED, None, error, at(self.t0 + t)
        )


def run_messages(i: int) -> list[tuple[float, str, bytes]]:
    kind = i % 20
    if kind < 10:  # fast one-step
        run = _Run(i, "one")
        run.start(ONE)
        run.task(2, "a", 1)
        run.result(3, "a", 1)
        run.put(
            4,
            "finished",
            RunFinished(run.r, "SUCCEEDED", at=at(run.t0 + 4), steps=(run.verdict(4, "a", 1),)),
        )
    elif kind < 16:  # diamond, slow steps with log lines
        run = _Run(i, "diamond")
        run.start(DIAMOND)
        for step in DIAMOND:
            t = PHASES[step.name]
            run.task(t, step.name, 1, step.parents)
            run.slow_step(t + 1, step.name, 1)
            run.put(t + 4, "step_finished", run.verdict(t + 4, step.name, 1))
        run.put(18.5, "finished", RunFinished(run.r, "SUCCEEDED", at=at(run.t0 + 18.5)))
    elif kind < 18:  # a failure, retried after a backoff
        run = _Run(i, "retried")
        run.start(RETRIED, event=False)
        run.task(2, "a", 1)
        run.slow_step(3, "a", 1, error="ConnectionError: upstream reset")
        due = at(run.t0 + 9)
        why = "ConnectionError: upstream reset"
        run.put(
            6, "retry_scheduled", StepRetryScheduled(run.r, "a", 1, 2, due, why, at(run.t0 + 6))
        )
        run.task(9, "a", 2)
        run.result(10, "a", 2)
        run.put(
            11,
            "finished",
            RunFinished(run.r, "SUCCEEDED", at=at(run.t0 + 11), steps=(run.verdict(11, "a", 2),)),
        )
    elif kind < 19:  # fails for good
        run = _Run(i, "failing")
        run.start(ONE, event=False)
        run.task(2, "a", 1)
        err = "ValueError: bad order"
        run.slow_step(3, "a", 1, error=err)
        run.put(6, "step_finished", run.verdict(6, "a", 1, err))
        run.put(
            6, "finished", RunFinished(run.r, "FAILED", f"step a failed: {err}", at(run.t0 + 6))
        )
    else:  # a request for a workflow nobody registered
        run = _Run(i, "nope")
        run.put(0, "requested", RunRequested(run.r, "nope", {"order": i}, requested_at=at(run.t0)))
        run.put(
            1, "rejected", RunRejected(run.r, "nope", "unknown workflow 'nope'", at(run.t0 + 1))
        )
    return run.out


def chunk(first: int, count: int) -> list[Timed]:
    """Runs ``first`` .. ``first + count - 1``, their messages in time order."""
    timed: list[Timed] = []
    for i in range(first, first + count):
        timed += [(t, i, n, s, b) for n, (t, s, b) in enumerate(run_messages(i))]
    timed.sort(key=lambda m: m[:3])
    return timed


def placed(timed: list[Timed], next_seq: int) -> Iterator[Append]:
    """The messages as appended from ``next_seq`` on: events' sequences filled in."""
    events: dict[int, bytes] = {}
    for seq, (_t, i, n, subject, body) in enumerate(timed, start=next_seq):
        if n == 0 and ".events." in subject:
            events[i] = str(seq).encode()
            yield Append(subject, body)
        else:
            yield Append(subject, body.replace(b"{event}", events[i]) if i in events else body)


async def build(nc: Connection, messages: int) -> int:
    """Append runs to the tenant's log until it holds at least ``messages``; return its
    last sequence."""
    await ensure_tenant_stream(nc, TENANT)
    appender = Appender(nc, timeout_s=120)
    try:
        seq = await last_seq(nc, TENANT)
        if seq == 0:
            items = [Append(SCOPE.workflow(w.name), encode(w)) for w in WORKFLOWS]
            seq = (await appender.append_all(items))[-1]
        start, i, written = time.perf_counter(), 0, 0
        while seq < messages:
            items = list(placed(chunk(i, CHUNK), seq + 1))
            for k in range(0, len(items), 4000):
                acks = await appender.append_all(items[k : k + 4000])
                if acks[0] != seq + 1:
                    raise RuntimeError(f"another writer on the log: got {acks[0]}, not {seq + 1}")
                seq = acks[-1]
            i, written = i + CHUNK, written + len(items)
            rate = written / (time.perf_counter() - start)
            print(f"  wrote {seq:,} messages ({rate:,.0f}/s)", end="\r", flush=True)
        print()
        return seq
    finally:
        await appender.close()
