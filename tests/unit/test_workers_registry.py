"""The dispatcher's registry of live workers (dispatcher.workers), folded from heartbeats."""

from __future__ import annotations

import datetime as dt

import pytest

from dispatcher.workers import Workers
from schemas import DecodeError, Scope, WorkerHeartbeat, WorkerStatus, encode
from schemas.codec import decode_as

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
S = Scope("acme")
OTHER = Scope("acme", "staging")


def beat(
    worker_id: str = "w1",
    *,
    at_s: float = 0,
    actions: tuple[str, ...] = ("wf:a", "wf:b"),
    slots: int = 4,
    running: int = 0,
    status: WorkerStatus = WorkerStatus.ACTIVE,
    labels: dict[str, str | int] | None = None,
    directed: bool = True,
) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id,
        worker_id,
        actions,
        slots,
        running,
        status,
        T0.isoformat(),
        at=(T0 + dt.timedelta(seconds=at_s)).isoformat(),
        labels=labels or {},
        directed=directed,
    )


def test_a_worker_heard_is_live_until_it_misses_three_beats() -> None:
    reg = Workers()
    assert reg.heard(S, beat(labels={"gpu": "a100"}))
    assert not reg.live(S, T0)[0].directed  # not before the engine made its consumer
    g = reg.generation
    reg.consumer_ready(S, "w1")
    assert reg.generation == g + 1
    reg.heard(S, beat(at_s=1, labels={"gpu": "a100"}))  # ready stays across beats
    (w,) = reg.live(S, T0 + dt.timedelta(seconds=1))
    assert (w.worker_id, w.labels, w.directed, w.free) == ("w1", {"gpu": "a100"}, True, 4)
    assert reg.live(S, T0 + dt.timedelta(seconds=8)) == []
    assert reg.get(S, "w1", T0 + dt.timedelta(seconds=8)) is None
    assert reg.forget_dead(T0 + dt.timedelta(seconds=8))
    assert not reg.forget_dead(T0 + dt.timedelta(seconds=9))


def test_a_stopped_worker_is_not_live() -> None:
    reg = Workers()
    reg.heard(S, beat())
    reg.heard(S, beat(at_s=1, status=WorkerStatus.STOPPED))
    assert reg.live(S, T0 + dt.timedelta(seconds=1)) == []


def test_scopes_are_apart() -> None:
    reg = Workers()
    reg.heard(S, beat("w1"))
    reg.heard(OTHER, beat("w2"))
    assert [w.worker_id for w in reg.live(S, T0)] == ["w1"]
    assert [w.worker_id for w in reg.live(OTHER, T0)] == ["w2"]


def test_generation_grows_only_when_placement_could_change() -> None:
    reg = Workers()
    reg.heard(S, beat())
    g = reg.generation
    assert not reg.heard(S, beat(at_s=2))  # the same beat again, later
    assert reg.generation == g
    for changed in (
        beat(at_s=3, running=1),
        beat(at_s=4, running=1, labels={"gpu": "a100"}),
        beat(at_s=5, running=1, labels={"gpu": "a100"}, slots=8),
        beat(at_s=6, running=1, labels={"gpu": "a100"}, slots=8, directed=False),
    ):
        assert reg.heard(S, changed)
        assert reg.generation == g + 1
        g = reg.generation
    assert not reg.heard(S, beat(at_s=1))  # out of order: ignored
    assert reg.live(S, T0 + dt.timedelta(seconds=6))[0].slots == 8


