"""The invariants a chaos scenario must keep, checked against the log and Postgres.

* the log (``eventstore.replay``): at most one ``created``/``finished`` per run, one
  ``step_finished`` per step (on its own or inside the run's ``finished``), one ``queued``
  per step attempt, at most one ``assigned`` and one ``result`` per delivery; every
  submitted run created and finished; every delivery the log knows (by its ``assigned`` or
  its result: a worker appends no ``assigned`` for a step done within its grace, the result
  carries the assignment) says which worker ran it and when it started, ``assigned`` and
  result agreeing on both and ``assigned`` first;
* Postgres: every submitted run present once, terminal and SUCCEEDED, with every step once
  and SUCCEEDED; each step's attempt rows are exactly the deliveries the log holds, with
  the worker and the status the log implies;
* redelivery: each task a stopped worker held comes back as the next delivery; the delay is
  the new delivery's ``started_at`` minus the moment the worker was stopped.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import attrs
import psycopg
from nats.aio.client import Client as NATS

from eventstore import replay
from schemas.codec import decode_as, decode_run_message
from schemas.messages import StepAssigned, StepResult, Task

Key = tuple[str, str, int, int]  # run, step, attempt, delivery
ONCE_PER_RUN = ("created", "finished", "requested")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@attrs.define
class LogView:
    """What the log says about the runs of one tenant."""

    kinds: Counter[tuple[str, str]] = attrs.Factory(Counter)  # (run, kind)
    step_kinds: Counter[tuple[str, str, str]] = attrs.Factory(Counter)  # (run, step, kind)
    queued: Counter[tuple[str, str, int]] = attrs.Factory(Counter)
    assigned: dict[Key, list[StepAssigned]] = attrs.Factory(lambda: defaultdict(list))
    results: dict[Key, list[StepResult]] = attrs.Factory(lambda: defaultdict(list))
    first_seq: dict[tuple[Key, str], int] = attrs.Factory(dict)  # (delivery, kind) -> seq

    def attempts(self) -> set[Key]:
        """Every delivery the log knows: by its ``assigned``, or by its result alone."""
        return set(self.assigned) | set(self.results)

    def taken(self, key: Key) -> tuple[str | None, str, str | None]:
        """(worker id, worker name, started_at) of a delivery, from its ``assigned`` or else
        from the assignment its result carries."""
        if self.assigned.get(key):
            a = self.assigned[key][0]
            return a.worker_id, a.worker_name, a.started_at
        r = self.results[key][0]
        return r.worker_id, r.worker_name, r.started_at

    def unattributed(self) -> list[str]:
        """Deliveries whose worker or start the log does not say, or says two ways."""
        bad = []
        for key in sorted(self.attempts()):
            worker_id, name, started_at = self.taken(key)
            if not name or started_at is None:
                bad.append(f"delivery {key}: no worker name or start in the log")
            if self.assigned.get(key) and self.results.get(key):
                res = self.results[key][0]
                carried = (res.worker_id, res.worker_name, res.started_at)
                if res.started_at is not None and carried != (worker_id, name, started_at):
                    bad.append(f"delivery {key}: assigned says {worker_id, name, started_at}, "
                               f"its result {carried}")  # fmt: skip
                if self.first_seq[(key, "result")] < self.first_seq[(key, "assigned")]:
                    bad.append(f"delivery {key}: assigned after its result")
        return bad

    def duplicated_transitions(self) -> list[str]:
        dups = [f"{k} of run {r} x{n}" for (r, k), n in self.kinds.items() if n > 1]
        dups += [f"{k} of {r}/{s} x{n}" for (r, s, k), n in self.step_kinds.items() if n > 1]
        dups += [f"queued {r}/{s}#{a} x{n}" for (r, s, a), n in self.queued.items() if n > 1]
        dups += [f"assigned {k} x{len(v)}" for k, v in self.assigned.items() if len(v) > 1]
        dups += [f"result {k} x{len(v)}" for k, v in self.results.items() if len(v) > 1]
        return dups

    def expected_attempts(self) -> dict[Key, tuple[str | None, str]]:
        """Every delivery the log knows, with its worker and the status it implies."""
        out: dict[Key, tuple[str | None, str]] = {}
        for key in self.attempts():
            run, step, attempt, delivery = key
            worker = self.taken(key)[0]
            if self.results.get(key):
                res = self.results[key][-1]
                status = "CANCELLED" if res.handed_back else "SUCCEEDED" if res.ok else "FAILED"
            elif any(d > delivery for d in self.deliveries(run, step, attempt)):
                status = "LOST"
            else:
                status = "CANCELLED" if self.kinds[(run, "finished")] else "RUNNING"
            out[key] = (worker, status)
        return out

    def deliveries(self, run: str, step: str, attempt: int) -> list[int]:
        return sorted(d for (r, s, a, d) in self.attempts() if (r, s, a) == (run, step, attempt))

    def handed_back(self) -> int:
        return sum(1 for res in self.results.values() if res[-1].handed_back)

    def double_executions(self) -> int:
        """Steps with more than one successful result: the price of at-least-once."""
        ok = Counter((r, s) for (r, s, _, _), res in self.results.items() if res[-1].ok)
        return sum(1 for n in ok.values() if n > 1)


async def read_log(nc: NATS, tenant: str) -> LogView:
    view = LogView()
    # Filtered here too: eventstore.replay drops a lone filter subject (nats-py replaces it).
    async for rec in replay(nc, tenant, [f"{tenant}.*.runs.>", f"{tenant}.*.tasks.>"]):
        parts = rec.subject.split(".")
        if parts[2] == "tasks":  # a task is its step queued
            task = decode_as(Task, Task.KIND, rec.data)
            view.queued[(task.run_id, task.step, task.attempt)] += 1
            continue
        if parts[2] != "runs" or parts[4] in ("log", "cancel_requested", "retry_scheduled"):
            continue
        run, kind = parts[3:5]
        msg: Any = decode_run_message(kind, rec.data)
        if kind == "step_finished":
            view.step_kinds[(run, msg.step, kind)] += 1
        elif kind in ("assigned", "result"):
            target = view.assigned if kind == "assigned" else view.results
            key = (run, msg.step, msg.attempt, msg.delivery)
            target[key].append(msg)
            view.first_seq.setdefault((key, kind), rec.seq)
        else:
            view.kinds[(run, kind)] += 1
            # A run's end carries the verdicts decided with it: each counts as its step's.
            for verdict in getattr(msg, "steps", ()) if kind == "finished" else ():
                view.step_kinds[(run, verdict.step, "step_finished")] += 1
    return view


async def check_postgres(
    conn: psycopg.AsyncConnection[Any], tenant: str, runs: set[str], steps: Iterable[str]
) -> list[str]:
    """Every submitted run once, SUCCEEDED, with each step once and SUCCEEDED."""
    bad: list[str] = []
    cur = await conn.execute("SELECT id, status FROM runs WHERE tenant = %s", (tenant,))
    rows = await cur.fetchall()
    seen = Counter(r[0] for r in rows)
    bad += [f"run {r} has {n} rows" for r, n in seen.items() if n > 1]
    bad += [f"run {r} in Postgres was never submitted" for r in set(seen) - runs]
    bad += [f"run {r} missing from Postgres" for r in runs - set(seen)]
    bad += [f"run {r} ended {s}" for r, s in rows if s != "SUCCEEDED"]
    cur = await conn.execute(
        "SELECT s.run_id, s.name, s.status FROM steps s JOIN runs r ON r.id = s.run_id"
        " WHERE r.tenant = %s",
        (tenant,),
    )
    per_step = Counter((r, s) for r, s, _ in await cur.fetchall())
    wanted = {(r, s) for r in seen for s in steps}
    bad += [f"step {k} has {n} rows" for k, n in per_step.items() if n > 1]
    bad += [f"step {k} missing from Postgres" for k in wanted - set(per_step)]
    bad += [f"unexpected step {k}" for k in set(per_step) - wanted]
    cur = await conn.execute(
        "SELECT s.run_id, s.name, s.status FROM steps s JOIN runs r ON r.id = s.run_id"
        " WHERE r.tenant = %s AND s.status <> 'SUCCEEDED'",
        (tenant,),
    )
    bad += [f"step {r}/{s} ended {st}" for r, s, st in await cur.fetchall()]
    return bad


async def check_attempts(
    conn: psycopg.AsyncConnection[Any], tenant: str, view: LogView
) -> list[str]:
    """Each step's attempt rows are exactly the deliveries in the log, worker and status."""
    cur = await conn.execute(
        "SELECT a.run_id, a.step, a.attempt, a.delivery, a.worker_id, a.status FROM attempts a"
        " JOIN runs r ON r.id = a.run_id WHERE r.tenant = %s",
        (tenant,),
    )
    rows = {(r, s, a, d): (w, st) for r, s, a, d, w, st in await cur.fetchall()}
    expected = view.expected_attempts()
    bad = [f"attempt {k} in Postgres, not in the log" for k in set(rows) - set(expected)]
    bad += [f"attempt {k} in the log, not in Postgres" for k in set(expected) - set(rows)]
    for key in set(rows) & set(expected):
        if rows[key] != expected[key]:
            bad.append(f"attempt {key}: Postgres has {rows[key]}, the log implies {expected[key]}")
    return bad


