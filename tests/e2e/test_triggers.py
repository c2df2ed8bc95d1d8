"""Crons and scheduled runs (issue 14) against the real engine: ticks fire the expected
runs across an engine restart, once each; a scheduled run fires within 1 s of its time
after the engine was killed in between, and a deleted one never fires; namespaces see only
their own."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from eventstore import Append, ConfigError, append, direct_history
from eventstore.cronexpr import iso, parse_instant
from eventstore.provision import FIRES_CONSUMER, ensure_tenant_stream, log_stream_config
from eventstore.triggers import (
    TriggerError,
    create_cron,
    create_schedule,
    delete_cron,
    delete_schedule,
    list_crons,
    list_schedules,
)
from natchet.config import EngineSettings
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import Scope, StepDef, WorkflowDef, encode, parse
from schemas.codec import decode_subject
from schemas.messages import CronCreated, RunCreated, TriggerKind
from schemas.subjects import log_subjects, schedules_stream_name
from tests.conftest import eventually, running
from tests.support import hatchet_for, runs_of, start_engine_process, stop
from worker import Context

pytestmark = pytest.mark.timeout(120)


async def register(nc: NATS, scope: Scope, name: str = "Tick") -> None:
    """A workflow as a worker registers it (no worker runs: runs are created and queued)."""
    wf = WorkflowDef(name=name, version="v1", steps=(StepDef("only"),))
    await append(nc, Append(scope.workflow(name), encode(wf)))


async def created_runs(nc: NATS, scope: Scope) -> list[RunCreated]:
    out = []
    async for rec in direct_history(nc, scope.tenant, f"{scope.prefix}.runs.*.created"):
        msg = decode_subject(parse(rec.subject), rec.data)
        assert isinstance(msg, RunCreated)
        out.append(msg)
    return out


async def cron_ticks(nc: NATS, scope: Scope, name: str) -> list[str]:
    runs = await created_runs(nc, scope)
    return [
        r.trigger.fire_at or ""
        for r in runs
        if r.trigger and r.trigger.kind is TriggerKind.CRON and r.trigger.cron == name
    ]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def test_a_cron_fires_each_tick_once_across_an_engine_restart(
    nats_server: NatsServer, nc: NATS, dsn: str, tenant_name: str
) -> None:
    settings = EngineSettings(nats_server.url, dsn, (tenant_name,))
    scope = Scope(tenant_name)
    async with Engine(settings):
        await register(nc, scope)
        await create_cron(nc, scope, "Tick", "every-second", "* * * * * *", {"n": 1})
        await eventually(lambda: _at_least(nc, scope, 3), timeout_s=15)
    before = await cron_ticks(nc, scope, "every-second")
    (cron,) = await list_crons(nc, scope)
    assert cron.next_fire is not None
    pending = parse_instant(cron.next_fire)
    # Down across the armed tick and two more: they are missed.
    await eventually(lambda: now() > pending + dt.timedelta(seconds=2.5), timeout_s=10)
    back_at = now()
    async with Engine(settings):
        await eventually(lambda: _at_least(nc, scope, len(before) + 3), timeout_s=15)
        ticks = await cron_ticks(nc, scope, "every-second")
    assert len(ticks) == len(set(ticks)), "a tick started two runs"
    assert ticks == sorted(ticks)
    times = [parse_instant(t) for t in ticks]
    # Before the stop: one run a second, no tick skipped.
    steps = itertools.pairwise(times[: len(before)])
    assert all(b - a == dt.timedelta(seconds=1) for a, b in steps)
    # The tick armed before the stop fires once, late, on recovery; the next one is after
    # the recovery: the ticks missed while the engine was down start nothing.
    late = times[len(before)]
    assert late == pending
    assert times[len(before) + 1] > back_at
    runs = await created_runs(nc, scope)
    assert len({r.run_id for r in runs}) == len(runs) == len(ticks)


async def _at_least(nc: NATS, scope: Scope, n: int) -> bool:
    return len(await cron_ticks(nc, scope, "every-second")) >= n


@pytest.fixture
async def engine_process(
    nats_server: NatsServer, dsn: str, tenant_name: str, tmp_path: Path
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for proc in procs:
        if proc.returncode is None:
            await stop(proc)


async def _timer_set(nc: NATS, scope: Scope, schedule_id: str) -> bool:
    try:
        await nc.jetstream().get_last_msg(
            schedules_stream_name(scope.tenant), scope.timer("schedule", schedule_id)
        )
    except NotFoundError:
        return False
    return True


async def _fires_consumer_ready(nc: NATS, tenant: str) -> bool:
    """The engine has set up the dispatcher's consumer of timer fires."""
    try:
        await nc.jetstream().consumer_info(schedules_stream_name(tenant), FIRES_CONSUMER)
    except NotFoundError:
        return False
    return True


