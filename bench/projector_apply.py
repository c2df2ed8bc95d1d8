"""What the projector's apply costs: realistic run records through ``apply_records``.

    .venv/bin/python bench/projector_apply.py [--runs 2000] [--batch 500] [--repeats 3]
                                             [--shape diamond|one] [--assigned]

Generates ``--runs`` runs as the engine logs them today for fast steps: for a diamond
(a -> b, a -> c, b + c -> d) an event, ``created``, then per step its task, ``result``
(carrying the assignment: no ``assigned`` for a step done within the worker's grace) and
``step_finished``, and ``finished`` (15 records a run; ``--shape one`` is a one-step run,
6 records). ``--assigned``: every step also has its ``assigned`` before its result, as a
step still running after the grace (or every step, before the grace existed). Runs
overlap in the log as they do under load (about 40 in flight), so a run's records span
batches. Each repeat projects them into a fresh schema of an embedded
PostgreSQL (fsync off, as ``natchet dev``), ``--batch`` records per ``apply_records`` call,
and prints records/s and runs/s; the last line is the median over the repeats.
No NATS: the records are built in memory, so this measures the projector alone.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from eventstore import Record
from natchet.dev.embedded import EmbeddedPostgres
from projector import apply_records, migrate
from schemas import (
    RunCreated,
    RunFinished,
    RunStatus,
    Scope,
    StepAssigned,
    StepDef,
    StepFinished,
    StepResult,
    Task,
    Trigger,
    WorkflowDef,
    encode,
    encode_json,
)

TENANT = "bench"
SCOPE = Scope(TENANT)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
KEY = "order:created"
SHAPES = {
    "diamond": (StepDef("a"), StepDef("b", ("a",)), StepDef("c", ("a",)), StepDef("d", ("b", "c"))),
    "one": (StepDef("a"),),
}
# Each step's phase (a time unit is one message round of the engine) after its run starts.
PHASES = {"a": 2, "b": 6, "c": 6, "d": 10}
GAP = 0.25  # time units between run starts: about 40 runs in flight


def at(t: float) -> str:
    return (T0 + dt.timedelta(milliseconds=t)).isoformat(timespec="microseconds")


def run_messages(
    i: int, steps: tuple[StepDef, ...], *, assigned: bool = False
) -> list[tuple[float, str, bytes]]:
    """One run's messages as (time, subject, body), the event first; the event's sequence
    is filled in by :func:`records` (``{event}`` in the created body). ``assigned``: an
    ``assigned`` before each result (slow steps)."""
    r, t0 = str(uuid.UUID(int=i)), i * GAP
    out: list[tuple[float, str, bytes]] = [(t0, SCOPE.event(KEY), encode_json({"order": i}))]
    trigger = Trigger.of_event(KEY, "{event}")
    created = RunCreated(r, "wf", "v1", {"order": i}, steps, trigger, created_at=at(t0 + 1))
    out.append((t0 + 1, SCOPE.run(r, "created"), encode(created)))
    worker = ("w-1", "worker-one") if i % 2 else ("w-2", "worker-two")
    end = 0.0
    for step in steps:
        t = t0 + PHASES[step.name]
        outputs = {p: {"n": i} for p in step.parents}
        task = Task(r, "wf", step.name, 1, {"order": i}, outputs, 60.0, queued_at=at(t))
        result = StepResult(
            r, step.name, 1, 1, worker[0], True, {"n": i}, finished_at=at(t + 2),
            worker_name=worker[1], started_at=at(t + 1),
        )  # fmt: skip
        done = StepFinished(r, step.name, 1, 1, RunStatus.SUCCEEDED, {"n": i}, at=at(t + 3))
        out.append((t, SCOPE.task("wf", step.name), encode(task)))
        if assigned:
            taken = StepAssigned(r, step.name, 1, 1, *worker, started_at=at(t + 1))
            out.append((t + 1, SCOPE.run(r, "assigned"), encode(taken)))
        out += [
            (t + 2, SCOPE.run(r, "result"), encode(result)),
            (t + 3, SCOPE.run(r, "step_finished"), encode(done)),
        ]
        end = max(end, t + 3)
    finished = RunFinished(r, RunStatus.SUCCEEDED, at=at(end))
    out.append((end, SCOPE.run(r, "finished"), encode(finished)))
    return out


def records(runs: int, shape: str, *, assigned: bool = False) -> list[Record]:
    steps = SHAPES[shape]
    wf = WorkflowDef("wf", "v1", steps, on_events=(KEY,), registered_at=at(0))
    timed = [(-1.0, 0, 0, SCOPE.workflow("wf"), encode(wf))]
    for i in range(runs):
        messages = run_messages(i, steps, assigned=assigned)
        timed += [(t, i, n, s, b) for n, (t, s, b) in enumerate(messages)]
    timed.sort(key=lambda m: m[:3])
    out, event_seq = [], {}
    for seq, (t, i, n, subject, body) in enumerate(timed, start=1):
        if n == 0 and ".events." in subject:
            event_seq[i] = seq
        data = body.replace(b"{event}", str(event_seq.get(i)).encode())
        out.append(Record(seq, subject, data, None, T0 + dt.timedelta(milliseconds=t)))
    return out


async def measure(conn: psycopg.AsyncConnection[Any], recs: list[Record], batch: int) -> float:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    await migrate(conn, schema)
    await conn.commit()
    start = time.perf_counter()
    for i in range(0, len(recs), batch):
        await apply_records(conn, TENANT, recs[i : i + batch], schema=schema)
    return time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="diamond")
    parser.add_argument("--assigned", action="store_true", help="an assigned before each result")
    args = parser.parse_args()
    recs = records(args.runs, args.shape, assigned=args.assigned)
    print(f"{args.runs} {args.shape} runs, {len(recs)} records, batches of {args.batch}")
    took: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="natchet-bench-") as tmp,
        EmbeddedPostgres(Path(tmp)) as pg,
    ):
        async with await psycopg.AsyncConnection.connect(pg.url()) as conn:
            for n in range(args.repeats):
                took.append(await measure(conn, recs, args.batch))
                print(
                    f"repeat {n + 1}: {took[-1]:.2f} s, {len(recs) / took[-1]:,.0f} records/s,"
                    f" {args.runs / took[-1]:,.0f} runs/s"
                )
    median = statistics.median(took)
    print(
        f"median: {len(recs) / median:,.0f} records/s, {args.runs / median:,.0f} runs/s,"
        f" {median / len(recs) * 1e6:.0f} us/record"
    )


if __name__ == "__main__":
    asyncio.run(main())
