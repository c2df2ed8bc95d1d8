"""Subject patterns matched in the client, as NATS matches them (``eventstore.match``)."""

from __future__ import annotations

import pytest

from eventstore import Patterns, dispatcher_filters
from eventstore.match import matches


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.b", False),
        ("a.b", "a.b.c", False),
        ("a.*.c", "a.x.c", True),
        ("a.*.c", "a.x.y.c", False),
        ("a.*", "a", False),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),
        ("a.*.>", "a.b", False),
        ("a.*.>", "a.b.c", True),
        ("*", "a", True),
        (">", "a.b", True),
        ("a.b.c", "a.b.x", False),
    ],
)
def test_a_pattern_matches_as_nats_does(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


def test_the_dispatcher_keeps_its_inputs_and_nothing_else() -> None:
    inputs = Patterns(dispatcher_filters("acme"))
    for subject in (
        "acme.default.events.order.paid",
        "acme.default.workflows.wf",
        "acme.ns.runs.r1.requested",
        "acme.ns.runs.r1.result",
        "acme.ns.runs.r1.assigned",
        "acme.ns.runs.r1.cancel_requested",
    ):
        assert subject in inputs
    for subject in (
        "acme.default.runs.r1.created",
        "acme.default.runs.r1.queued",
        "acme.default.runs.r1.finished",
        "acme.default.tasks.wf.s",
        "other.default.events.order",
        "acme.default.events",
        "acme.default.workflows.wf.extra",
    ):
        assert subject not in inputs


def test_no_patterns_keep_everything() -> None:
    assert "any.subject" in Patterns([])
    assert 3 not in Patterns(["a"])
