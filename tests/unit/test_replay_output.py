"""What ``natchet replay`` prints: a difference line, and progress when stderr is not a
terminal."""

from __future__ import annotations

import datetime as dt

import pytest

from natchet.cli.replay import _Meter
from projector.replay import Difference


def test_a_difference_names_table_key_column_and_both_values() -> None:
    key = {"tenant": "acme", "run_id": "r1", "name": "d"}
    assert (
        Difference("steps", key, "status", "FAILED", "SUCCEEDED").describe()
        == "steps (tenant=acme, run_id=r1, name=d) status: live 'FAILED', rebuilt 'SUCCEEDED'"
    )
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert (
        Difference("steps", key, "output", {"b": 1, "a": [2]}, None)
        .describe()
        .endswith('output: live {"a":[2],"b":1}, rebuilt NULL')
    )
    assert (
        Difference("runs", key, "finished_at", at, None)
        .describe()
        .endswith("finished_at: live 2026-01-02T03:04:05+00:00, rebuilt NULL")
    )
    assert Difference(
        "runs", {"tenant": "acme", "id": "r1"}, None, {"id": "r1"}, None
    ).describe() == ("runs (tenant=acme, id=r1): row only in the live projection")


def test_plain_progress_lines_say_messages_rate_and_eta(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = [100.0]
    monkeypatch.setattr("natchet.cli.replay.time.monotonic", lambda: clock[0])
    meter = _Meter()
    assert not meter.tty  # pytest captures stderr
    meter(0, 3000)
    clock[0] = 101.0
    meter(500, 3000)  # under 2 s since the start: nothing yet
    clock[0] = 102.0
    meter(1000, 3000)
    clock[0] = 103.0
    meter(3000, 3000)
    meter.close()
    assert capsys.readouterr().err.splitlines() == [
        "replayed 1,000/3,000 messages, 500/s, ETA 4 s",
        "replayed 3,000/3,000 messages, 1,000/s, ETA 0 s",
    ]
