"""Declaring workflows with Hatchet's v1 API: the same wire definition as the v0 class it
is equivalent to, and clear errors for a DAG that cannot be."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from pydantic import BaseModel

from eventstore import ConfigError
from schemas.definition import workflow_version
from schemas.messages import WorkflowDef
from worker import Context, EmptyModel, Hatchet, InvalidInputError, Standalone
from worker.declare import spec_of

hatchet = Hatchet(env={})


class Order(BaseModel):
    sku: str
    qty: int


def wire(definition: WorkflowDef) -> dict[str, Any]:
    """The definition as registered, but for when it was registered."""
    return attrs.asdict(attrs.evolve(definition, registered_at=""))


def test_v1_and_v0_equivalents_register_the_same_definition() -> None:
    @hatchet.workflow(name="Checkout", on_events=["order:placed"], schedule_timeout="2m")
    class Checkout:
        @hatchet.step()
        def reserve(self, context: Context) -> None: ...

        @hatchet.step(parents=["reserve"], timeout="30s", retries=3, backoff_factor=2)
        def charge(self, context: Context) -> None: ...

        @hatchet.step(parents=["reserve", "charge"], backoff_max_seconds=10, retries=1)
        def ship(self, context: Context) -> None: ...

        @hatchet.on_failure_step(timeout="10s")
        def refund(self, context: Context) -> None: ...

    wf = hatchet.workflow(
        name="Checkout", on_events=["order:placed"], schedule_timeout="2m", input_validator=Order
    )

    @wf.task()
    def reserve(input: Order, ctx: Context) -> None: ...

    @wf.task(parents=[reserve], execution_timeout="30s", retries=3, backoff_factor=2)
    def charge(input: Order, ctx: Context) -> None: ...

    @wf.task(parents=[reserve, charge], backoff_max_seconds=10, retries=1)
    def ship(input: Order, ctx: Context) -> None: ...

    @wf.on_failure_task(execution_timeout="10s")
    def refund(input: Order, ctx: Context) -> None: ...

    v0 = spec_of(Checkout()).definition
    v1 = spec_of(wf).definition
    assert wire(v1) == wire(v0)
    assert v1.version == v0.version == workflow_version(wire(v0))
    assert wf.definition is v1


def test_standalone_task_is_a_workflow_of_one_step_named_for_it() -> None:
    @hatchet.task(on_events=["ping"], execution_timeout="5s", retries=2)
    def ping(input: EmptyModel, ctx: Context) -> dict[str, str]:
        return {"pong": "yes"}

    @hatchet.workflow(name="ping", on_events=["ping"])
    class Ping:
        @hatchet.step(timeout="5s", retries=2)
        def ping(self, context: Context) -> None: ...

    assert isinstance(ping, Standalone)
    assert wire(spec_of(ping).definition) == wire(spec_of(Ping()).definition)


def test_a_task_may_be_named_apart_from_its_function() -> None:
    wf = hatchet.workflow(name="Named")

    @wf.task(name="first")
    def one(input: EmptyModel, ctx: Context) -> None: ...

    @wf.task(name="second", parents=[one])
    def two(input: EmptyModel, ctx: Context) -> None: ...

    assert [(s.name, s.parents) for s in wf.definition.steps] == [
        ("first", ()),
        ("second", ("first",)),
    ]


def test_unknown_parent_is_a_clear_error() -> None:
    wf = hatchet.workflow(name="Unknown")

    @wf.task(parents=["nope"])
    def only(input: EmptyModel, ctx: Context) -> None: ...

    with pytest.raises(ConfigError, match="step 'only' has unknown parent 'nope'"):
        spec_of(wf)


def test_a_parent_from_another_workflow_is_a_clear_error() -> None:
    other = hatchet.workflow(name="Other")
    wf = hatchet.workflow(name="Mine")

    @other.task()
    def theirs(input: EmptyModel, ctx: Context) -> None: ...

    with pytest.raises(ConfigError, match="parent 'theirs', a task of workflow Other"):

        @wf.task(parents=[theirs])
        def mine(input: EmptyModel, ctx: Context) -> None: ...


def test_cycle_is_a_clear_error() -> None:
    wf = hatchet.workflow(name="Loop")

    @wf.task(parents=["b"])
    def a(input: EmptyModel, ctx: Context) -> None: ...

    @wf.task(parents=[a])
    def b(input: EmptyModel, ctx: Context) -> None: ...

    with pytest.raises(ConfigError, match=r"Loop: steps \['a', 'b'\] form a cycle"):
        spec_of(wf)


def test_duplicate_task_name_is_a_clear_error() -> None:
    wf = hatchet.workflow(name="Twice")

    @wf.task()
    def same(input: EmptyModel, ctx: Context) -> None: ...

    with pytest.raises(ConfigError, match="Twice already has a task named 'same'"):

        @wf.task(name="same")
        def other(input: EmptyModel, ctx: Context) -> None: ...


def test_a_workflow_without_tasks_or_name_says_so() -> None:
    with pytest.raises(ConfigError, match="no tasks"):
        spec_of(hatchet.workflow(name="Empty"))
    with pytest.raises(ConfigError, match="needs a name"):
        hatchet.workflow().task()


def test_input_validator_must_be_a_model() -> None:
    with pytest.raises(ConfigError, match="Pydantic model class"):
        hatchet.workflow(name="Bad", input_validator=dict)  # type: ignore[arg-type]


def test_a_v0_class_takes_no_input_validator() -> None:
    with pytest.raises(ConfigError, match="input_validator is for v1 tasks"):

        @hatchet.workflow(name="Mixed", input_validator=Order)
        class Mixed:
            @hatchet.step()
            def only(self, context: Context) -> None: ...


def test_a_workflow_with_tasks_decorates_no_class() -> None:
    wf = hatchet.workflow(name="Both")

    @wf.task()
    def only(input: EmptyModel, ctx: Context) -> None: ...

    with pytest.raises(ConfigError, match="has v1 tasks: it cannot decorate a class"):

        @wf
        class Both:
            @hatchet.step()
            def only(self, context: Context) -> None: ...


def test_bad_input_is_refused_before_sending_naming_the_field() -> None:
    wf = hatchet.workflow(name="Orders", input_validator=Order)
    with pytest.raises(InvalidInputError) as info:
        wf.run({"sku": "a", "qty": "many"})  # no server: it must fail before sending
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("workflow Orders: input does not match Order: qty: ")
    with pytest.raises(InvalidInputError, match="sku: Field required"):
        wf.run_no_wait({"qty": 1})


def test_worker_takes_slots_and_workflows() -> None:
    wf = hatchet.workflow(name="Slots")

    @wf.task()
    def only(input: EmptyModel, ctx: Context) -> None: ...

    client = Hatchet(
        env={"HATCHET_CLIENT_HOST_PORT": "127.0.0.1:4222", "HATCHET_CLIENT_TENANT_ID": "t1"}
    )
    worker = client.worker("w", slots=3, workflows=[wf])
    assert worker.max_runs == 3
    assert worker.workflows["Slots"][0].definition == wf.definition
    assert client.worker("w", max_runs=2).max_runs == 2
    with pytest.raises(ConfigError, match="give one of them"):
        client.worker("w", 2, slots=3)
