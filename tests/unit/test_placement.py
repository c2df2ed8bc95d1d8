"""Placement (dispatcher.placement): required labels, weights, comparators, the random
spread among equals, sticky SOFT falling back and HARD never going elsewhere."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.placement import SHARED, Placed, Wait, fits, place, score
from dispatcher.workers import LiveWorker
from schemas import WorkerHeartbeat, WorkerStatus
from schemas.labels import DesiredWorkerLabel as D
from schemas.labels import StickyStrategy
from schemas.labels import WorkerLabelComparator as C

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).isoformat()


def w(
    worker_id: str,
    labels: dict[str, str | int] | None = None,
    *,
    slots: int = 2,
    running: int = 0,
    sent: int = 0,
    directed: bool = True,
    actions: tuple[str, ...] = ("wf:s",),
) -> LiveWorker:
    beat = WorkerHeartbeat(
        worker_id,
        worker_id,
        actions,
        slots,
        running,
        WorkerStatus.ACTIVE,
        T0,
        at=T0,
        labels=labels or {},
        directed=directed,
    )
    return LiveWorker(beat, sent, ready=True)


GPU = {"gpu": D("a100", required=True)}


def test_no_labels_and_no_sticky_go_to_the_shared_queue() -> None:
    assert place([w("a")], "wf", "s", {}) is SHARED


def test_a_required_label_picks_only_workers_that_have_it() -> None:
    workers = [w("cpu"), w("gpu", {"gpu": "a100"}), w("h", {"gpu": "h100"})]
    for seed in range(20):
        assert place(workers, "wf", "s", GPU, seed=str(seed)) == Placed("gpu")


def test_no_worker_with_the_required_label_waits_naming_it() -> None:
    got = place([w("cpu"), w("h", {"gpu": "h100"})], "wf", "s", GPU)
    assert got == Wait("labels", "no live worker has gpu == 'a100' (required)")


def test_workers_that_take_no_directed_tasks_or_lack_the_step_are_not_candidates() -> None:
    workers = [
        w("old", {"gpu": "a100"}, directed=False),
        w("other", {"gpu": "a100"}, actions=("wf:t",)),
    ]
    assert isinstance(place(workers, "wf", "s", GPU), Wait)


def test_busy_candidates_wait_for_a_slot() -> None:
    workers = [w("g", {"gpu": "a100"}, slots=2, running=1, sent=1)]
    got = place(workers, "wf", "s", GPU)
    assert got == Wait("labels", "every live worker with gpu == 'a100' (required) is busy")


def test_weights_prefer_the_better_worker() -> None:
    desired = {
        "memory": D(64, weight=10, comparator=C.GREATER_THAN_OR_EQUAL),
        "region": D("eu", weight=50),
    }
    small = w("small", {"memory": 32, "region": "eu"})  # 50
    big = w("big", {"memory": 128, "region": "us"})  # 10
    both = w("both", {"memory": 64, "region": "eu"})  # 60
    assert score(both, desired) == 60 and fits(both, desired)
    for seed in range(20):
        assert place([small, big, both], "wf", "s", desired, seed=str(seed)) == Placed("both")
    full = w("both", {"memory": 64, "region": "eu"}, running=2)
    assert place([small, big, full], "wf", "s", desired) == Placed("small")


def test_preferences_without_directed_workers_go_to_the_shared_queue() -> None:
    assert place([w("ts", directed=False)], "wf", "s", {"x": D("y")}) is SHARED


def test_equal_workers_share_the_tasks_at_random() -> None:
    workers = [w(f"w{i}", {"gpu": "a100"}) for i in range(4)]
    picks = Counter(place(workers, "wf", "s", GPU, seed=f"run{n}") for n in range(400))
    assert set(picks) == {Placed(f"w{i}") for i in range(4)}
    assert min(picks.values()) > 60  # 100 each, on average
    assert place(workers, "wf", "s", GPU, seed="x") == place(workers, "wf", "s", GPU, seed="x")


def test_sticky_soft_prefers_the_runs_worker_and_falls_back() -> None:
    a, b = w("a"), w("b")
    assert place([a, b], "wf", "s", {}, StickyStrategy.SOFT, "b") == Placed("b")
    # full: anywhere else
    full = w("b", running=2)
    assert place([a, full], "wf", "s", {}, StickyStrategy.SOFT, "b") == Placed("a")
    # gone: anywhere else
    assert place([a], "wf", "s", {}, StickyStrategy.SOFT, "b") == Placed("a")
    # nobody free: the shared queue
    assert place([w("a", running=2)], "wf", "s", {}, StickyStrategy.SOFT, "b") is SHARED


def test_sticky_hard_waits_for_the_runs_worker() -> None:
    a, b = w("a"), w("b")
    assert place([a, b], "wf", "s", {}, StickyStrategy.HARD, "b") == Placed("b")
    busy = place([a, w("b", running=2)], "wf", "s", {}, StickyStrategy.HARD, "b")
    assert isinstance(busy, Wait) and busy.kind == "sticky" and "no free slot" in busy.reason
    gone = place([a], "wf", "s", {}, StickyStrategy.HARD, "b")
    assert isinstance(gone, Wait) and "is gone" in gone.reason
    # the first step: placed, on a worker that takes directed tasks
    assert place([w("ts", directed=False), a], "wf", "s", {}, StickyStrategy.HARD) == Placed("a")
    assert isinstance(place([w("ts", directed=False)], "wf", "s", {}, StickyStrategy.HARD), Wait)


labels = st.dictionaries(
    st.sampled_from(["gpu", "memory", "zone"]),
    st.one_of(st.sampled_from(["a100", "h100", "eu"]), st.integers(0, 128)),
    max_size=3,
)
desires = st.dictionaries(
    st.sampled_from(["gpu", "memory", "zone"]),
    st.builds(
        D,
        value=st.one_of(st.sampled_from(["a100", "eu"]), st.integers(0, 128)),
        required=st.booleans(),
        weight=st.integers(0, 100),
        comparator=st.sampled_from(list(C)),
    ),
    max_size=3,
)
workers_st = st.lists(
    st.builds(
        w,
        worker_id=st.sampled_from([f"w{i}" for i in range(6)]),
        labels=labels,
        slots=st.integers(1, 3),
        running=st.integers(0, 3),
        sent=st.integers(0, 2),
        directed=st.booleans(),
        actions=st.sampled_from([("wf:s",), ("wf:t",), ("wf:s", "wf:t")]),
    ),
    max_size=6,
    unique_by=lambda x: x.worker_id,
)


@given(
    workers_st,
    desires,
    st.none() | st.sampled_from(list(StickyStrategy)),
    st.none() | st.sampled_from([f"w{i}" for i in range(6)]),
    st.text(max_size=4),
)
def test_a_placement_always_keeps_the_rules(
    workers: list[LiveWorker],
    desired: dict[str, D],
    sticky: StickyStrategy | None,
    run_worker: str | None,
    seed: str,
) -> None:
    got = place(workers, "wf", "s", desired, sticky, run_worker, seed)
    if not desired and sticky is None:
        assert got is SHARED
        return
    if isinstance(got, Placed):
        chosen = next(x for x in workers if x.worker_id == got.worker_id)
        assert chosen.directed and chosen.runs("wf", "s") and chosen.free > 0
        assert fits(chosen, desired)
        if sticky is StickyStrategy.HARD and run_worker is not None:
            assert got.worker_id == run_worker  # HARD never runs a step elsewhere
        stays = sticky is not None and run_worker == got.worker_id
        if not stays:  # the best score among the free candidates
            best = max(
                score(x, desired)
                for x in workers
                if x.directed and x.runs("wf", "s") and x.free > 0 and fits(x, desired)
            )
            assert score(chosen, desired) == best
    elif got is SHARED:
        # only when nothing required is asked, and never for HARD
        assert not any(d.required for d in desired.values())
        assert sticky is not StickyStrategy.HARD
    else:
        assert isinstance(got, Wait) and got.reason
