"""Worker labels, desired labels and sticky strategies on the wire (schemas.labels), and
that they enter a workflow's version only when set."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest

from schemas import DecodeError, encode
from schemas.codec import decode_as
from schemas.definition import workflow_version
from schemas.labels import DesiredWorkerLabel as D
from schemas.labels import StickyStrategy
from schemas.labels import WorkerLabelComparator as C
from schemas.messages import StepDef, WorkflowDef


@pytest.mark.parametrize(
    ("want", "have", "ok"),
    [
        (D("a100"), "a100", True),
        (D("a100"), "h100", False),
        (D("a100"), None, False),
        (D(64), "64", False),  # a string is not the number
        (D("a100", comparator=C.NOT_EQUAL), "h100", True),
        (D("a100", comparator=C.NOT_EQUAL), "a100", False),
        (D("a100", comparator=C.NOT_EQUAL), None, False),  # a missing label satisfies nothing
        (D(64, comparator=C.GREATER_THAN), 128, True),
        (D(64, comparator=C.GREATER_THAN), 64, False),
        (D(64, comparator=C.GREATER_THAN_OR_EQUAL), 64, True),
        (D(64, comparator=C.LESS_THAN), 32, True),
        (D(64, comparator=C.LESS_THAN), 64, False),
        (D(64, comparator=C.LESS_THAN_OR_EQUAL), 64, True),
        (D(64, comparator=C.GREATER_THAN), "128", False),  # orders compare numbers only
        (D("b", comparator=C.GREATER_THAN), "c", False),
    ],
)
def test_comparators_put_the_workers_value_on_the_left(want: D, have: Any, ok: bool) -> None:
    assert want.satisfied_by(have) is ok


def test_a_desired_label_describes_itself() -> None:
    assert D("a100", required=True).describe("gpu") == "gpu == 'a100' (required)"
    assert D(64, weight=5, comparator=C.GREATER_THAN).describe("memory") == "memory > 64 (weight 5)"


@pytest.mark.parametrize(
    "bad",
    [
        {"gpu": {"value": True}},
        {"gpu": {"value": [1]}},
        {"gpu": {"value": "x", "weight": -1}},
        {"gpu": {"value": "x", "comparator": "LIKE"}},
        {"": {"value": "x"}},
        {"gpu": "a100"},
    ],
)
def test_a_step_with_malformed_desired_labels_is_refused(bad: dict[str, Any]) -> None:
    body = {"name": "W", "version": "x", "steps": [{"name": "s", "desired_worker_labels": bad}]}
    with pytest.raises(DecodeError):
        decode_as(WorkflowDef, WorkflowDef.KIND, orjson.dumps(body))


def _version(wf: WorkflowDef) -> str:
    return workflow_version(orjson.loads(encode(wf)))


def test_labels_and_sticky_enter_the_version_only_when_set() -> None:
    plain = WorkflowDef(
        "W", "", (StepDef("a"), StepDef("b", parents=("a",))), on_failure=StepDef("f")
    )
    body = orjson.loads(encode(plain))
    for step in [*body["steps"], body["on_failure"]]:
        del step["desired_worker_labels"]
    del body["sticky"]
    assert _version(plain) == workflow_version(body)  # as before issue 15, and as other SDKs
    labelled = attrs.evolve(
        plain, steps=(StepDef("a", desired_worker_labels={"gpu": D("a100")}), plain.steps[1])
    )
    sticky = attrs.evolve(plain, sticky=StickyStrategy.HARD)
    versions = {_version(plain), _version(labelled), _version(sticky)}
    assert len(versions) == 3
    assert _version(attrs.evolve(sticky, sticky=StickyStrategy.SOFT)) not in versions


def test_placement_fields_round_trip() -> None:
    wf = WorkflowDef(
        "W",
        "v",
        (StepDef("a", desired_worker_labels={"m": D(64, weight=3, comparator=C.LESS_THAN)}),),
        sticky="SOFT",
    )
    back = decode_as(WorkflowDef, WorkflowDef.KIND, encode(wf))
    assert back == wf and back.sticky is StickyStrategy.SOFT
    assert back.steps[0].desired_worker_labels["m"].comparator is C.LESS_THAN


def test_a_directed_task_names_its_worker_in_subject_and_body() -> None:
    from schemas import Scope, parse
    from schemas.codec import decode_subject
    from schemas.messages import Task

    scope = Scope("acme")
    task = Task("r1", "wf", "s", 1, {}, {}, 60.0, worker_id="w1")
    subject = scope.directed_task("w1", "wf", "s")
    assert subject == "acme.default.tasks.~direct.w1.wf.s"
    assert decode_subject(parse(subject), encode(task)) == task
    for wrong in (
        scope.directed_task("w2", "wf", "s"),  # another worker than the body's
        scope.task("wf", "s"),  # a shared subject for a placed task
        "acme.default.tasks.~direct.w1.wf",  # too short
    ):
        with pytest.raises(DecodeError):
            decode_subject(parse(wrong), encode(task))
    shared = attrs.evolve(task, worker_id=None)
    with pytest.raises(DecodeError):
        decode_subject(parse(subject), encode(shared))
    assert scope.directed_filter("w1") == "acme.default.tasks.~direct.w1.>"
