"""A tenant's dispatch split into partitions (``dispatcher.partition``) decides as one
dispatcher would: every partition reads one shared log at its own pace, decides on the
inputs it owns (``dispatcher.owning.decides``) and folds the rest, and appends its
decisions to the same log, as the service does.

Whatever the interleaving of partitions, workers, requests, events, child spawns,
cancellations and time:

- each run's history is written by one partition, its owner (a parent's cancellation asks
  a child another partition owns to end with a ``cancel_requested``, which that owner
  decides);
- no run is created twice, nor ends twice; a run of a workflow with a concurrency key is
  admitted only while its key has room (at most ``max_runs`` in flight);
- once every partition has read the whole log, each holds the state a rebuild from the log
  gives, and every run ends (workers answering, time passing).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import Event, Output, State, complete, due, fold, step
from dispatcher.owning import decides
from dispatcher.partition import Partition, coordinated
from dispatcher.policy import iso
from dispatcher.step import settle
from schemas import (
    RunCancelRequested,
    RunCreated,
    RunRequested,
    RunStatus,
    StepDef,
    StepResult,
    Task,
    Trigger,
    TriggerKind,
    WorkflowDef,
    parse,
)
from schemas.children import child_run_id
from schemas.concurrency import ConcurrencyDef
from schemas.messages import RunFinished
from tests.property.history import SCOPE

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAX_BYTES = 1 << 20
INPUT_KINDS = {"requested", "result", "assigned", "cancel_requested", "waiting"}
PLAIN = WorkflowDef(
    name="plain",
    version="v1",
    steps=(
        StepDef("a", retries=2, backoff_factor=2.0),  # its retries come due with time
        StepDef("b", parents=("a",)),
        StepDef("c", parents=("a",)),
    ),
    on_events=("go",),
    schedule_timeout_s=30.0,  # a task nobody takes times out, when time passes
)
KEYED = WorkflowDef(
    name="keyed",
    version="v1",
    steps=(StepDef("k"),),
    on_events=("go",),
    concurrency=ConcurrencyDef("'one'", max_runs=1),
)
PARENT = WorkflowDef(name="parent", version="v1", steps=(StepDef("fan", retries=1),))
CHILD = WorkflowDef(name="child", version="v1", steps=(StepDef("work"),))
WORKFLOWS = (PLAIN, KEYED, PARENT, CHILD)
PURE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@attrs.frozen
class Logged:
    seq: int
    subject: str
    message: Any
    writer: int | None  # the partition that appended it; None: a client or a worker


class Part:
    """One partition's dispatcher: its state, how far it has read, what it appended."""

    def __init__(self, partition: Partition) -> None:
        self.state = State()
        self.state.partition = partition
        self.read = 0  # log entries read (acked)
        self.stored: set[int] = set()  # seqs of its own outputs, folded when decided
        self.down = False  # crashed, not started again yet


