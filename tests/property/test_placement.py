"""Placement (``dispatcher.placing``) under arbitrary runs, results, waits, crashes and
restarts, over arbitrary sets of live workers, some of which die as time passes: a HARD
sticky run never has a task placed on two workers; every placed task went to a worker live
when it was placed that takes directed tasks, has the step and satisfies its required
labels; a task placed on a worker that died is moved (``dispatcher.moved``) at most once per
loss, off that worker, to a live one or held; nothing is lost (every run ends, held steps
by their schedule timeout); and the state rebuilt from the log (the runs' workers included)
is the live one."""

from __future__ import annotations

import datetime as dt
import importlib
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import State
from dispatcher.holds import Verdict
from dispatcher.placement import fits
from dispatcher.placing import placement_gate
from dispatcher.state import RunState, StepState
from dispatcher.workers import Workers
from schemas import Task, WorkerHeartbeat, WorkerStatus, WorkflowDef
from schemas.labels import DesiredWorkerLabel, StickyStrategy
from tests.property.harness import T0, Sim, rebuild
from tests.property.history import SCOPE
from tests.property.strategies import NAMES, Action, Outcome, drain_outcomes, scripts, workflows

dstep = importlib.import_module("dispatcher.step")
PURE = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@attrs.frozen
class Spec:
    worker_id: str
    gpu: bool
    slots: int
    steps: frozenset[str]
    lasting: bool = True  # beats throughout; else its last beat is at T0 (dead after 6 s)


specs = st.lists(
    st.builds(
        Spec,
        st.sampled_from(["w0", "w1", "w2", "w3"]),
        st.booleans(),
        st.integers(1, 3),
        st.frozensets(st.sampled_from(NAMES), min_size=3),
        st.booleans(),
    ),
    max_size=4,
    unique_by=lambda s: s.worker_id,
)


def registry(workers: list[Spec], wf: WorkflowDef) -> Workers:
    reg = Workers()
    for s in workers:
        # A lasting worker's beat is dated far ahead: it counts as live all along.
        at = (T0 + dt.timedelta(days=365 if s.lasting else 0)).isoformat()
        actions = (*(f"{wf.name}:{n}" for n in sorted(s.steps)), f"{wf.name}:x")
        beat = WorkerHeartbeat(
            s.worker_id, s.worker_id, actions, s.slots, 0, WorkerStatus.ACTIVE, at, at=at,
            labels={"gpu": "a100"} if s.gpu else {}, directed=True,
        )  # fmt: skip
        reg.heard(SCOPE, beat)
        reg.consumer_ready(SCOPE, s.worker_id)
    return reg


@contextmanager
def placed_over(reg: Workers) -> Iterator[None]:
    """The gates, placement's over ``reg`` (the service sets its registry on every state it
    restores; so does this, around the gate)."""

    def gate(state: State, run: RunState, step: StepState, task: Task, now: dt.datetime) -> Verdict:
        state.workers = reg
        return placement_gate(state, run, step, task, now)

    saved = dstep.GATES
    # The other gates as they are (the workflows may use rate limits): placement last.
    dstep.GATES = (*(g for g in saved if g is not placement_gate), gate)
    try:
        yield
    finally:
        dstep.GATES = saved


GPU = {"gpu": DesiredWorkerLabel("a100", required=True)}


@PURE
@given(
    workflows(),
    st.sampled_from(list(StickyStrategy)) | st.none(),
    st.frozensets(st.sampled_from(NAMES)),
    specs,
    scripts,
    drain_outcomes,
)
def test_placed_tasks_keep_the_rules_and_hard_sticky_runs_stay_on_one_worker(
    wf: WorkflowDef,
    sticky: StickyStrategy | None,
    wanting_gpu: frozenset[str],
    workers: list[Spec],
    script: list[Action],
    answers: list[Outcome],
) -> None:
    check(wf, sticky, wanting_gpu, workers, script, answers, [])