async def _fires_pulled(nc: NATS, tenant: str) -> bool:
    """An engine is waiting for timer fires (a pull request on their consumer)."""
    info = await nc.jetstream().consumer_info(schedules_stream_name(tenant), FIRES_CONSUMER)
    return bool(info.num_waiting)


async def test_a_scheduled_run_fires_once_on_time_after_a_kill_and_a_deleted_one_never(
    nats_server: NatsServer,
    nc: NATS,
    dsn: str,
    tenant_name: str,
    tmp_path: Path,
    engine_process: list[asyncio.subprocess.Process],
) -> None:
    scope = Scope(tenant_name)
    log = tmp_path / "engine.log"
    first = await start_engine_process(nats_server, dsn, tenant_name, log)
    engine_process.append(first)

    await eventually(lambda: _fires_consumer_ready(nc, tenant_name), timeout_s=30)
    await register(nc, scope)
    due = now() + dt.timedelta(seconds=3)
    kept = await create_schedule(nc, scope, "Tick", due, {"kept": True})
    gone = await create_schedule(nc, scope, "Tick", due, {"kept": False})
    await eventually(lambda: _timer_set(nc, scope, kept.id))
    await eventually(lambda: _timer_set(nc, scope, gone.id))
    await delete_schedule(nc, scope, gone.id)
    await eventually(lambda: _not(_timer_set(nc, scope, gone.id)))
    first.kill()  # kill -9
    await first.wait()
    engine_process.append(await start_engine_process(nats_server, dsn, tenant_name, log))
    # When the new engine pulls its fires: on time means by then, if it came after the due
    # time (a loaded machine can take longer than the 3 s to start an engine).
    await eventually(lambda: _fires_pulled(nc, tenant_name), timeout_s=30)
    back = (now() - due).total_seconds()

    async def scheduled() -> list[RunCreated]:
        return [
            r
            for r in await created_runs(nc, scope)
            if r.trigger and r.trigger.kind is TriggerKind.SCHEDULE
        ]

    (run,) = await eventually(scheduled, timeout_s=15)
    assert run.trigger is not None
    assert run.trigger.schedule_id == kept.id and run.input == {"kept": True}
    late = (parse_instant(run.created_at) - due).total_seconds()
    print(f"scheduled run created {late:+.3f}s from its time, across a kill -9")
    # The new engine dispatches once the killed one's lease expired (natchet.leases: the
    # ttl after its last renewal), so the run is late by up to when it pulls its fires
    # (``back``), never early or twice.
    assert -0.05 <= late <= max(back, 0.0) + 1.0, (late, back)
    views = {v.id: v for v in await list_schedules(nc, scope)}
    assert views[kept.id].status == "FIRED" and views[kept.id].run_id == run.run_id
    assert views[gone.id].status == "DELETED"
    # A deleted one never fires: its time is past, and the only scheduled run is the kept one
    # (the fires stream holds nothing for it either).
    await eventually(lambda: now() > due + dt.timedelta(seconds=1.5), timeout_s=10)
    assert len(await scheduled()) == 1


async def _not(check: object) -> bool:
    assert asyncio.iscoroutine(check)
    return not await check


async def test_namespaces_see_only_their_own_crons_and_schedules(
    engine: Engine, nc: NATS, tenant_name: str
) -> None:
    alice, bob = Scope(tenant_name, "alice"), Scope(tenant_name, "bob")
    await register(nc, alice)
    await register(nc, bob)
    await create_cron(nc, alice, "Tick", "nightly", "0 3 * * *", timezone="Europe/Paris")
    await create_schedule(nc, alice, "Tick", now() + dt.timedelta(hours=1))
    assert [c.name for c in await list_crons(nc, alice)] == ["nightly"]
    assert await list_crons(nc, bob) == []
    assert await list_schedules(nc, bob) == []
    assert len(await list_schedules(nc, alice)) == 1
    with pytest.raises(TriggerError, match=r"no cron named 'nightly' in .*bob"):
        await delete_cron(nc, bob, "nightly")
    # Bob's cron of the same name is his own: deleting it leaves alice's.
    await create_cron(nc, bob, "Tick", "nightly", "0 4 * * *")
    await delete_cron(nc, bob, "nightly")
    assert [c.name for c in await list_crons(nc, alice)] == ["nightly"]
    armed = await eventually(lambda: _armed(nc, alice))
    assert armed.endswith("+00:00")
    assert parse_instant(armed).astimezone(dt.UTC).hour in (2, 3)  # 03:00 Paris


