"""Crons and scheduled runs under tenancy: a tenant's token may create, list and delete its
own (the grants suffice), but never write what only the engine writes (armed, fired,
rejected), reach its timers stream, or touch another tenant's crons."""

from __future__ import annotations

import datetime as dt

import pytest

from eventstore import Append, PermissionDeniedError, append
from eventstore.triggers import (
    create_cron,
    create_schedule,
    delete_cron,
    delete_schedule,
    list_crons,
    list_schedules,
)
from natchet.engine import Engine
from schemas import Scope, encode
from schemas.messages import CronArmed, CronCreated, CronFired, ScheduleFired, TimerFired
from schemas.subjects import schedules_stream_name
from tests.conftest import eventually
from tests.tenancy.conftest import Attacker, Victim
from tests.tenancy.test_attacks import untouched, violation  # noqa: F401 (a fixture)
from tests.tenancy.test_log_rules import ack_of, own_log, unchanged

pytestmark = pytest.mark.timeout(120)


async def test_a_tenant_manages_its_own_crons_and_schedules_with_its_token(
    attacker: Attacker,
) -> None:
    scope = Scope(attacker.tenant)
    await create_cron(attacker.nc, scope, "Echo", "n", "0 3 * * *", known_workflow=False)
    when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    made = await create_schedule(attacker.nc, scope, "Echo", when, known_workflow=False)

    async def armed() -> bool:
        (cron,) = await list_crons(attacker.nc, scope)
        return cron.next_fire is not None

    await eventually(armed)  # the engine armed it, and the tenant reads that back
    assert [s.id for s in await list_schedules(attacker.nc, scope)] == [made.id]
    await delete_cron(attacker.nc, scope, "n")
    await delete_schedule(attacker.nc, scope, made.id)
    assert await list_crons(attacker.nc, scope) == []
    assert not attacker.violations()


async def test_engine_records_and_timers_are_out_of_a_tenants_reach(attacker: Attacker) -> None:
    scope = Scope(attacker.tenant)
    forged = [
        (scope.cron("n", "armed"), encode(CronArmed("n", "x", "2030-01-01T00:00:00+00:00"))),
        (scope.cron("n", "fired"), encode(CronFired("n", "x", "2030-01-01T00:00:00+00:00", "r"))),
        (scope.schedule("s", "fired"), encode(ScheduleFired("s", "r"))),
    ]
    timer = encode(TimerFired("cron", "n", "x", "2030-01-01T00:00:00+00:00"))
    forged += [(scope.timer("cron", "n"), timer), (scope.fire("cron", "n"), timer)]
    for subject, body in forged:
        with pytest.raises(PermissionDeniedError):
            await append(attacker.nc, Append(subject, body))
    stream = schedules_stream_name(attacker.tenant)
    await attacker.refused(
        f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.PURGE.{stream}", body=b""
    )


@pytest.mark.usefixtures("untouched")  # B's streams and rows unchanged after it
async def test_a_tenant_cannot_create_or_delete_another_tenants_crons(
    attacker: Attacker, victim: Victim
) -> None:
    other = Scope(victim.tenant)
    created = CronCreated("x", "evil", "Echo", "* * * * * *")
    for subject, body in (
        (other.cron("evil", "created"), encode(created)),
        (other.cron("evil", "deleted"), b"{}"),
        (other.schedule("s", "created"), b"{}"),
    ):
        with pytest.raises(PermissionDeniedError, match=subject):
            await append(attacker.nc, Append(subject, body))
    await attacker.nc.publish(other.cron("evil", "created"), encode(created))
    await violation(attacker, other.cron("evil", "created"))


@pytest.mark.usefixtures("untouched")  # B's streams and rows unchanged after it
@pytest.mark.parametrize("target", ["own", "other"])
async def test_a_cron_record_cannot_carry_a_message_schedule_into_the_log(
    attacker: Attacker, victim: Victim, tenancy_engine: Engine, target: str
) -> None:
    """A tenant may append ``crons.<name>.created`` to its log: with JetStream's own
    schedule headers on it, it would have the server write, every second, a forged run end
    into its own history or (through the target) another tenant's. The log does not allow
    message schedules, so the append is refused and nothing is stored anywhere."""
    scope = Scope(attacker.tenant if target == "own" else victim.tenant)
    headers = {
        "Nats-Schedule": "@every 1s",
        "Nats-Schedule-Target": scope.run("forged", "finished"),
    }
    before = await own_log(tenancy_engine, attacker.tenant)
    body = encode(CronCreated("x", "evil", "Echo", "* * * * * *"))
    ack = await ack_of(attacker.nc, Scope(attacker.tenant).cron("evil", "created"), headers, body)
    assert "error" in ack and "schedule" in ack["error"]["description"].lower(), ack
    await unchanged(attacker.nc, lambda: own_log(tenancy_engine, attacker.tenant), before)
