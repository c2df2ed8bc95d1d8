"""Partitioned dispatch end to end (issue 16): existing end-to-end tests of runs, children,
concurrency, durable waits, replays and flow control, run again against an engine
whose tenant's dispatch is split into three partitions (``dispatcher.partition``: three
dispatchers, each reading the whole log and deciding for the runs it owns). Each test here
is the imported one, unchanged, with this module's ``engine`` fixture.

Around every test, each partition's appends are recorded: every run's history must come
from one partition, its owner (and a run a cron or schedule starts: created by partition 0,
which holds the timers), apart from the ``cancel_requested`` a parent's owner sends a child
of another partition; and between them the partitions must have decided something."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from dispatcher.decide import Output
from dispatcher.partition import Partition, coordinated
from dispatcher.service import Dispatcher
from eventstore import Patterns, dispatcher_filters, replay
from natchet.config import EngineSettings
from natchet.dev.demo import raw_publish
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import RunCancelRequested, RunCreated, Scope, Task, TriggerKind
from tests.conftest import eventually, running
from tests.e2e.test_child_workflows import (
    test_a_retried_parent_ends_with_exactly_its_ten_children,
    test_cancelling_a_parent_cancels_its_running_children,
    test_replays_of_a_parent_and_of_a_child,
)
from tests.e2e.test_concurrency import (
    test_a_cancel_strategy_cancels_exactly_the_run_it_names,
    test_three_keys_of_fifty_runs_never_run_two_of_a_key_at_once_across_four_workers,
)
from tests.e2e.test_diamond import diamond, test_raw_protocol_event_runs_diamond_to_success
from tests.e2e.test_durable import (
    test_an_event_or_a_sleep_wakes_a_step_whichever_comes_first_in_its_namespace,
)
from tests.e2e.test_event_triggers import (
    test_filtered_and_wildcard_events_start_exactly_the_matching_workflows,
)
from tests.e2e.test_rate_limits import test_a_dynamic_key_limits_each_value_on_its_own
from tests.e2e.test_rerun import (
    test_a_rerun_from_a_middle_step_keeps_upstream_outputs_and_leaves_the_original,
)
from tests.e2e.test_step_concurrency import (
    test_a_step_keys_cancel_strategy_cancels_the_run_it_names_and_its_later_steps,
)
from tests.e2e.test_triggers import (
    created_runs,
    test_on_crons_runs_the_workflow_and_a_worker_without_them_deletes_them,
)
from tests.support import hatchet_for, runs_of
from worker import Context

PARTITIONS = 3

__all__ = [  # the tests this module runs again, partitioned
    "test_a_cancel_strategy_cancels_exactly_the_run_it_names",
    "test_a_dynamic_key_limits_each_value_on_its_own",
    "test_a_rerun_from_a_middle_step_keeps_upstream_outputs_and_leaves_the_original",
    "test_a_retried_parent_ends_with_exactly_its_ten_children",
    "test_a_step_keys_cancel_strategy_cancels_the_run_it_names_and_its_later_steps",
    "test_an_event_or_a_sleep_wakes_a_step_whichever_comes_first_in_its_namespace",
    "test_cancelling_a_parent_cancels_its_running_children",
    "test_filtered_and_wildcard_events_start_exactly_the_matching_workflows",
    "test_on_crons_runs_the_workflow_and_a_worker_without_them_deletes_them",
    "test_raw_protocol_event_runs_diamond_to_success",
    "test_replays_of_a_parent_and_of_a_child",
    "test_three_keys_of_fifty_runs_never_run_two_of_a_key_at_once_across_four_workers",
]


@pytest.fixture
async def engine(nats_server: NatsServer, dsn: str, tenant_name: str) -> AsyncIterator[Engine]:
    """The engine for this test's tenant, its dispatch in three partitions."""
    settings = EngineSettings(nats_server.url, dsn, (tenant_name,), dispatch_partitions=PARTITIONS)
    async with Engine(settings) as running:
        assert sorted(u.part or 0 for u in running.dispatch) == list(range(PARTITIONS))
        yield running


Writes = dict[str, dict[int, list[Output]]]  # run id -> partition -> what it appended


