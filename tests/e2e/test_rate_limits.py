"""Rate limits end to end, on real NATS and Postgres (issue 15): a static limit of 10/s over
100 steps on 4 workers takes at least 9 s from the first start to the last; the dispatcher
never offers more than 10 in any 1 s window (the units its tasks took, in the log), and so
the workers never start more than 10 in any window of 1 s less the spread of their pickup
times (attempts' start times in Postgres: a start is its offer plus the time a worker took
to get the task, which varies by some ms, by more on a loaded machine); a dynamic key limits
each value on its own; a held step says why in ``natchet runs get``; a held step holds no
worker slot."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import warnings
from contextlib import AsyncExitStack
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client as NATS

from eventstore import replay
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from projector import get_run
from schemas import decode_subject, parse
from tests.conftest import eventually, running
from tests.support import hatchet_for
from tests.support import natchet_cli as natchet
from worker import Context, RateLimit, RateLimitDuration

pytestmark = pytest.mark.timeout(180)

STEPS, PER_SECOND = 100, 10


async def starts(
    db: psycopg.AsyncConnection[Any], tenant: str, workflow: str, count: int
) -> list[tuple[dt.datetime, Any]]:
    """The start time (and run input) of every succeeded attempt of ``workflow``, once all
    ``count`` are projected, in order."""

    async def projected() -> list[tuple[dt.datetime, Any]] | None:
        cur = await db.execute(
            "SELECT a.started_at, r.input FROM attempts a"
            " JOIN runs r ON r.tenant = a.tenant AND r.id = a.run_id"
            " WHERE a.tenant = %s AND r.workflow = %s AND a.status = 'SUCCEEDED'"
            " ORDER BY a.started_at",
            (tenant, workflow),
        )
        rows = await cur.fetchall()
        return [(r[0], r[1]) for r in rows] if len(rows) == count else None

    return await eventually(projected, timeout_s=60)


def most_in_a_window(times: list[dt.datetime], seconds: float) -> int:
    """The most of ``times`` (sorted) within any window of ``seconds``: [t, t + seconds)."""
    window = dt.timedelta(seconds=seconds)
    return max(sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times))


async def test_a_static_limit_of_10_per_second_spreads_100_steps_over_9_seconds(
    nats_server: NatsServer,
    nc: NATS,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    await hatchet.rate_limits.aio_put("openai", PER_SECOND, RateLimitDuration.SECOND)
    wf = hatchet.workflow(name="Calls")

    @wf.task(rate_limits=[RateLimit(static_key="openai", units=1)])
    async def call(input: Any, ctx: Context) -> int:
        return 1

    async with AsyncExitStack() as stack:
        for i in range(4):
            await stack.enter_async_context(
                running(hatchet.worker(f"w{i}", slots=8, workflows=[wf]))
            )
        # The limit counts offers, which starts follow within the workers' pickup time:
        # one run first, so every worker is pulling (a queue pulled late would start a
        # second's offers together with the next second's).
        assert await asyncio.wait_for(wf.aio_run({"n": -1}), 30) == {"call": 1}
        refs = await hatchet.admin.aio_run_workflows(
            [{"workflow_name": "Calls", "input": {"n": n}} for n in range(STEPS)]
        )
        for ref in refs:
            await asyncio.wait_for(ref.aio_result(), 120)
    hatchet.close()

    rows = await starts(db, tenant_name, "Calls", STEPS + 1)
    times = [t for t, input in rows if input["n"] >= 0]
    took = (times[-1] - times[0]).total_seconds()
    assert took >= (STEPS / PER_SECOND) - 1, f"100 steps at 10/s started within {took:.2f}s"

    # What the dispatcher decided: exactly the limit, in the log's tasks.
    offered = {}
    async for rec in replay(nc, tenant_name, [f"{tenant_name}.*.tasks.Calls.>"]):
        task = decode_subject(parse(rec.subject), rec.data)
        [use] = task.rate_limits
        offered[task.input["n"]] = dt.datetime.fromisoformat(use.at)
    assert len(offered) == STEPS + 1
    assert most_in_a_window(sorted(offered.values()), 1.0) <= PER_SECOND
    # What the workers did: each start is its offer plus a pickup time, so no more than the
    # limit start within any window a second long less the pickups' spread. How long a
    # pickup takes is the machine's load, not the limit's (a loaded CI once spread them
    # 0.76 s): the exact check is the log's offers above; this one needs a spread under a
    # second to say anything, and the test says which it got.
    pickup = [(t - offered[i["n"]]).total_seconds() for t, i in rows]
    spread = max(pickup) - min(pickup)
    window = 1.0 - spread
    if window > 0:
        busiest = most_in_a_window([t for t, _input in rows], window)
        offsets = [round((t - rows[0][0]).total_seconds(), 3) for t, _input in rows]
        assert busiest <= PER_SECOND, f"{busiest} started within {window:.3f}s: {offsets}"
    else:
        warnings.warn(f"pickups spread {spread:.3f}s: starts say nothing", stacklevel=1)


async def test_a_dynamic_key_limits_each_value_on_its_own(
    nats_server: NatsServer,
    nc: NATS,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = hatchet.workflow(name="PerUser")
    per_user = RateLimit(
        dynamic_key="input.user", units=1, limit=2, duration=RateLimitDuration.SECOND
    )

    @wf.task(rate_limits=[per_user])
    async def call(input: Any, ctx: Context) -> int:
        return 1

    async with running(hatchet.worker("w", slots=8, workflows=[wf])):
        refs = await hatchet.admin.aio_run_workflows(
            [
                {"workflow_name": "PerUser", "input": {"user": user, "n": n}}
                for n in range(6)
                for user in ("ada", "bob")
            ]
        )
        for ref in refs:
            await asyncio.wait_for(ref.aio_result(), 60)
    hatchet.close()

    assert len(await starts(db, tenant_name, "PerUser", 12)) == 12
    by_user: dict[str, list[dt.datetime]] = {"ada": [], "bob": []}
    async for rec in replay(nc, tenant_name, [f"{tenant_name}.*.tasks.PerUser.>"]):
        task = decode_subject(parse(rec.subject), rec.data)
        [use] = task.rate_limits
        assert use.key == task.input["user"]  # the dynamic key's value is the limit
        by_user[use.key].append(dt.datetime.fromisoformat(use.at))
    for user, times in by_user.items():
        assert len(times) == 6
        assert most_in_a_window(sorted(times), 1.0) <= 2, f"{user}: more than 2 a second"
        assert (max(times) - min(times)).total_seconds() >= 2, user  # 3 windows of 2
    # Each key's limit is its own: bob's first two did not wait for ada's.
    assert abs((sorted(by_user["bob"])[1] - sorted(by_user["ada"])[1]).total_seconds()) < 0.9


async def test_a_held_step_says_why_and_holds_no_slot(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    dsn: str,
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    await hatchet.rate_limits.aio_put("slow", 1, RateLimitDuration.MINUTE)
    limited = hatchet.workflow(name="Limited")

    @limited.task(rate_limits=[RateLimit(static_key="slow")])
    async def call(input: Any, ctx: Context) -> str:
        return "called"

    other = hatchet.workflow(name="Other")

    @other.task()
    async def free(input: Any, ctx: Context) -> str:
        return "free"

    # One slot: the held step must not take it, or Other could not run.
    async with running(hatchet.worker("w", slots=1, workflows=[limited, other])):
        first = await limited.aio_run_no_wait({})
        assert await asyncio.wait_for(first.aio_result(), 30) == {"call": "called"}
        second = await limited.aio_run_no_wait({})

        async def held() -> dict[str, Any] | None:
            run = await get_run(db, second.workflow_run_id, tenant=tenant_name)
            step = None if run is None else run["steps"][0]
            return step if step and step.get("waiting_for") else None

        step = await eventually(held, timeout_s=30)
        assert step["status"] == "QUEUED"
        assert step["waiting_for"].startswith("rate limit 'slow' allows 1 units per 1m;")
        assert await asyncio.wait_for(other.aio_run({}), 30) == {"free": "free"}
        out = await natchet(
            nats_server.url, dsn, "runs", "get", second.workflow_run_id, "--tenant", tenant_name
        )
        assert "QUEUED" in out and "waiting for rate limit 'slow' allows 1 units per 1m" in out
        run = await get_run(db, second.workflow_run_id, tenant=tenant_name)
        assert run is not None and run["status"] == "QUEUED"  # still held: a minute's window
    hatchet.close()


async def test_an_undefined_key_waits_until_put_and_a_step_over_its_limit_fails(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    dsn: str,
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = hatchet.workflow(name="Later")

    @wf.task(rate_limits=[RateLimit(static_key="later", units=2)])
    async def call(input: Any, ctx: Context) -> str:
        return "ok"

    async with running(hatchet.worker("w", slots=2, workflows=[wf])):
        ref = await wf.aio_run_no_wait({})

        async def waiting() -> str | None:
            run = await get_run(db, ref.workflow_run_id, tenant=tenant_name)
            return None if run is None else run["steps"][0].get("waiting_for")

        why = await eventually(waiting, timeout_s=30)
        assert why.startswith("rate limit 'later' is not defined: hatchet.rate_limits.put(")
        cli = (nats_server.url, dsn)
        said = await natchet(
            *cli, "ratelimits", "put", "later", "5", "second", "--tenant", tenant_name
        )
        assert said == "rate limit 'later': 5 units per SECOND\n"
        assert await asyncio.wait_for(ref.aio_result(), 30) == {"call": "ok"}
        listed = await natchet(*cli, "ratelimits", "list", "--json", "--tenant", tenant_name)
        assert [(r["key"], r["limit"], r["duration"]) for r in json.loads(listed)] == [
            ("later", 5, "SECOND")
        ]
        await hatchet.rate_limits.aio_put("later", 1, RateLimitDuration.SECOND)
        too_big = await wf.aio_run_no_wait({})
        with pytest.raises(Exception, match="takes 2: it can never run"):
            await asyncio.wait_for(too_big.aio_result(), 30)
    hatchet.close()
