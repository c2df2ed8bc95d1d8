"""A batch applied set-based projects exactly as its records applied one by one.

The batch is realistic and nasty: many runs interleaved in the log, every message kind,
old logs (``queued`` and the task) and new ones (the task alone; results that carry their
assignment, with or without an ``assigned``), the reliability paths (retries, hand-backs,
lost deliveries, cancels, on-failure steps), what arrives out of order
by design (a hand-back after the next delivery was assigned, late results, assignments
stored again after the run ended), records redelivered inside the batch, and bad records,
one of which only Postgres refuses. Built in memory: no NATS.
"""

from __future__ import annotations

import datetime as dt
import random
import string
import uuid
from typing import Any

import orjson
import psycopg
from projector_scenario import T0, W1, W2, Writer, flaky_workflow, single_workflow, workflow

import schemas
from eventstore import Append, Record
from projector import apply_records, dump_tables, migrate
from schemas import RunCreated, StepDef, StepResult, WorkerHeartbeat, WorkerStatus

TENANT = "tbatch"
Conn = psycopg.AsyncConnection[Any]


class Recorder(Writer):
    """A Writer that keeps what it would append, one list per run (or per message)."""

    def __init__(self, *, old_log: bool) -> None:
        super().__init__(None, schemas.Scope(TENANT))  # type: ignore[arg-type]
        self.old_log = old_log
        self.groups: list[list[Append]] = [[]]

    async def put(self, *messages: Any) -> int:
        self.groups[-1] += [m if isinstance(m, Append) else self.msg(m) for m in messages]
        return sum(map(len, self.groups))

    def queue(
        self, run_id: str, step: str, attempt: int, t: float, workflow: str = "diamond"
    ) -> tuple[Any, ...]:
        both = super().queue(run_id, step, attempt, t, workflow)
        return both if self.old_log else both[1:]  # today: the task is the step queued

    def next_run(self) -> None:
        self.groups.append([])


async def out_of_order(w: Recorder, t: float) -> None:
    """A hand-back that lands after the next delivery was assigned, an assignment stored
    again after its result and after the run ended, a result for an attempt never assigned."""
    r = str(uuid.uuid4())
    await w.created(r, t, single=True)
    await w.put(*w.queue(r, "s", 1, t + 1, "single"))
    await w.put(w.assign((r, "s", 1, 1), W1, t + 2))
    await w.put(w.assign((r, "s", 1, 2), W2, t + 3))
    await w.put(
        StepResult(
            r, "s", 1, 1, W1[0], False, error="bye", finished_at=w_at(t + 4), handed_back=True
        )
    )
    await w.put(w.result((r, "s", 1, 2), W2, t + 5, {"s": 1}))
    await w.put(w.assign((r, "s", 1, 2), W2, t + 6))  # stored again: a newer seq
    await w.put(w.done((r, "s", 1, 2), {"s": 1}, t + 7))
    await w.put(w.result((r, "s", 1, 3), W1, t + 8, error="never assigned"))
    await w.put(w.assign((r, "s", 1, 2), W2, t + 9))
    await w.put(schemas.RunFinished(r, schemas.RunStatus.SUCCEEDED, at=w_at(t + 9)))


async def in_flight(w: Recorder, t: float) -> None:
    """A diamond still going when the batch ends: a done, b running, c queued, d pending,
    and a cancel requested."""
    r = str(uuid.uuid4())
    steps = workflow().steps
    await w.put(RunCreated(r, "diamond", "v1", {"n": 1}, steps, created_at=w_at(t)))
    await w.put(*w.queue(r, "a", 1, t + 1))
    await w.put(w.assign((r, "a", 1, 1), W1, t + 2))
    await w.put(w.result((r, "a", 1, 1), W1, t + 3, {"a": 1}))
    await w.put(w.done((r, "a", 1, 1), {"a": 1}, t + 4), *w.queue(r, "b", 1, t + 4))
    await w.put(*w.queue(r, "c", 1, t + 4))
    await w.put(w.assign((r, "b", 1, 1), W2, t + 5))
    await w.put(schemas.RunCancelRequested(r, "enough", requested_at=w_at(t + 6)))


def w_at(t: float) -> str:
    return (T0 + dt.timedelta(seconds=t)).isoformat(timespec="microseconds")


async def bad_messages(w: Recorder) -> None:
    scope = w.scope
    run = str(uuid.uuid4())
    # Passes every check; Postgres refuses it in the steps key (too long, incompressible).
    long_name = "".join(random.Random(1).choices(string.ascii_letters, k=4000))
    await w.put(RunCreated(run, "diamond", "v1", {}, (StepDef(long_name),)))
    await w.put(Append(scope.run(run, "created"), b"garbage"))
    await w.put(Append(scope.run(run, "exploded"), b"{}"))
    await w.put(Append(scope.task("diamond", "a"), b"[1]"))
    await w.put(Append(f"other.{scope.namespace}.events.x", b"{}"))
    await w.put(Append(scope.event("bad"), b"not json {\xff"))
    await w.put(Append(scope.event("nul"), schemas.encode_json({"s": "a\x00b"})))
    beat = WorkerHeartbeat("w-1", "w", ("single:s",), 1, 0, WorkerStatus.ACTIVE, w_at(0))
    await w.put(Append(scope.worker("w-1"), schemas.encode(beat)))