def test_placed_tasks_take_free_slots_until_their_attempt_is_over_not_the_next_beat() -> None:
    reg = Workers()
    reg.heard(S, beat(slots=3, running=1))  # one shared-queue task running
    reg.sent(S, "w1", "r1", "s", 1)
    reg.sent(S, "w1", "r2", "s", 1)
    assert reg.get(S, "w1", T0).free == 0  # type: ignore[union-attr]
    reg.sent(S, "nobody", "r3", "s", 1)  # a worker unknown: nothing
    # The next beat counts the two placed tasks running: still no free slot.
    assert reg.heard(S, beat(at_s=2, slots=3, running=3))
    assert reg.get(S, "w1", T0).free == 0  # type: ignore[union-attr]
    # r1's attempt is over (its result folded): its slot is free at once, before any beat.
    g = reg.generation
    assert reg.settle("r1", lambda step, attempt: False)
    assert reg.generation == g + 1
    assert reg.get(S, "w1", T0).free == 1  # type: ignore[union-attr]
    assert not reg.settle("r1", lambda step, attempt: False)  # once
    assert not reg.settle("r2", lambda step, attempt: True)  # still out: nothing
    assert reg.get(S, "w1", T0).free == 1  # type: ignore[union-attr]
    # A beat after r1 ended: one shared and r2 running; the estimate agrees.
    reg.heard(S, beat(at_s=4, slots=3, running=2))
    assert reg.get(S, "w1", T0).free == 1  # type: ignore[union-attr]


def test_a_dead_workers_placed_tasks_are_forgotten_with_it() -> None:
    reg = Workers()
    reg.heard(S, beat(slots=2))
    reg.sent(S, "w1", "r1", "s", 1)
    assert reg.forget_dead(T0 + dt.timedelta(seconds=60)) == [(S, "w1")]
    assert not reg.settle("r1", lambda step, attempt: False)  # nothing left to free
    reg.heard(S, beat(at_s=61, slots=2))
    assert reg.get(S, "w1", T0 + dt.timedelta(seconds=61)).free == 2  # type: ignore[union-attr]


def test_capacity_sums_the_slots_of_live_workers_of_the_workflow() -> None:
    reg = Workers()
    reg.heard(S, beat("w1", slots=4, running=4))
    reg.heard(S, beat("w2", slots=2, actions=("other:x",)))
    reg.heard(S, beat("w3", slots=3, at_s=-10))  # dead by T0
    reg.heard(OTHER, beat("w4", slots=5))
    assert reg.capacity(S, "wf", T0) == 4
    assert reg.capacity(S, "other", T0) == 2
    assert reg.capacity(S, "none", T0) == 0
    assert reg.capacity(OTHER, "wf", T0) == 5


def test_heartbeat_labels_round_trip_and_old_beats_have_none() -> None:
    b = beat(labels={"gpu": "a100", "memory": 64})
    back = decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, encode(b))
    assert back.labels == {"gpu": "a100", "memory": 64} and back.directed
    old = b"""{"worker_id":"w","name":"w","actions":[],"slots":1,"running":0,
    "status":"ACTIVE","started_at":"x","at":"x","v":1}"""
    back = decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, old)
    assert back.labels == {} and not back.directed


@pytest.mark.parametrize(
    "labels",
    ['{"gpu": true}', '{"gpu": [1]}', '{"": "x"}', '{"gpu": 1.5}', '["gpu"]'],
)
def test_a_heartbeat_with_malformed_labels_is_refused(labels: str) -> None:
    body = (
        '{"worker_id":"w","name":"w","actions":[],"slots":1,"running":0,'
        f'"status":"ACTIVE","started_at":"x","at":"x","v":1,"labels":{labels}}}'
    )
    with pytest.raises(DecodeError, match="label"):
        decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, body.encode())


def test_departures_grow_when_a_worker_starts_stopping_or_is_forgotten() -> None:
    reg = Workers()
    reg.heard(S, beat())
    reg.heard(S, beat(at_s=1, running=2))  # busier: placement may differ, nobody left
    assert reg.departures == 0
    reg.heard(S, beat(at_s=2, status=WorkerStatus.STOPPING))
    assert reg.departures == 1
    reg.heard(S, beat(at_s=3, status=WorkerStatus.STOPPED))  # gone: forgotten at the look
    assert reg.departures == 1
    assert reg.forget_dead(T0 + dt.timedelta(seconds=3)) == [(S, "w1")]
    assert reg.departures == 2