class Tenant:
    def __init__(self, count: int) -> None:
        self.count = count
        self.parts = [Part(Partition(i, count)) for i in range(count)]
        self.log: list[Logged] = []
        self.ids: set[str] = set()  # dedup ids stored (JetStream's duplicate window)
        self.now = T0
        self.answered: set[tuple[str, str, int]] = set()
        for wf in WORKFLOWS:
            self.append(SCOPE.workflow(wf.name), wf)

    def append(
        self, subject: str, message: Any, writer: int | None = None, msg_id: str = ""
    ) -> int:
        if msg_id:
            if msg_id in self.ids:
                return 0  # a duplicate: the log keeps the first
            self.ids.add(msg_id)
        seq = 10 * (len(self.log) + 1)
        self.log.append(Logged(seq, subject, message, writer))
        return seq

    def store(self, index: int, outputs: list[Output]) -> None:
        part = self.parts[index]
        for o in outputs:
            seq = self.append(o.subject, o.message, index, o.msg_id)
            if seq:
                part.stored.add(seq)

    # -- a partition's loop ------------------------------------------------------------------
    def advance(self, index: int, n: int, crash_after: int | None = None) -> None:
        """Partition ``index`` reads up to ``n`` more entries of the log. ``crash_after``:
        it dies after appending that many outputs of a decision (the input not acked), and
        starts again."""
        part = self.parts[index]
        if part.down:
            self.restart(index)
        for _ in range(n):
            if part.read >= len(self.log):
                return
            entry = self.log[part.read]
            part.read += 1
            if entry.seq in part.stored:
                continue
            subject, message = entry.subject, entry.message
            is_input = isinstance(message, (WorkflowDef, Event)) or (
                ".runs." in subject and subject.rsplit(".", 1)[1] in INPUT_KINDS
            )
            if is_input and decides(part.state, SCOPE, subject, message):
                outputs = step(part.state, SCOPE, message, self.now, MAX_BYTES, entry.seq)
                if crash_after is not None and len(outputs) > crash_after:
                    self.store(index, outputs[:crash_after])
                    part.read -= 1  # not acked: delivered again
                    part.down = True  # until it next runs: the others go on meanwhile
                    return
                self.store(index, outputs)
            else:
                fold(part.state, parse(subject).scope, message, entry.seq)

    def tick(self, index: int, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)
        if self.parts[index].down:
            self.restart(index)
        state = self.parts[index].state
        if state.holds.due(self.now):
            self.store(index, settle(state, None, None, [], MAX_BYTES, self.now))
        for decided in due(state, self.now):
            self.store(index, settle(state, None, None, decided, MAX_BYTES, self.now))

    def restart(self, index: int) -> None:
        """Partition ``index`` starts again, as the service does: its state rebuilt from
        the whole log, inputs after its ack floor read again, and what the log implies but
        does not hold (a decision cut short) completed: for its own runs only."""
        part = self.parts[index]
        part.state = self.truth()
        part.state.partition = Partition(index, self.count)
        part.stored.clear()
        part.down = False
        for decided in complete(part.state, self.now):
            self.store(index, settle(part.state, None, None, decided, MAX_BYTES, self.now))

    def catch_up(self) -> None:
        while any(p.read < len(self.log) for p in self.parts):
            for i in range(self.count):
                self.advance(i, len(self.log))

    # -- the world around it ---------------------------------------------------------------
    def truth(self) -> State:
        state = State()
        for entry in self.log:
            fold(state, parse(entry.subject).scope, entry.message, entry.seq)
        return state

    def request(self, workflow: str, i: int) -> None:
        run_id = f"{workflow}-{i}"
        self.append(SCOPE.run(run_id, "requested"), RunRequested(run_id, workflow, {"i": i}))

    def event(self) -> None:
        seq = 10 * (len(self.log) + 1)
        self.append(SCOPE.event("go"), Event("go", seq, {"n": seq}))

    def in_flight(self) -> list[tuple[str, str, int]]:
        """The tasks offered and not answered whose step is in flight, in log order."""
        truth = self.truth()
        out = []
        for entry in self.log:
            if not isinstance(entry.message, Task):
                continue
            t = entry.message
            key = (t.run_id, t.step, t.attempt)
            run = truth.runs.get(t.run_id)
            s = None if run is None else run.steps.get(t.step)
            if key in self.answered or s is None or s.attempt != t.attempt or s.terminal:
                continue
            out.append(key)
        return out

    def work(self, pick: int, ok: bool) -> None:
        tasks = self.in_flight()
        if not tasks:
            return
        run_id, name, attempt = tasks[pick % len(tasks)]
        self.answered.add((run_id, name, attempt))
        result = StepResult(
            run_id, name, attempt, 1, "w1", ok=ok, output={"ok": 1} if ok else None,
            error=None if ok else "boom", finished_at=iso(self.now), worker_name="w1",
            started_at=iso(self.now),
        )  # fmt: skip
        self.append(SCOPE.run(run_id, "result"), result)

    def spawn(self, pick: int, key: int) -> None:
        fans = [t for t in self.in_flight() if t[1] == "fan"]
        if not fans:
            return
        parent = fans[pick % len(fans)][0]
        trigger = Trigger(TriggerKind.CHILD, run_id=parent, step="fan", key=str(key))
        run_id = child_run_id(SCOPE, parent, "fan", str(key))
        req = RunRequested(run_id, "child", {}, trigger=trigger)
        self.append(SCOPE.run(run_id, "requested"), req)

    def cancel(self, pick: int, workflow: str | None = None) -> None:
        created = [
            e.message.run_id
            for e in self.log
            if isinstance(e.message, RunCreated) and workflow in (None, e.message.workflow)
        ]
        if workflow == "parent":  # a parent with children in flight, when there is one
            truth = self.truth()
            created = [r for r in created if r in truth.runs and truth.runs[r].children] or created
        if created:
            run_id = created[pick % len(created)]
            self.append(SCOPE.run(run_id, "cancel_requested"), RunCancelRequested(run_id, "user"))

    def drain(self) -> None:
        for _ in range(200):
            self.catch_up()
            if not self.truth().runs:
                return
            tasks = self.in_flight()
            if tasks:
                self.work(0, True)
                continue
            for i in range(self.count):  # retries come due, runs waiting for a key move on
                self.tick(i, 0.0 if i else 60.0)
        raise AssertionError(f"runs not over: {sorted(self.truth().runs)}")


def owner(count: int, created: RunCreated) -> int:
    steps = [s for s in (*created.steps, created.on_failure, created.on_success) if s is not None]
    flow = coordinated(created.concurrency, created.priority, steps)
    return Partition(0, count).owner(created.run_id, flow)