async def realistic_batch(seed: int = 7) -> list[Record]:
    """Runs of every kind, interleaved as many in flight, with redeliveries and copies."""
    rng = random.Random(seed)
    groups: list[list[Append]] = []
    for old_log in (True, False):
        w = Recorder(old_log=old_log)
        await w.put(workflow(), flaky_workflow(), single_workflow())
        for i in range(12):
            t = 200.0 * i
            for make in (w.diamond, w.rejected, w.retry, w.handed_back, w.lost, w.cancel,
                         w.on_failure, w.fast_steps):  # fmt: skip
                w.next_run()
                await make(t)
            for scenario in (out_of_order, in_flight):
                w.next_run()
                await scenario(w, t)
        w.next_run()
        # The same workflows registered again (a worker restarted), a late task of a step.
        await w.put(workflow(), single_workflow())
        w.next_run()
        await bad_messages(w)
        groups += w.groups
    # Interleave the runs, keeping each run's own order.
    queues = [list(g) for g in groups if g]
    log: list[Append] = []
    while queues:
        q = rng.choice(queues[:40])  # about 40 runs in flight
        log.append(q.pop(0))
        if not q:
            queues.remove(q)
    records = [
        Record(seq, a.subject, a.body, None, T0 + dt.timedelta(milliseconds=seq))
        for seq, a in enumerate(log, start=1)
    ]
    # Copies of results and assignments stored again later under new sequences (a worker
    # that re-sent them after the duplicate window), then redeliveries of earlier records.
    copies = [r for r in records if r.subject.endswith((".result", ".assigned"))]
    for copy in rng.sample(copies, 40):
        records.append(Record(len(records) + 1, copy.subject, copy.data, None, copy.time))
    # A redelivery comes after the delivery it repeats (a consumer cannot hand a message out
    # again before it first did): one placed earlier would be a record seen before the run
    # it belongs to exists, which a tail of the log never does, and batchings would differ.
    again = [(rng.randrange(i + 1, len(records) + 1), records[i])
             for i in rng.sample(range(len(records)), 60)]  # fmt: skip
    for at, record in sorted(again, key=lambda pair: pair[0], reverse=True):
        records.insert(at, record)
    return records


async def project(conn: Conn, records: list[Record], batches: list[int]) -> dict[str, Any]:
    """``records`` applied in consecutive batches of the given sizes, into a fresh schema."""
    schema = f"s_{uuid.uuid4().hex[:8]}"
    await migrate(conn, schema)
    start = 0
    for size in batches:
        await apply_records(conn, TENANT, records[start : start + size], schema=schema)
        start += size
    assert start == len(records)
    return await dump_tables(conn, schema)


async def test_one_batch_projects_as_one_by_one(conn: Conn) -> None:
    records = await realistic_batch()
    one_by_one = await project(conn, records, [1] * len(records))
    assert await project(conn, records, [len(records)]) == one_by_one
    rng = random.Random(3)
    sizes: list[int] = []
    while sum(sizes) < len(records):
        sizes.append(min(rng.randint(1, 120), len(records) - sum(sizes)))
    assert await project(conn, records, sizes) == one_by_one

    # Not vacuous: every kind of row, every path.
    runs, steps, attempts = one_by_one["runs"], one_by_one["steps"], one_by_one["attempts"]
    assert len(runs) == 2 * 12 * 10  # every run but the one whose creation Postgres refuses
    assert {r[5] for r in runs} >= {"SUCCEEDED", "FAILED", "CANCELLED", "RUNNING"}
    assert {s[4] for s in steps} >= {"SUCCEEDED", "FAILED", "CANCELLED", "PENDING", "QUEUED"}
    assert {s[4] for s in steps} >= {"RUNNING"}
    assert {a[7] for a in attempts} >= {"SUCCEEDED", "FAILED", "CANCELLED", "LOST", "RUNNING"}
    assert len(one_by_one["step_logs"]) > 100 and len(one_by_one["events"]) == 2 * 12 + 4
    reasons = [r[3] for r in one_by_one["rejections"]]
    assert len(reasons) == 2 * 5
    assert sum("postgres refused the message" in r for r in reasons) == 2


async def test_a_batch_applied_again_in_any_order_changes_nothing(conn: Conn) -> None:
    records = await realistic_batch(seed=11)
    schema = "again"
    await migrate(conn, schema)
    await apply_records(conn, TENANT, records, schema=schema)
    once = await dump_tables(conn, schema)
    await apply_records(conn, TENANT, records[::-1], schema=schema)
    assert await dump_tables(conn, schema) == once
    shuffled = records * 2
    random.Random(5).shuffle(shuffled)
    for i in range(0, len(shuffled), 97):
        await apply_records(conn, TENANT, shuffled[i : i + 97], schema=schema)
    assert await dump_tables(conn, schema) == once


async def test_the_batch_holds_old_and_new_logs() -> None:
    """Both log formats are in the batch: runs whose steps have a ``queued`` and a task, and
    runs whose steps have the task alone."""
    records = await realistic_batch()
    queued = {r.subject.split(".")[3] for r in records if r.subject.endswith(".queued")}
    tasks = {orjson.loads(r.data)["run_id"] for r in records if ".tasks." in r.subject
             and r.data != b"[1]"}  # fmt: skip
    assert queued and tasks - queued