async def _armed(nc: NATS, scope: Scope) -> str | None:
    (cron,) = await list_crons(nc, scope)
    return cron.next_fire


async def test_bad_crons_and_schedules_are_refused_with_one_line(
    engine: Engine, nc: NATS, tenant_name: str
) -> None:
    scope = Scope(tenant_name)
    await register(nc, scope)
    with pytest.raises(TriggerError, match=r"field 2 \(hour\) is invalid"):
        await create_cron(nc, scope, "Tick", "bad", "0 25 * * *")
    with pytest.raises(TriggerError, match="unknown workflow 'Nope'"):
        await create_cron(nc, scope, "Nope", "bad", "0 1 * * *")
    with pytest.raises(TriggerError, match="in the past"):
        await create_schedule(nc, scope, "Tick", now() - dt.timedelta(seconds=1))
    with pytest.raises(TriggerError, match="no timezone"):
        await create_schedule(nc, scope, "Tick", dt.datetime(2030, 1, 1))
    assert iso(now())  # (the module's helper, used by the CLI too)


async def test_on_crons_runs_the_workflow_and_a_worker_without_them_deletes_them(
    engine: Engine, nats_server: NatsServer, nc: NATS, tenant_name: str, db: Any
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    scope = Scope(tenant_name)
    try:
        ticking = hatchet.workflow(name="Ticking", on_crons=["* * * * * *"])

        @ticking.task()
        async def beat(input: Any, ctx: Context) -> dict[str, Any]:
            return {"ok": True}

        worker = hatchet.worker("ticker", workflows=[ticking])
        async with running(worker):
            (cron,) = await eventually(lambda: list_crons(nc, scope))
            assert (cron.name, cron.workflow) == ("Ticking-cron-0", "Ticking")

            async def two_succeeded() -> bool:
                runs = await runs_of(db, tenant_name)
                return sum(r["status"] == "SUCCEEDED" for r in runs) >= 2

            await eventually(two_succeeded, timeout_s=30)
        with pytest.raises(ConfigError, match=r"on_crons: .*field 2 \(hour\)"):
            hatchet.workflow(name="Bad", on_crons=["0 25 * * *"])
        quiet = hatchet.workflow(name="Ticking")

        @quiet.task()
        async def beat2(input: Any, ctx: Context) -> dict[str, Any]:
            return {}

        async with running(hatchet.worker("quiet", workflows=[quiet])):
            await eventually(lambda: _none(nc, scope))
    finally:
        hatchet.close()


async def _none(nc: NATS, scope: Scope) -> bool:
    return await list_crons(nc, scope) == []


async def test_a_log_from_before_crons_gains_their_subjects_and_a_timers_stream(
    nc: NATS, tenant_name: str
) -> None:
    old = log_stream_config(tenant_name)
    old.subjects = [s for s in old.subjects or [] if ".crons." not in s and ".schedules." not in s]
    js = nc.jetstream()
    await js.add_stream(old)
    await ensure_tenant_stream(nc, tenant_name)
    stored = (await js.stream_info(old.name or "")).config
    assert sorted(stored.subjects or []) == sorted(log_subjects(tenant_name))
    assert stored.deny_purge and not stored.allow_msg_schedules  # still append-only
    timers = (await js.stream_info(schedules_stream_name(tenant_name))).config
    assert timers.allow_msg_schedules


async def test_the_sdk_clients_create_list_and_delete(
    engine: Engine, nats_server: NatsServer, nc: NATS, tenant_name: str
) -> None:
    await register(nc, Scope(tenant_name, "sdk"))
    hatchet = hatchet_for(nats_server, tenant_name, "sdk")
    try:
        made = await hatchet.cron.aio_create("Tick", "hourly", "0 * * * *", {"a": 1})
        assert (made.name, made.workflow, made.input) == ("hourly", "Tick", {"a": 1})
        # The sync API from a thread, as a script would call it.
        listed = await asyncio.to_thread(hatchet.cron.list)
        assert [c.name for c in listed] == ["hourly"]
        when = now() + dt.timedelta(minutes=5)
        ref = await asyncio.to_thread(hatchet.scheduled.create, "Tick", when, {"b": 2})
        assert [s.id for s in await hatchet.scheduled.aio_list()] == [ref.id]
        await hatchet.scheduled.aio_delete(ref.id)
        await asyncio.to_thread(hatchet.cron.delete, made.id)  # by id, as Hatchet's SDK
        assert await hatchet.cron.aio_list() == []
        (gone,) = await hatchet.scheduled.aio_list()
        assert gone.status == "DELETED"
        with pytest.raises(TriggerError, match="unknown workflow"):
            await hatchet.cron.aio_create("Nope", "x", "0 * * * *")
    finally:
        hatchet.close()


# The two records that break their schema on purpose (the e2e log check counts them).
@pytest.mark.invalid_messages(2)
async def test_malformed_cron_records_are_rejected_and_recorded_and_block_nothing(
    engine: Engine, nc: NATS, tenant_name: str, db: Any
) -> None:
    scope = Scope(tenant_name)
    await register(nc, scope)
    await append(nc, Append(scope.cron("junk", "created"), b"{not json"))
    await append(nc, Append(scope.cron("typed", "created"), b'{"name": "typed", "v": 1}'))
    bad = CronCreated("b1", "bad", "Tick", "0 25 * * *")  # past the SDK's own check
    await append(nc, Append(scope.cron("bad", "created"), encode(bad)))
    await create_cron(nc, scope, "Tick", "good", "0 1 * * *")

    async def recorded() -> Any:
        cur = await db.execute(
            "SELECT subject FROM rejections WHERE tenant = %s ORDER BY seq", (tenant_name,)
        )
        rejected = [r[0] for r in await cur.fetchall()]
        cur = await db.execute(
            "SELECT name, status, reason, next_fire_at IS NOT NULL FROM crons"
            " WHERE tenant = %s ORDER BY name",
            (tenant_name,),
        )
        crons = await cur.fetchall()
        return (rejected, crons) if len(crons) == 2 and crons[1][3] else None

    rejected, crons = await eventually(recorded, timeout_s=30)
    assert rejected == [scope.cron("junk", "created"), scope.cron("typed", "created")]
    (name, status, reason, _), good = crons
    assert (name, status) == ("bad", "REJECTED") and "field 2 (hour)" in reason
    assert good[:2] == ("good", "ACTIVE")  # armed: the dispatcher went on
    assert [c.name for c in await list_crons(nc, scope)] == ["good"]


async def test_a_cron_across_an_engine_kill_starts_each_tick_once(
    nats_server: NatsServer,
    nc: NATS,
    dsn: str,
    tenant_name: str,
    tmp_path: Path,
    engine_process: list[asyncio.subprocess.Process],
) -> None:
    scope = Scope(tenant_name)
    log = tmp_path / "engine.log"
    first = await start_engine_process(nats_server, dsn, tenant_name, log)
    engine_process.append(first)

    await eventually(lambda: _fires_consumer_ready(nc, tenant_name), timeout_s=30)
    await register(nc, scope)
    await create_cron(nc, scope, "Tick", "every-second", "* * * * * *")
    await eventually(lambda: _at_least(nc, scope, 3), timeout_s=20)
    first.kill()  # kill -9, wherever it was in a tick's decision
    await first.wait()
    killed_at = now()
    await eventually(lambda: now() > killed_at + dt.timedelta(seconds=3), timeout_s=10)
    back_at = now()
    engine_process.append(await start_engine_process(nats_server, dsn, tenant_name, log))
    before = await cron_ticks(nc, scope, "every-second")
    await eventually(lambda: _at_least(nc, scope, len(before) + 3), timeout_s=30)
    ticks = await cron_ticks(nc, scope, "every-second")
    assert len(ticks) == len(set(ticks)), "a tick started two runs"
    times = [parse_instant(t) for t in ticks]
    # At most one tick (the one armed at the kill) fires between the kill and the restart's
    # own ticks: the seconds the engine was down start nothing.
    down = [t for t in times if killed_at + dt.timedelta(seconds=1) < t <= back_at]
    assert len(down) <= 1, down
    runs = await created_runs(nc, scope)
    assert len({r.run_id for r in runs}) == len(runs) == len(ticks)