def check_log(view: LogView, runs: set[str], steps: Iterable[str]) -> list[str]:
    bad = view.unattributed()
    bad += [f"run {r}: no 'created' in the log" for r in runs if not view.kinds[(r, "created")]]
    bad += [f"run {r}: no 'finished' in the log" for r in runs if not view.kinds[(r, "finished")]]
    for run in runs:
        bad += [
            f"step {run}/{s}: no 'step_finished' in the log"
            for s in steps
            if not view.step_kinds[(run, s, "step_finished")]
        ]
    return bad


@attrs.frozen
class Stop:
    """A worker the harness stopped (``kill -9`` or SIGTERM) at ``at``."""

    worker_name: str
    at: dt.datetime
    how: str


def redelivery_delays(view: LogView, stops: list[Stop]) -> tuple[list[float], list[str]]:
    """Seconds from each stop to the next delivery of every task that worker held."""
    delays: list[float] = []
    bad: list[str] = []
    for stop in stops:
        for key in sorted(view.attempts()):
            run, step, attempt, delivery = key
            _, worker_name, started_at = view.taken(key)
            if worker_name != stop.worker_name or started_at is None:
                continue  # another worker's (a delivery with no start is reported elsewhere)
            if dt.datetime.fromisoformat(started_at) > stop.at:
                continue
            later = [d for d in view.deliveries(run, step, attempt) if d > delivery]
            results = view.results.get(key)
            if not later and results and not results[-1].handed_back:
                continue  # it finished before the stop
            if not later:
                bad.append(f"{stop.how} of {stop.worker_name}: {key} never redelivered")
                continue
            next_start = view.taken((run, step, attempt, later[0]))[2]
            if next_start is not None:
                delays.append((dt.datetime.fromisoformat(next_start) - stop.at).total_seconds())
    return delays, bad
