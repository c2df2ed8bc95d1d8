"""Declaring worker labels, desired labels and sticky runs in the SDK (v0 and v1): checked
at declaration with one-line errors, the same definition both ways, and ctx.worker."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.errors import ConfigError
from worker import (
    Context,
    DesiredWorkerLabel,
    Hatchet,
    StickyStrategy,
    WorkerContext,
    WorkerLabelComparator,
)
from worker.declare import spec_of

hatchet = Hatchet(env={})
GPU = {"gpu": DesiredWorkerLabel("a100", required=True)}
MEM = {"memory": {"value": 64, "comparator": "GREATER_THAN_OR_EQUAL", "weight": 5}}


def test_v1_and_v0_declare_the_same_labels_and_sticky() -> None:
    v1 = hatchet.workflow(name="Infer", sticky=StickyStrategy.HARD)

    @v1.task(desired_worker_labels=GPU)
    def run(input: Any, ctx: Context) -> int:
        return 1

    @v1.task(parents=[run], desired_worker_labels=MEM)
    def after(input: Any, ctx: Context) -> int:
        return 2

    @hatchet.workflow(name="Infer", sticky="HARD")
    class V0:
        @hatchet.step(desired_worker_labels=GPU)
        def run(self, ctx: Context) -> int:
            return 1

        @hatchet.step(parents=["run"], desired_worker_labels=MEM)
        def after(self, ctx: Context) -> int:
            return 2

    d1, d0 = v1.definition, spec_of(V0).definition
    assert d1.version == d0.version
    assert d1.sticky is StickyStrategy.HARD
    mem = d1.step("after").desired_worker_labels["memory"]
    assert mem.comparator is WorkerLabelComparator.GREATER_THAN_OR_EQUAL and mem.weight == 5
    plain = hatchet.workflow(name="Infer")

    @plain.task()
    def run2(input: Any, ctx: Context) -> int:
        return 1

    assert plain.definition.version != d1.version


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        ({"gpu": True}, "string or a whole number"),
        ({"": "x"}, "label key"),
        ({"gpu": ["a"]}, "string or a whole number"),
    ],
)
def test_bad_worker_labels_are_refused_at_once(labels: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        hatchet.worker("w", slots=1, labels=labels)


@pytest.mark.parametrize(
    "desired",
    [
        {"gpu": "a100"},
        {"gpu": {"value": True}},
        {"gpu": {"value": "a", "comparator": "LIKE"}},
        {"gpu": {"value": "a", "weight": -2}},
    ],
)
def test_bad_desired_labels_are_refused_at_declaration(desired: Any) -> None:
    wf = hatchet.workflow(name="Bad")
    with pytest.raises(ConfigError, match="desired_worker_labels"):
        wf.task(desired_worker_labels=desired)
    with pytest.raises(ConfigError, match="desired_worker_labels"):
        hatchet.step(desired_worker_labels=desired)


def test_a_bad_sticky_is_refused() -> None:
    with pytest.raises(ConfigError, match="sticky must be one of SOFT, HARD"):
        hatchet.workflow(name="S", sticky="STICKY")  # type: ignore[arg-type]


def test_a_worker_has_its_labels_and_upserts_them() -> None:
    env = {"HATCHET_CLIENT_HOST_PORT": "127.0.0.1:4222", "HATCHET_CLIENT_TENANT_ID": "t"}
    w = Hatchet(env=env).worker("w", slots=2, labels={"gpu": "a100"})
    ctx = w.worker_context
    assert isinstance(ctx, WorkerContext) and ctx.id() == w.id
    heard: list[int] = []
    ctx.upsert_labels({"memory": 64})  # no loop hooked up yet: just kept
    assert ctx.labels() == {"gpu": "a100", "memory": 64}
    with pytest.raises(ConfigError, match="string or a whole number"):
        ctx.upsert_labels({"gpu": 1.5})  # type: ignore[dict-item]
    assert ctx.labels() == {"gpu": "a100", "memory": 64} and not heard


def test_only_workflows_with_placed_steps_make_a_worker_take_directed_tasks() -> None:
    from worker.labels import placed

    plain, labelled = hatchet.workflow(name="P"), hatchet.workflow(name="L")
    sticky = hatchet.workflow(name="S", sticky=StickyStrategy.SOFT)

    for wf, desired in ((plain, None), (labelled, GPU), (sticky, None)):

        @wf.task(desired_worker_labels=desired)
        def t(input: Any, ctx: Context) -> int:
            return 1

    assert [placed(w.definition) for w in (plain, labelled, sticky)] == [False, True, True]