@pytest.fixture(autouse=True)
def one_writer_per_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    writes: Writes = defaultdict(lambda: defaultdict(list))
    store = Dispatcher._store

    async def recording(self: Dispatcher, decisions: list[list[Output]]) -> None:
        await store(self, decisions)  # recorded once stored (a failed append raises)
        for output in (o for d in decisions for o in d):
            run_id = getattr(output.message, "run_id", None)
            if run_id is not None and (".runs." in output.subject or ".tasks." in output.subject):
                writes[run_id][self.partition.index].append(output)

    monkeypatch.setattr(Dispatcher, "_store", recording)
    yield
    check_writers(writes)


def check_writers(writes: Writes) -> None:
    deciders: set[int] = set()
    for run_id, by in writes.items():
        created = [
            o.message for outs in by.values() for o in outs if isinstance(o.message, RunCreated)
        ]
        if not created:
            continue  # a run created before the test's engine (or only rejected)
        c = created[0]
        steps = [s for s in (*c.steps, c.on_failure, c.on_success) if s is not None]
        owner = Partition(0, PARTITIONS).owner(
            run_id, coordinated(c.concurrency, c.priority, steps)
        )
        timed = c.trigger is not None and c.trigger.kind in (TriggerKind.CRON, TriggerKind.SCHEDULE)
        for index, outputs in by.items():
            if index == owner:
                deciders.add(index)
                continue
            own = [o for o in outputs if not isinstance(o.message, RunCancelRequested)]
            if timed and index == 0:  # partition 0 fires timers: it creates their runs
                own = [o for o in own if not isinstance(o.message, RunCreated | Task)]
            assert not own, f"partition {index} wrote for run {run_id} of partition {owner}: {own}"
    assert deciders, "no partition decided anything"


async def test_each_input_is_counted_once_across_the_partitions(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    """Every partition reads every input, and events and registrations are every
    partition's: still, the decision-time histogram counts each input of the log once."""
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("diamond-worker", max_runs=4)
    worker.register_workflow(diamond(hatchet))
    async with running(worker):
        subject = f"{tenant_name}.default.events.order:placed"
        raw_publish("127.0.0.1", nats_server.port, subject, [b'{"n": 1}'] * 12)

        async def twelve_over() -> bool:
            runs = await runs_of(db, tenant_name)
            return len(runs) == 12 and all(r["status"] == "SUCCEEDED" for r in runs)

        await eventually(twelve_over, timeout_s=60)
    hatchet.close()
    inputs = Patterns(dispatcher_filters(tenant_name))
    logged = [r async for r in replay(engine.connections[tenant_name], tenant_name, [">"])]
    expected = sum(1 for r in logged if r.subject in inputs)

    async def counted() -> float | None:
        n = engine.metrics.registry.get_sample_value(
            "natchet_dispatcher_decision_seconds_count", {"tenant": tenant_name}
        )
        return n if n == expected else None

    await eventually(counted, timeout_s=10)


async def test_scheduled_runs_fire_once_each_whichever_partition_owns_them(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    """Partition 0 holds the timers: ten runs scheduled a second or two ahead are created
    by it once each, and each runs to its end under the partition that owns it (the
    writers' check around the test), the ten spread over more than one partition."""
    hatchet = hatchet_for(nats_server, tenant_name)
    timed = hatchet.workflow(name="Timed")

    @timed.task()
    async def only(input: Any, ctx: Context) -> dict[str, Any]:
        return {"ok": True}

    try:
        async with running(hatchet.worker("timed", workflows=[timed])):
            when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
            refs = [await hatchet.scheduled.aio_create("Timed", when, {"n": n}) for n in range(10)]

            async def ten_succeeded() -> list[dict[str, Any]] | None:
                runs = await runs_of(db, tenant_name)
                done = [r for r in runs if r["status"] == "SUCCEEDED"]
                return done if len(done) == 10 else None

            done = await eventually(ten_succeeded, timeout_s=60)
    finally:
        hatchet.close()
    created = await created_runs(engine.connections[tenant_name], Scope(tenant_name))
    fired = [c for c in created if c.trigger and c.trigger.kind is TriggerKind.SCHEDULE]
    assert sorted(c.trigger.schedule_id for c in fired if c.trigger) == sorted(r.id for r in refs)
    assert len({c.run_id for c in fired}) == 10
    assert sorted(r["id"] for r in done) == sorted(c.run_id for c in fired)
    assert sorted(r["input"]["n"] for r in done) == list(range(10))
    owners = {Partition(0, PARTITIONS).owner(c.run_id, False) for c in fired}
    assert len(owners) >= 2, owners  # else this tested one partition
