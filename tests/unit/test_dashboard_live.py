"""Where a live stream starts: after the last event the browser saw, else where the page
asked (its read model's checkpoint), else what comes next; never far back in the log."""

from __future__ import annotations

from natchet.dashboard.live import MAX_BEHIND, run_event, start_at


def test_a_reconnect_goes_on_after_the_last_event_seen() -> None:
    assert start_at(500, 100, "420") == 421
    assert start_at(500, 100, None) == 100
    assert start_at(500, None, None) == 501
    assert start_at(500, None, "not a number") == 501  # a forged header is no position
    assert start_at(500, 100, "²") == 100


def test_a_stream_never_starts_far_back() -> None:
    last = 5 * MAX_BEHIND
    assert start_at(last, 1, None) == last + 1 - MAX_BEHIND
    assert start_at(10, 1, None) == 1


def test_each_event_carries_its_sequence_as_its_id() -> None:
    frame = run_event("t.ns.runs.r1.finished", 42)
    assert frame is not None and frame.startswith(b"id: 42\nevent: run\ndata: ")
    assert run_event("t.ns.events.k", 43) is None
