"""Moved tasks (dispatcher.moved): a step placed on a worker that went is offered again,
once per loss, through the gates; what is over is not; a HARD sticky run's step is held
naming the worker and fails at its schedule timeout; the gone worker's late messages decide
nothing; and folding the log again gives the same state."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from dispatcher import State, complete, due, fold, step
from dispatcher.decide import Output
from dispatcher.moved import moves
from dispatcher.policy import iso
from dispatcher.step import settle
from dispatcher.tally import observe
from dispatcher.workers import Workers
from schemas import (
    RunRequested,
    RunStatus,
    Scope,
    StepAssigned,
    StepDef,
    StepResult,
    Task,
    WorkerHeartbeat,
    WorkerStatus,
    WorkflowDef,
    parse,
)
from schemas.holds import HoldKind, StepHeld
from schemas.labels import DesiredWorkerLabel, StickyStrategy
from schemas.messages import RunFinished

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
S = Scope("acme")
MAX = 1024 * 1024
GPU = {"gpu": DesiredWorkerLabel("a100", required=True)}


def wf(sticky: StickyStrategy | None = None, labels: bool = True) -> WorkflowDef:
    desired = GPU if labels else {}
    return WorkflowDef(
        name="wf",
        version="v1",
        steps=(
            StepDef("a", desired_worker_labels=desired),
            StepDef("b", ("a",), desired_worker_labels=desired),
            StepDef("c", ("b",), desired_worker_labels=desired),
        ),
        schedule_timeout_s=30.0,
        sticky=sticky,
    )


@attrs.define
class World:
    """The pure dispatcher, its log, and a registry of live workers it is told about."""

    workflow: WorkflowDef
    state: State = attrs.Factory(State)
    log: list[tuple[str, Any]] = attrs.Factory(list)
    now: dt.datetime = T0

    def __attrs_post_init__(self) -> None:
        self.feed(self.workflow)

    def beat(self, worker_id: str, status: WorkerStatus = WorkerStatus.ACTIVE) -> None:
        at = iso(self.now)
        actions = tuple(f"wf:{s.name}" for s in self.workflow.steps)
        hb = WorkerHeartbeat(
            worker_id, worker_id, actions, 4, 0, status, iso(T0), at=at,
            labels={"gpu": "a100"}, directed=True,
        )  # fmt: skip
        self.state.workers.heard(S, hb)
        self.state.workers.consumer_ready(S, worker_id)

    def record(self, outputs: list[Output]) -> list[Any]:
        for o in outputs:
            self.log.append((o.subject, o.message))
        return [o.message for o in outputs]

    def feed(self, message: Any) -> list[Any]:
        if isinstance(message, WorkflowDef):
            subject = S.workflow(message.name)
        else:
            subject = S.run(message.run_id, message.KIND)
        self.log.append((subject, message))
        return self.record(step(self.state, S, message, self.now, MAX))

    def moves(self) -> list[Any]:
        out: list[Any] = []
        for decision in moves(self.state, self.now):
            out += self.record(settle(self.state, None, None, decision, MAX, self.now))
        return out

    def tick(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)

    def task_of(self, name: str) -> Task:
        return [m for _s, m in self.log if isinstance(m, Task) and m.step == name][-1]

    def run(self, worker: str, name: str, delivery: int, *, ok: bool = True) -> list[Any]:
        task = self.task_of(name)
        return self.feed(
            StepResult(
                task.run_id, name, task.attempt, delivery, worker, ok=ok,
                output={"by": worker} if ok else None, error=None if ok else "boom",
                finished_at=iso(self.now), worker_name=worker, started_at=iso(self.now),
            )
        )  # fmt: skip

    def assign(self, worker: str, name: str, delivery: int) -> None:
        task = self.task_of(name)
        self.feed(StepAssigned(task.run_id, name, task.attempt, delivery, worker, worker))

    def rebuilt(self) -> State:
        state = State()
        for subject, message in self.log:
            fold(state, parse(subject).scope, message)
        return state


def started(world: World, *workers: str) -> str:
    """Both workers beat; a run is requested; its first task is placed: on which worker."""
    for w in workers:
        world.beat(w)
    out = world.feed(RunRequested("r1", "wf", {}, requested_at=iso(T0)))
    (task,) = [m for m in out if isinstance(m, Task)]
    assert task.worker_id in workers
    return task.worker_id


def test_a_dead_workers_running_step_moves_once_to_another_worker_with_the_label() -> None:
    world = World(wf())
    x = started(world, "wa", "wb")
    y = "wb" if x == "wa" else "wa"
    world.assign(x, "a", 1)
    world.tick(3)
    world.beat(y)
    assert world.moves() == []  # x is still alive (3 s since its beat)
    world.tick(4)  # 7 s: x is presumed dead, y beat 4 s ago
    (moved,) = world.moves()
    assert isinstance(moved, Task)
    assert (moved.attempt, moved.moves, moved.moved_from) == (1, 1, x)
    assert (moved.worker_id, moved.delivery_offset) == (y, 1)
    assert world.log[-1][0] == S.directed_task(y, "wf", "a")
    assert world.moves() == []  # once per loss
    a = world.state.runs["r1"].steps["a"]
    assert (a.status, a.assigned, a.attempt, a.worker, a.lost) == (
        RunStatus.QUEUED, False, 1, y, 1,
    )  # fmt: skip
    # The dead worker's late result, of the delivery it lost, decides nothing.
    assert world.run(x, "a", 1) == []
    assert world.state.runs["r1"].steps["a"].status is RunStatus.QUEUED
    out = world.run(y, "a", 2)
    assert world.state.runs["r1"].steps["a"].status is RunStatus.SUCCEEDED
    assert [m.step for m in out if isinstance(m, Task)] == ["b"]
    assert world.rebuilt() == world.state


def test_steps_that_ended_or_were_never_placed_do_not_move() -> None:
    world = World(wf(labels=False))  # nothing placed: the shared queue
    world.beat("wa")
    world.feed(RunRequested("r1", "wf", {}, requested_at=iso(T0)))
    assert world.task_of("a").worker_id is None
    world.tick(10)
    assert world.moves() == []
    world = World(wf())
    x = started(world, "wa", "wb")
    world.run(x, "a", 1)  # a is over; b is placed
    b = world.task_of("b")
    world.run(b.worker_id or "", "b", 1)
    world.tick(10)  # both workers gone
    before = len(world.log)
    assert [m.step for m in world.moves()] == ["c"]  # only c, not yet taken, moves
    held = world.log[-1][1]
    assert isinstance(held, StepHeld) and held.kind is HoldKind.LABELS  # nobody left
    assert len(world.log) == before + 1
    assert world.moves() == []  # held: no task out, nothing more to move


def test_a_stopping_worker_keeps_its_running_step_until_it_hands_it_back() -> None:
    world = World(wf())
    x = started(world, "wa", "wb")
    y = "wb" if x == "wa" else "wa"
    world.assign(x, "a", 1)
    world.tick(1)
    world.beat(x, WorkerStatus.STOPPING)
    world.beat(y)
    assert world.moves() == []  # running there: its grace period
    world.feed(
        StepResult(
            "r1", "a", 1, 1, x, ok=False, error="handed back", handed_back=True,
            finished_at=iso(world.now),
        )
    )  # fmt: skip
    (moved,) = world.moves()
    assert (moved.worker_id, moved.moved_from, moved.delivery_offset) == (y, x, 1)
    assert world.rebuilt() == world.state


def test_soft_sticky_runs_follow_their_moved_task_to_the_new_worker() -> None:
    world = World(wf(StickyStrategy.SOFT, labels=False))
    x = started(world, "wa", "wb")
    y = "wb" if x == "wa" else "wa"
    world.run(x, "a", 1)
    assert world.task_of("b").worker_id == x  # sticky
    world.assign(x, "b", 1)
    world.tick(7)
    world.beat(y)
    (moved,) = world.moves()
    assert moved.worker_id == y
    assert world.state.runs["r1"].worker == y
    world.beat(x)  # x comes back: the run stays with y, where b ran
    world.run(y, "b", 2)
    assert world.task_of("c").worker_id == y
    world.run(y, "c", 1)
    assert "r1" in world.state.done
    assert world.rebuilt() == world.state


def test_hard_sticky_holds_the_moved_step_naming_the_worker_then_fails_the_run() -> None:
    world = World(wf(StickyStrategy.HARD, labels=False))
    x = started(world, "wa", "wb")
    y = "wb" if x == "wa" else "wa"
    world.run(x, "a", 1)
    world.assign(x, "b", 1)
    world.tick(7)
    world.beat(y)
    (held,) = world.moves()
    assert isinstance(held, StepHeld)
    assert (held.kind, held.attempt, held.moves, held.moved_from) == (HoldKind.STICKY, 1, 1, x)
    assert f"worker {x}" in held.reason and "is gone (sticky HARD)" in held.reason
    b = world.state.runs["r1"].steps["b"]
    assert (b.status, b.assigned, b.held) == (RunStatus.QUEUED, False, (HoldKind.STICKY,))
    # A late assignment (and result) of the worker it moved off make it neither running
    # nor done.
    world.assign(x, "b", 2)
    assert world.run(x, "b", 2) == []
    assert world.state.runs["r1"].steps["b"].status is RunStatus.QUEUED
    assert world.moves() == []
    assert world.rebuilt() == world.state
    # A restart: the held task is made again (same dedup id) and held again, no new record.
    restarted = world.rebuilt()
    restarted.workers = world.state.workers
    again = [o for d in complete(restarted, world.now) for o in d]
    assert [o.msg_id for o in again] == ["r1:b:1:task:moved:1"]
    assert settle(restarted, None, None, again, MAX, world.now) == []
    # The schedule timeout (30 s from the hold) fails the step, and the run, saying why.
    world.tick(31)
    out: list[Any] = []
    for decision in due(world.state, world.now):
        out += world.record(settle(world.state, None, None, decision, MAX, world.now))
    (finished,) = [m for m in out if isinstance(m, RunFinished)]
    assert finished.status is RunStatus.FAILED
    assert finished.error is not None and f"worker {x}" in finished.error
    assert "is gone (sticky HARD)" in finished.error
    assert world.rebuilt() == world.state


def test_hard_sticky_step_goes_back_to_its_worker_when_it_returns() -> None:
    world = World(wf(StickyStrategy.HARD, labels=False))
    x = started(world, "wa", "wb")
    world.run(x, "a", 1)
    world.assign(x, "b", 1)
    world.tick(7)
    (held,) = world.moves()
    assert isinstance(held, StepHeld)
    world.beat(x)  # back (a partition healed): the held task goes to it again
    world.state.holds.dirty = True
    world.record(settle(world.state, None, None, [], MAX, world.now))
    task = world.task_of("b")
    assert (task.worker_id, task.moves, task.delivery_offset) == (x, 1, 1)
    world.run(x, "b", 2)
    assert world.state.runs["r1"].steps["b"].status is RunStatus.SUCCEEDED
    assert world.rebuilt() == world.state


def test_a_move_is_counted_moved_not_created_again() -> None:
    world = World(wf())
    x = started(world, "wa", "wb")
    world.assign(x, "a", 1)
    world.tick(7)
    world.beat("wb" if x == "wa" else "wa")
    (decision,) = moves(world.state, world.now)
    counts = observe(world.state, None, decision).counts
    assert counts == {("moved", "default", "wf"): 1}


def test_a_fresh_registry_moves_nothing_until_every_live_worker_could_have_beaten() -> None:
    world = World(wf())
    x = started(world, "wa", "wb")
    y = "wb" if x == "wa" else "wa"
    world.assign(x, "a", 1)
    # A process started, its liveness stream not read: it has heard only y so far.
    world.state.workers = Workers(since=world.now)
    world.beat(y)
    world.tick(2)
    assert world.moves() == []  # x may be alive, its beat not heard yet
    world.tick(5)
    world.beat(y)
    (moved,) = world.moves()
    assert (moved.worker_id, moved.moved_from) == (y, x)
