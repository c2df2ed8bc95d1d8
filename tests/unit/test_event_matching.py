"""Event matching (pure): keys and ``*`` patterns, CEL filters, metadata headers, and the
definition fields issue 14 adds hashed only when set."""

from __future__ import annotations

import pytest

from dispatcher.matching import EventRoutes, key_matches
from schemas.definition import workflow_version
from schemas.errors import ConfigError
from schemas.filters import FilterError, compile_filter, evaluate, filter_error
from schemas.messages import StepDef, WorkflowDef
from schemas.metadata import check_metadata, metadata_headers, metadata_of_headers
from schemas.subjects import Scope, SubjectError, check_event_pattern
from worker import declare


@pytest.mark.parametrize(
    ("pattern", "key", "matched"),
    [
        ("order:paid", "order:paid", True),
        ("order:paid", "order:paid.eu", False),
        ("order:*", "order:paid", True),
        ("order:*", "order:paid.eu", True),  # '*' crosses '.' and ':'
        ("order:*", "order:", False),  # one or more characters
        ("order:*", "orders:paid", False),
        ("*:created", "user:created", True),
        ("*:created", "user:created:late", False),
        ("a*b*c", "a1b2c", True),
        ("*", "anything.at:all", True),
        ("order.+", "order.x", False),  # regex characters are literal
    ],
)
def test_a_pattern_matches_exactly_the_keys_it_names(pattern: str, key: str, matched: bool) -> None:
    assert key_matches(pattern, key) is matched


def test_a_pattern_of_many_stars_is_matched_without_backtracking() -> None:
    # As a regex of ".+a" repeated, this takes exponential time on a key it misses.
    assert not key_matches("*a" * 30 + "b", "a" * 200)
    assert key_matches("*a" * 30, "xa" * 30)


def test_a_hostile_registrations_odd_on_events_name_nothing() -> None:
    scope = Scope("t")
    odd = _wf("Odd", ["order:*"])
    object.__setattr__(odd, "on_events", (1, ["x"], None, "order:*"))
    triggers = EventRoutes([((scope, "Odd"), odd)])
    assert [w.name for w in triggers.matching(scope, "order:paid", {}, {})[0]] == ["Odd"]


def test_patterns_are_checked_like_keys_with_a_star() -> None:
    assert check_event_pattern("order:*") == "order:*"
    for bad in ("order:>", "a..b", "", "spaces here"):
        with pytest.raises(SubjectError):
            check_event_pattern(bad)


def _wf(name: str, events: list[str], event_filter: str | None = None) -> WorkflowDef:
    return WorkflowDef(
        name=name,
        version="v",
        steps=[StepDef("s")],
        on_events=events,
        event_filter=event_filter,
    )


def test_triggers_find_exact_and_wildcard_workflows_of_the_scope_only() -> None:
    alice, bob = Scope("t", "alice"), Scope("t", "bob")
    wfs = {
        (alice, "Exact"): _wf("Exact", ["order:paid"]),
        (alice, "Any"): _wf("Any", ["order:*", "order:paid"]),  # listed twice: starts once
        (alice, "Big"): _wf("Big", ["order:*"], "input.amount > 100"),
        (bob, "BobAny"): _wf("BobAny", ["*"]),
    }
    triggers = EventRoutes(wfs.items())
    started, skipped = triggers.matching(alice, "order:paid", {"amount": 150}, {})
    assert [w.name for w in started] == ["Any", "Big", "Exact"] and skipped == []
    started, skipped = triggers.matching(alice, "order:paid", {"amount": 5}, {})
    assert [w.name for w in started] == ["Any", "Exact"] and skipped == []
    started, skipped = triggers.matching(alice, "order:refund", {"amount": "lots"}, {})
    assert [w.name for w in started] == ["Any"]
    assert [s.workflow for s in skipped] == ["Big"] and "overload" in skipped[0].reason
    assert [w.name for w in triggers.matching(bob, "order:paid", {}, {})[0]] == ["BobAny"]
    assert triggers.matching(Scope("t", "carol"), "order:paid", {}, {}) == ([], [])


def test_a_filter_sees_input_metadata_and_key_and_errors_never_match() -> None:
    expr = 'input.amount > 100 && additional_metadata.source == "web" && event_key != "x"'
    assert evaluate(expr, {"amount": 101}, {"source": "web"}, "order:paid").matched
    assert not evaluate(expr, {"amount": 101}, {"source": "cli"}, "order:paid").matched
    for payload in ({}, None, [1], {"amount": "x"}, "text"):
        verdict = evaluate(expr, payload, {"source": "web"}, "k")
        assert not verdict.matched and verdict.error
    not_bool = evaluate("input.amount", {"amount": 1}, {}, "k")
    assert not not_bool.matched and "not a boolean" in (not_bool.error or "")


def test_a_filter_that_does_not_parse_names_its_line_and_column() -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter("input.amount > 100 &&\n  input.kind ==== 'x'")
    assert (caught.value.line, caught.value.column) == (2, 16)
    assert "line 2 column 16" in str(caught.value)
    assert filter_error("a ==== b") == "event filter 'a ==== b' does not parse at line 1 column 5"
    assert filter_error(None) is None and filter_error("true") is None
    assert filter_error(5) is not None  # type: ignore[arg-type]


def test_declaring_a_bad_filter_is_refused_with_the_position() -> None:
    with pytest.raises(ConfigError, match="line 1 column 14"):
        declare.workflow(name="W", on_events=["order:*"], event_filter="input.amount >")
    with pytest.raises(ConfigError, match="on_events"):
        declare.workflow(name="W", event_filter="true")
    with pytest.raises(ConfigError, match="invalid event key"):
        declare.workflow(name="W", on_events=["order:>"])


def test_metadata_travels_in_headers_and_bad_pairs_are_dropped() -> None:
    meta = check_metadata({"source": "web", "n": 3, "ok": True})
    assert meta == {"source": "web", "n": "3", "ok": "true"}
    headers = dict(metadata_headers(meta))
    assert headers == {
        "Natchet-Meta-source": "web",
        "Natchet-Meta-n": "3",
        "Natchet-Meta-ok": "true",
    }
    assert metadata_of_headers({**headers, "Nats-Msg-Id": "x", "natchet-meta-Lower": "y"}) == {
        **meta,
        "Lower": "y",
    }
    assert metadata_of_headers({"Natchet-Meta-bad key": "x", "Natchet-Meta-": "y"}) == {}
    for bad in ({"bad key": "x"}, {"k": {"nested": 1}}, {"k": "line\nbreak"}):
        with pytest.raises(ConfigError):
            check_metadata(bad)


def _definition(**extra: object) -> dict[str, object]:
    return {
        "name": "W",
        "steps": [{"name": "s", "parents": [], "timeout_s": 60, "retries": 0,
                   "backoff_factor": None, "backoff_max_s": None}],
        "on_events": ["order:*"],
        "schedule_timeout_s": 300,
        "on_failure": None,
        **extra,
    }  # fmt: skip


def test_new_definition_fields_are_hashed_only_when_set() -> None:
    base = workflow_version(_definition())
    assert workflow_version(_definition(on_success=None, event_filter=None)) == base
    assert workflow_version(_definition(event_filter="true")) != base
    step = {"name": "done", "parents": [], "timeout_s": 60, "retries": 0,
            "backoff_factor": None, "backoff_max_s": None}  # fmt: skip
    assert workflow_version(_definition(on_success=step)) != base
