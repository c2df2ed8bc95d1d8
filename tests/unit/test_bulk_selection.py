"""``--since`` and ``--status`` of the bulk commands, and how a selection is said back."""

from __future__ import annotations

import datetime as dt

import pytest

from natchet.cli.bulk import Selection, confirm, parse_since, parse_status
from schemas.errors import ConfigError

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "back"),
    [
        ("90s", dt.timedelta(seconds=90)),
        ("15m", dt.timedelta(minutes=15)),
        ("1h", dt.timedelta(hours=1)),
        ("2d", dt.timedelta(days=2)),
        ("0s", dt.timedelta(0)),
    ],
)
def test_since_a_duration_is_that_long_before_now(text: str, back: dt.timedelta) -> None:
    assert parse_since(text, now=NOW) == NOW - back


def test_since_an_iso_time_is_that_time_utc_unless_it_names_a_zone() -> None:
    assert parse_since("2026-02-01T18:00:00Z") == dt.datetime(2026, 2, 1, 18, tzinfo=dt.UTC)
    assert parse_since("2026-02-01T18:00:00") == dt.datetime(2026, 2, 1, 18, tzinfo=dt.UTC)
    assert parse_since("2026-02-01") == dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    east = parse_since("2026-02-01T19:00:00+01:00")
    assert east == dt.datetime(2026, 2, 1, 18, tzinfo=dt.UTC)


def test_since_without_now_counts_back_from_the_clock() -> None:
    before = dt.datetime.now(dt.UTC)
    assert before - dt.timedelta(hours=1) <= parse_since("1h") <= dt.datetime.now(dt.UTC)


@pytest.mark.parametrize("text", ["yesterday", "1w", "1.5h", "h", "-1h", "1 h", "", "2026-13-01"])
def test_since_anything_else_is_a_config_error_that_says_what_is_taken(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--since .* neither a duration \(90s, 15m, 1h, 2d\)"):
        parse_since(text, now=NOW)


def test_status_is_a_run_status_in_any_case() -> None:
    assert parse_status("running") == "RUNNING"
    with pytest.raises(ConfigError, match="QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED"):
        parse_status("DONE")


def test_a_selection_says_back_the_filters_given() -> None:
    given = Selection("acme", status="RUNNING", workflow="W", since="1h")
    assert given.describe() == "tenant=acme, status=RUNNING, workflow=W, since=1h"
    assert Selection("acme", workflow="W").describe(["QUEUED", "RUNNING"]) == (
        "tenant=acme, status=QUEUED|RUNNING, workflow=W"
    )


class _Stdin:
    def __init__(self, *, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("answer", "goes_on"), [("y", True), ("YES\n", True), ("", False)])
def test_confirm_asks_the_person_at_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], answer: str, goes_on: bool
) -> None:
    asked: list[str] = []
    monkeypatch.setattr("sys.stdin", _Stdin(tty=True))
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)
    assert confirm(3, "workflow=W", verb="Cancel", yes=False) is goes_on
    assert asked == ["Cancel 3 runs? [y/N] "]
    assert capsys.readouterr().out.startswith("3 runs match (workflow=W)\n")


def test_confirm_without_a_terminal_needs_yes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", _Stdin(tty=False))
    with pytest.raises(ConfigError, match=r"not going to replay 2 runs .* pass --yes"):
        confirm(2, "status=FAILED", verb="Replay", yes=False)
    assert confirm(2, "status=FAILED", verb="Replay", yes=True) is True
    assert confirm(0, "status=FAILED", verb="Replay", yes=True) is False
    assert capsys.readouterr().out.splitlines()[-1] == "no runs match (status=FAILED)"
