"""``RunEnds``: when a worker may trust the run ends it heard instead of asking the log."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import worker.ended
from worker.ended import FRESH_S, KEEP_S, MARGIN_S, RunEnds


class FakeConn:
    def __init__(self) -> None:
        self.stats = {"reconnects": 0}
        self.is_connected = True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1_800_000_000.0]
    monkeypatch.setattr(worker.ended.time, "time", lambda: now[0])
    return now


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


def listening(conn: Any) -> RunEnds:
    ends = RunEnds(conn)
    ends.listening()
    return ends


def test_a_fresh_first_delivery_after_listening_began_is_known_open(clock: list[float]) -> None:
    ends = listening(FakeConn())
    clock[0] += 5
    assert ends.over("r1", iso(clock[0] - 1), 1) is False


def test_a_run_end_heard_is_known_over(clock: list[float]) -> None:
    ends = listening(FakeConn())
    clock[0] += 5
    ends.heard("r1")
    assert ends.over("r1", iso(clock[0] - 1), 1) is True
    assert ends.over("r1", iso(clock[0] - 1), 3) is True  # whatever the delivery


@pytest.mark.parametrize(
    "why, queued_ago, delivered",
    [
        ("redelivered", 1.0, 2),
        ("queued too long ago", FRESH_S + 0.1, 1),
        ("queued around when listening began", 5.0 - MARGIN_S + 0.1, 1),
    ],
)
def test_otherwise_the_log_is_asked(
    clock: list[float], why: str, queued_ago: float, delivered: int
) -> None:
    ends = listening(FakeConn())
    clock[0] += 5
    assert ends.over("r1", iso(clock[0] - queued_ago), delivered) is None, why


def test_before_listening_or_while_disconnected_the_log_is_asked(clock: list[float]) -> None:
    conn = FakeConn()
    ends = RunEnds(conn)
    assert ends.over("r1", iso(clock[0]), 1) is None
    ends.listening()
    clock[0] += 5
    conn.is_connected = False
    assert ends.over("r1", iso(clock[0] - 1), 1) is None


def test_a_reconnect_restarts_the_listening(clock: list[float]) -> None:
    conn = FakeConn()
    ends = listening(conn)
    clock[0] += 5
    conn.stats["reconnects"] += 1  # ends published while it was away were not heard
    assert ends.over("r1", iso(clock[0] - 1), 1) is None
    assert ends.over("r1", iso(clock[0] - 1), 1) is None  # queued before the new start
    clock[0] += 5
    assert ends.over("r1", iso(clock[0] - 1), 1) is False


def test_unreadable_or_naive_times_are_asked_about(clock: list[float]) -> None:
    ends = listening(FakeConn())
    clock[0] += 5
    assert ends.over("r1", "yesterday", 1) is None
    assert ends.over("r1", dt.datetime(2030, 1, 1).isoformat(), 1) is None


def test_ends_are_forgotten_after_a_fresh_task_could_need_them(clock: list[float]) -> None:
    ends = listening(FakeConn())
    ends.heard("old")
    clock[0] += KEEP_S + 0.1
    ends.heard("new")
    assert ends.over("old", iso(clock[0] - 1), 1) is False
    assert ends.over("new", iso(clock[0] - 1), 1) is True
