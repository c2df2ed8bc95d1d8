"""Declaring workflows: the DAG is checked when the class is decorated."""

from __future__ import annotations

import datetime as dt

import pytest

from eventstore import ConfigError
from worker import Context, Hatchet
from worker.declare import seconds, spec_of

hatchet = Hatchet(env={})


def test_steps_are_ordered_and_versioned() -> None:
    @hatchet.workflow(on_events=["a:b"], schedule_timeout="2m")
    class Flow:
        @hatchet.step(parents=["first"], timeout="30s", retries=2)
        def second(self, context: Context) -> None: ...

        @hatchet.step()
        def first(self, context: Context) -> None: ...

    wf = spec_of(Flow()).definition
    assert [s.name for s in wf.steps] == ["first", "second"]
    assert wf.step("second").timeout_s == 30 and wf.step("second").retries == 2
    assert wf.schedule_timeout_s == 120
    assert len(wf.version) == 16


def test_unknown_parent_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown parent 'nope'"):

        @hatchet.workflow()
        class Bad:
            @hatchet.step(parents=["nope"])
            def only(self, context: Context) -> None: ...


def test_cycle_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="form a cycle"):

        @hatchet.workflow()
        class Loop:
            @hatchet.step(parents=["b"])
            def a(self, context: Context) -> None: ...

            @hatchet.step(parents=["a"])
            def b(self, context: Context) -> None: ...


def test_bad_names_and_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="invalid workflow"):
        hatchet.workflow(name="has.dot")(type("X", (), {}))
    with pytest.raises(ConfigError, match="invalid event key"):
        hatchet.workflow(on_events=["bad key"])


def test_durations() -> None:
    assert seconds("1.5s", "t") == 1.5
    assert seconds("5m", "t") == 300
    assert seconds(dt.timedelta(hours=1), "t") == 3600
    with pytest.raises(ConfigError, match="use seconds"):
        seconds("soon", "timeout")


def test_missing_environment_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="HATCHET_CLIENT_HOST_PORT"):
        _ = Hatchet(env={}).settings


def test_readme_reliability_example_declares_what_it_says() -> None:
    import re
    from pathlib import Path

    from worker import NonRetryableError

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [code] = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "Checkout" in b]
    scope: dict[str, object] = {
        "hatchet": hatchet,
        "Context": Context,
        "NonRetryableError": NonRetryableError,
        "declined": False,
    }
    exec(code, scope)
    wf = spec_of(scope["Checkout"]).definition
    charge = wf.step("charge")
    assert (charge.retries, charge.backoff_factor, charge.backoff_max_s) == (3, 2, 30)
    assert wf.on_failure is not None and wf.on_failure.name == "refund"
    assert wf.on_events == ("order:placed",) and wf.schedule_timeout_s == 300


def test_queue_groups_of_two_namespaces_never_share_a_name() -> None:
    from eventstore import task_consumer_name
    from schemas import Scope

    assert task_consumer_name(Scope("acme", "a-b"), "c") != task_consumer_name(
        Scope("acme", "a"), "b-c"
    )