# Workers that run every step (placement always finds one while any lives).
all_steps = st.lists(
    st.builds(
        Spec,
        st.sampled_from(["w0", "w1", "w2", "w3"]),
        st.booleans(),
        st.integers(1, 3),
        st.just(frozenset(NAMES)),
        st.booleans(),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda s: s.worker_id,
)
# Workers lost mid-script: (before which action, which worker).
LOSSES = st.lists(
    st.tuples(st.integers(0, 8), st.sampled_from(["w0", "w1", "w2", "w3"])), min_size=1, max_size=3
)


@PURE
@given(
    workflows(),
    st.sampled_from(list(StickyStrategy)),  # every task placed
    st.frozensets(st.sampled_from(NAMES)),
    all_steps,
    scripts,
    drain_outcomes,
    LOSSES,
)
def test_tasks_of_workers_lost_mid_run_move_once_and_keep_the_rules(
    wf: WorkflowDef,
    sticky: StickyStrategy | None,
    wanting_gpu: frozenset[str],
    workers: list[Spec],
    script: list[Action],
    answers: list[Outcome],
    losses: list[tuple[int, str]],
) -> None:
    check(wf, sticky, wanting_gpu, workers, script, answers, losses)


def lose(reg: Workers, worker_id: str) -> None:
    """The worker's last beat: ``STOPPED`` (gone at once, as a SIGKILL is after 6 s)."""
    known = reg.get(SCOPE, worker_id, T0)
    if known is not None:
        at = (dt.datetime.fromisoformat(known.beat.at) + dt.timedelta(seconds=1)).isoformat()
        reg.heard(SCOPE, attrs.evolve(known.beat, status=WorkerStatus.STOPPED, at=at))


def check(
    wf: WorkflowDef,
    sticky: StickyStrategy | None,
    wanting_gpu: frozenset[str],
    workers: list[Spec],
    script: list[Action],
    answers: list[Outcome],
    losses: list[tuple[int, str]],
) -> None:
    steps = tuple(
        attrs.evolve(s, desired_worker_labels=GPU if s.name in wanting_gpu else {})
        for s in wf.steps
    )
    wf = attrs.evolve(wf, steps=steps, sticky=sticky)
    reg = registry(workers, wf)
    base = registry(workers, wf)  # the beats before any loss
    by_id = {s.worker_id: s for s in workers}
    lost_at: dict[str, int] = {}  # worker id -> the first decision made after its loss
    with placed_over(reg):
        sim = Sim(wf, reg)
        for i, action in enumerate([*script, None]):
            # (a loss placed past the script's end comes before the drain)
            for _at, worker_id in [x for x in losses if min(x[0], len(script)) == i]:
                lost_at.setdefault(worker_id, len(sim.decisions))
                lose(reg, worker_id)
                sim.tick(0)  # the service's next tick: the moves
            if action is not None:
                sim.act(action)
        sim.drain(answers)
        assert not sim.state.runs and not sim.state.holds.tasks
        assert rebuild(sim.log) == sim.state

    def alive(worker_id: str, index: int, now: dt.datetime) -> bool:
        lost = lost_at.get(worker_id)
        return base.get(SCOPE, worker_id, now) is not None and (lost is None or index < lost)

    placed: dict[str, set[str]] = defaultdict(set)
    moved: set[tuple[object, ...]] = set()
    for index, decision in enumerate(sim.decisions):
        for out in decision.outputs:
            m = out.message
            moved_off = getattr(m, "moved_from", None)
            if moved_off is not None:  # a move: off a worker gone by then, once per loss
                assert not alive(moved_off, index, decision.now), out
                wakes = len(m.wakes) if isinstance(m, Task) else m.wakes
                kind = getattr(m, "kind", None)  # a moved task held: once per kind
                loss = (type(m), m.run_id, m.step, m.attempt, wakes, kind, moved_off)
                assert loss not in moved, f"moved twice off {moved_off}: {out}"
                moved.add(loss)
            if isinstance(m, Task) and m.worker_id is not None:
                assert alive(m.worker_id, index, decision.now), f"placed on a gone worker: {out}"
    for entry in sim.log:
        task = entry.message
        if not isinstance(task, Task):
            continue
        desired = wf.step(task.step).desired_worker_labels if task.step in NAMES else {}
        if task.worker_id is None:
            assert not desired, f"a task wanting labels went to the shared queue: {task}"
            assert sticky is not StickyStrategy.HARD, f"a HARD run's task was not placed: {task}"
            assert entry.subject == SCOPE.task(task.workflow, task.step)
            continue
        assert entry.subject == SCOPE.directed_task(task.worker_id, task.workflow, task.step)
        spec = by_id[task.worker_id]
        assert task.step in spec.steps or task.step not in NAMES
        worker = base.get(SCOPE, task.worker_id, T0)
        assert worker is not None and fits(worker, desired)
        assert task.moved_from != task.worker_id
        placed[task.run_id].add(task.worker_id)
    if sticky is StickyStrategy.HARD:
        assert all(len(ws) == 1 for ws in placed.values()), placed