REQUESTABLE = ["plain", "keyed", "parent", "nope"]  # "nope": no such workflow, rejected
actions = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.sampled_from(REQUESTABLE), st.integers(0, 5)),
        st.tuples(st.just("event"), st.just(0), st.just(0)),
        st.tuples(st.just("advance"), st.integers(0, 3), st.integers(1, 8)),
        st.tuples(st.just("work"), st.integers(0, 9), st.booleans()),
        st.tuples(st.just("spawn"), st.integers(0, 9), st.integers(0, 3)),
        st.tuples(st.just("spawn"), st.integers(0, 9), st.integers(0, 3)),
        st.tuples(st.just("catch_up"), st.just(0), st.just(0)),
        st.tuples(st.just("restart"), st.integers(0, 3), st.just(0)),
        st.tuples(st.just("crash"), st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.just("cancel"), st.integers(0, 9), st.sampled_from([None, "parent"])),
        st.tuples(st.just("cancel"), st.integers(0, 9), st.just("parent")),
        st.tuples(st.just("tick"), st.integers(0, 3), st.sampled_from([0.5, 5.0, 60.0])),
        st.tuples(st.just("tick"), st.integers(0, 3), st.sampled_from([2.0, 4.0])),
    ),
    max_size=50,
)  # fmt: skip


@PURE
@given(st.integers(2, 4), actions)
def test_partitions_decide_as_one_dispatcher(count: int, script: list[tuple[Any, ...]]) -> None:
    tenant = Tenant(count)
    for workflow, i in (("parent", 0), ("parent", 1), ("plain", 0), ("keyed", 0), ("keyed", 1)):
        tenant.request(workflow, i)  # runs to drive, whatever the script
    tenant.catch_up()
    for kind, a, b in script:
        if kind == "request":
            tenant.request(a, b)
        elif kind == "event":
            tenant.event()
        elif kind == "advance":
            tenant.advance(a % count, b)
        elif kind == "work":
            tenant.work(a, b)
        elif kind == "spawn":
            tenant.spawn(a, b)
        elif kind == "cancel":
            tenant.cancel(a, b)
        elif kind == "catch_up":
            tenant.catch_up()
        elif kind == "restart":
            tenant.restart(a % count)
        elif kind == "crash":
            tenant.advance(a % count, 8, crash_after=b)
        else:
            tenant.tick(a % count, b)
    tenant.drain()
    tenant.catch_up()

    created = {e.message.run_id: e.message for e in tenant.log if isinstance(e.message, RunCreated)}
    assert all(n == 1 for n in Counter(
        e.message.run_id for e in tenant.log if isinstance(e.message, RunCreated)
    ).values())  # fmt: skip
    ends = Counter(e.message.run_id for e in tenant.log if isinstance(e.message, RunFinished))
    assert all(n == 1 for n in ends.values()), ends
    assert set(ends) == set(created), "every run created ended once"
    # One writer per run: its owner.
    for entry in tenant.log:
        if entry.writer is None or isinstance(entry.message, RunCancelRequested):
            continue
        run_id = getattr(entry.message, "run_id", None)
        if run_id in created:
            assert entry.writer == owner(count, created[run_id]), (
                entry,
                owner(count, created[run_id]),
            )
    # A key with max_runs 1: its runs never overlap in the log.
    live: set[str] = set()
    for entry in tenant.log:
        m = entry.message
        if isinstance(m, Task) and m.workflow == "keyed":
            live.add(m.run_id)
        elif isinstance(m, RunFinished) and m.run_id in live:
            live.discard(m.run_id)
        assert len(live) <= 1, f"two runs of one key in flight: {live}"
    truth = tenant.truth()
    for part in tenant.parts:
        assert part.state == truth
    assert not truth.runs
    # A run with a concurrency key is partition 0's: read off the log, not the rule.
    keyed = {r for r, c in created.items() if c.workflow == "keyed"}
    assert {e.writer for e in tenant.log if getattr(e.message, "run_id", None) in keyed} <= {
        None,
        0,
    }


def test_the_partitions_share_plain_runs() -> None:
    """Plain runs spread over the partitions; each partition appends only its own."""
    tenant = Tenant(3)
    for i in range(30):
        tenant.request("plain", i)
    tenant.drain()
    writers = Counter(e.writer for e in tenant.log if isinstance(e.message, RunFinished))
    assert set(writers) == {0, 1, 2}, writers
    assert sum(writers.values()) == 30


def test_a_parent_cancelled_takes_a_child_of_another_partition_with_it() -> None:
    tenant = Tenant(2)
    for i in itertools.count():
        parent = f"parent-{i}"
        kid = child_run_id(SCOPE, parent, "fan", "0")
        if Partition(0, 2).owner(parent, False) != Partition(0, 2).owner(kid, False):
            break
    tenant.request("parent", i)
    tenant.catch_up()
    tenant.spawn(0, 0)
    tenant.catch_up()
    assert kid in tenant.truth().runs
    tenant.cancel(0)  # the parent: the first run created
    tenant.catch_up()
    truth = tenant.truth()
    assert not truth.runs
    asks = [
        e for e in tenant.log if isinstance(e.message, RunCancelRequested) and e.writer is not None
    ]
    assert [a.message.run_id for a in asks] == [kid]
    assert asks[0].writer == Partition(0, 2).owner(parent, False)
    finished = {e.message.run_id: e for e in tenant.log if isinstance(e.message, RunFinished)}
    assert finished[kid].message.status is RunStatus.CANCELLED
    assert finished[kid].writer == Partition(0, 2).owner(kid, False)
    assert "its parent run" in (finished[kid].message.error or "")
