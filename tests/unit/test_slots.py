"""How a worker's slots are dealt between the pullers of its workflows."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st

from eventstore import Slots


@attrs.define
class Wants:
    """A puller, as the slots see it: how many more it would ask for."""

    unmet: int
    outstanding: int = 0
    backlog: int = 0


def ask(slots: Slots, puller: Wants) -> int:
    """What a puller does: ask for its allotment, which it then has (reserved)."""
    got = slots.allot(puller)
    slots.reserve(got)
    puller.unmet = max(0, puller.unmet - got)
    puller.outstanding += got
    return got


def test_a_lone_puller_gets_every_free_slot() -> None:
    slots = Slots(8)
    slots.join(alone := Wants(0))
    assert slots.allot(alone) == 8


def test_an_idle_queue_keeps_one_slot_and_the_busy_one_gets_the_rest() -> None:
    slots = Slots(8)
    slots.join(idle := Wants(1))
    slots.join(busy := Wants(40))
    assert (ask(slots, idle), ask(slots, busy)) == (1, 7)


def test_two_busy_queues_share_the_free_slots() -> None:
    slots = Slots(8)
    slots.join(a := Wants(40))
    slots.join(b := Wants(40))
    assert (ask(slots, a), ask(slots, b)) == (4, 4)


def test_one_slot_goes_round_between_two_pullers() -> None:
    slots = Slots(1)
    slots.join(a := Wants(1))
    slots.join(b := Wants(1))
    turns = []
    for _ in range(4):
        for p in (a, b):  # a always asks first: the turn still alternates
            if ask(slots, p):
                turns.append(p)
                slots.unreserve(1)  # its request expired, or its task ran
                p.unmet, p.outstanding = 1, 0
                break
    assert turns == [a, b, a, b]


@given(
    capacity=st.integers(1, 16),
    used=st.integers(0, 16),
    wants=st.lists(st.integers(0, 50), min_size=2, max_size=6),
)
def test_pullers_asking_in_turn_get_what_they_want_within_the_free_slots(
    capacity: int, used: int, wants: list[int]
) -> None:
    slots = Slots(capacity)
    slots.reserve(min(used, capacity))
    free = slots.free
    pullers = [Wants(w) for w in wants]
    for p in pullers:
        slots.join(p)
    got = [0] * len(pullers)
    while True:  # each asks again whenever slots may have come free
        more = [ask(slots, p) for p in pullers]
        if not any(more):
            break
        got = [g + m for g, m in zip(got, more, strict=True)]
    assert all(0 <= g <= w for g, w in zip(got, wants, strict=True))
    assert sum(got) == min(free, sum(wants))
    even = free // len(wants)
    assert all(g >= min(even, w) for g, w in zip(got, wants, strict=True))  # an even share
