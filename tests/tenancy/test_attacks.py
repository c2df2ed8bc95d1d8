"""An attacker holding tenant A's valid token goes after tenant B. The broker refuses every
attempt; B's log and read model do not change; A's own work still goes through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import orjson
import psycopg
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from eventstore import Append, PermissionDeniedError, append
from eventstore.connection import request
from eventstore.provision import task_consumer_name
from natchet.engine import Engine
from projector import list_runs
from schemas import Scope, encode, stream_name
from schemas.durable import StepWaiting, StepWoken, WaitCondition, WaitKind
from schemas.holds import HoldKind, StepHeld
from schemas.ratelimits import RateLimitDuration, RateLimitSet
from schemas.subjects import tasks_stream_name
from tests.conftest import eventually
from tests.tenancy.conftest import Attacker, Victim, forged_result, log_nc
from tests.tenancy.watch import TenantView, tenant_view, unchanged

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def untouched(
    victim: Victim, attacker: Attacker, tenancy_engine: Engine, tdb: psycopg.AsyncConnection[Any]
) -> AsyncIterator[None]:
    """After the test: B's streams, consumers and rows as before (watched for a while after
    a server round trip), and A can still append."""

    async def look() -> TenantView:
        return await tenant_view(tenancy_engine, tdb, victim.tenant)

    before = await look()
    yield
    await unchanged(attacker.nc, look, before)
    await a_still_works(attacker)


async def a_still_works(attacker: Attacker) -> None:
    assert attacker.nc.is_connected
    seq = await append(attacker.nc, Append(Scope(attacker.tenant).event("own"), b'{"ok": 1}'))
    assert seq > 0


async def violation(attacker: Attacker, fragment: str) -> None:
    async def seen() -> bool:  # nats-py lowercases the server's error line
        return any(fragment.lower() in v.lower() for v in attacker.violations())

    await eventually(seen, timeout_s=5)


async def test_publish_event_to_other_tenant_is_refused(
    attacker: Attacker, victim: Victim, untouched: None
) -> None:
    subject = Scope(victim.tenant).event("echo")
    with pytest.raises(PermissionDeniedError, match=subject):
        await append(attacker.nc, Append(subject, b'{"evil": true}'))
    await attacker.nc.publish(subject, b'{"evil": true}')
    await violation(attacker, subject)


async def b_traffic(engine: Engine, victim: Victim) -> None:
    """A message B's users would hear: a run end, published in B's log account."""
    nc = log_nc(engine, victim.tenant)
    await nc.publish(Scope(victim.tenant).run("probe", "finished"), b"x")
    await nc.flush()


async def test_subscribe_to_other_tenant_subjects_is_refused(
    attacker: Attacker, victim: Victim, tenancy_engine: Engine
) -> None:
    got: list[Any] = []

    async def collect(msg: Any) -> None:
        got.append(msg)

    sub = await attacker.nc.subscribe(f"{victim.tenant}.>", cb=collect)
    await violation(attacker, f'subscription to "{victim.tenant}.>"')
    await b_traffic(tenancy_engine, victim)
    await attacker.nc.flush()
    assert got == []
    await sub.unsubscribe()
    await a_still_works(attacker)


async def test_subscribe_to_everything_is_refused(
    attacker: Attacker, victim: Victim, tenancy_engine: Engine
) -> None:
    got: list[Any] = []

    async def collect(msg: Any) -> None:
        got.append(msg)

    sub = await attacker.nc.subscribe(">", cb=collect)
    await violation(attacker, 'subscription to ">"')
    # A's own inboxes (``_INBOX.>`` included) live in A's own account: nothing of B's there.
    inbox = await attacker.nc.subscribe("_INBOX.>", cb=collect)
    await b_traffic(tenancy_engine, victim)
    await attacker.nc.flush()
    assert got == []
    await sub.unsubscribe()
    await inbox.unsubscribe()
    await a_still_works(attacker)


async def test_create_consumer_on_other_tenant_stream_is_refused(
    attacker: Attacker, victim: Victim, untouched: None
) -> None:
    stream = stream_name(victim.tenant)
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, durable_name="stolen")
    for subject in (
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.stolen",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.stolen",
    ):
        body = orjson.dumps({"stream_name": stream, "config": config.as_dict()})
        with pytest.raises(PermissionDeniedError):
            await request(attacker.nc, subject, body, timeout_s=3)
    with pytest.raises((nats.errors.Error, asyncio.TimeoutError)):
        await attacker.nc.jetstream(timeout=2).add_consumer(stream, config)


async def test_fetch_from_other_tenant_consumer_is_refused(
    attacker: Attacker, victim: Victim, untouched: None, tenancy_engine: Engine
) -> None:
    stream = tasks_stream_name(victim.tenant)
    consumer = task_consumer_name(Scope(victim.tenant), victim.workflow)
    with pytest.raises(PermissionDeniedError):
        await request(
            attacker.nc,
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            b'{"batch": 1, "expires": 1000000000}',
            timeout_s=3,
        )
    info = await log_nc(tenancy_engine, victim.tenant).jetstream().consumer_info(stream, consumer)
    assert info.num_pending + info.num_ack_pending >= 1  # B's task is still B's


async def test_direct_get_from_other_tenant_stream_is_refused(
    attacker: Attacker, victim: Victim, untouched: None
) -> None:
    stream = stream_name(victim.tenant)
    for subject, body in (
        (f"$JS.API.DIRECT.GET.{stream}", b'{"seq": 1}'),
        (f"$JS.API.DIRECT.GET.{stream}.{victim.tenant}.default.workflows.Echo", b""),
        (f"$JS.API.STREAM.MSG.GET.{stream}", b'{"seq": 1}'),
        (f"$JS.API.STREAM.INFO.{stream}", b""),
    ):
        with pytest.raises(PermissionDeniedError):
            await request(attacker.nc, subject, body, timeout_s=3)


async def test_ack_other_tenant_message_is_refused(
    attacker: Attacker, victim: Victim, tenancy_engine: Engine
) -> None:
    stream = tasks_stream_name(victim.tenant)
    consumer = task_consumer_name(Scope(victim.tenant), victim.workflow)
    js = log_nc(tenancy_engine, victim.tenant).jetstream()
    sub = await js.pull_subscribe_bind(consumer, stream)
    (msg,) = await sub.fetch(1, timeout=5)
    assert msg.reply.startswith(f"$JS.ACK.{stream}.")
    await attacker.nc.publish(msg.reply, b"+ACK")
    await attacker.nc.publish(msg.reply, b"+TERM")
    await violation(attacker, msg.reply)
    info = await js.consumer_info(stream, consumer)
    assert info.num_ack_pending == 1  # neither acked nor terminated by A
    await msg.nak()
    await sub.unsubscribe()


async def test_forged_result_for_other_tenant_run_is_refused(
    attacker: Attacker, victim: Victim, untouched: None, tdb: psycopg.AsyncConnection[Any]
) -> None:
    forged = forged_result(victim.pending_run)
    subject = Scope(victim.tenant).run(victim.pending_run, "result")
    with pytest.raises(PermissionDeniedError):
        await append(attacker.nc, Append(subject, encode(forged)))
    runs = {r["id"]: r["status"] for r in await list_runs(tdb, tenant=victim.tenant)}
    assert runs[victim.pending_run] == "QUEUED"


async def test_forged_durable_wait_for_other_tenant_run_is_refused(
    attacker: Attacker, victim: Victim, untouched: None, tdb: psycopg.AsyncConnection[Any]
) -> None:
    """A wait with a valid token of A, for B's queued step: it would park B's step until an
    event A never sends. The broker refuses it; B's run is still QUEUED."""
    never = WaitCondition(WaitKind.EVENT, event_key="never")
    forged = StepWaiting(victim.pending_run, "say", 1, 1, 0, (never,), "evil", "evil")
    subject = Scope(victim.tenant).run(victim.pending_run, "waiting")
    with pytest.raises(PermissionDeniedError):
        await append(attacker.nc, Append(subject, encode(forged)))
    runs = {r["id"]: r["status"] for r in await list_runs(tdb, tenant=victim.tenant)}
    assert runs[victim.pending_run] == "QUEUED"


async def test_a_tenant_cannot_forge_the_engines_wake_of_its_own_durable_step(
    attacker: Attacker, victim: Victim, untouched: None
) -> None:
    """``woken`` is the engine's: a tenant that could append one for its own run would wake
    its step with any payload it likes (and the dispatcher folds it). Its own valid token,
    its own subject: refused all the same, and its own work goes on."""
    forged = StepWoken("r1", "say", 1, 0, 0, WaitKind.EVENT, event_key="k", payload={"x": 1})
    subject = Scope(attacker.tenant).run("r1", "woken")
    with pytest.raises(PermissionDeniedError):
        await append(attacker.nc, Append(subject, encode(forged)))


async def test_a_tenant_cannot_forge_the_engines_hold_of_its_own_step(
    attacker: Attacker, victim: Victim, untouched: None
) -> None:
    """``held`` is the engine's (flow control): a tenant that could append one would park
    a step of its own QUEUED with no task (the dispatcher folds it). Refused all the same;
    setting a rate limit (``ratelimits.<key>``) is the tenant's to do, and it may. Nor can
    it set another tenant's rate limit."""
    forged = StepHeld("r1", "say", 1, HoldKind.RATE_LIMIT, "forged")
    subject = Scope(attacker.tenant).run("r1", "held")
    with pytest.raises(PermissionDeniedError):
        await append(attacker.nc, Append(subject, encode(forged)))
    limit = RateLimitSet("openai", 10, RateLimitDuration.SECOND)
    await append(attacker.nc, Append(Scope(attacker.tenant).ratelimit("openai"), encode(limit)))
    with pytest.raises(PermissionDeniedError):
        await append(attacker.nc, Append(Scope(victim.tenant).ratelimit("openai"), encode(limit)))


async def test_attacker_cannot_see_other_tenant_runs_in_its_own_fold(
    attacker: Attacker, victim: Victim, tenancy_engine: Engine
) -> None:
    """The engine serves both tenants apart: A's dispatcher knows nothing of B's runs."""
    a_state = tenancy_engine.dispatchers[attacker.tenant].state
    assert victim.finished_run not in a_state.runs
    assert victim.pending_run not in a_state.runs


async def test_reply_subject_cannot_inject_into_other_tenant(
    attacker: Attacker, victim: Victim, untouched: None
) -> None:
    """Once a strict xfail: a pub ack steered into B's events started B's workflow. The
    ack is now sent inside A's own account, where B's subjects lead nowhere."""
    await attacker.nc.publish(
        Scope(attacker.tenant).event("x"), b"{}", reply=Scope(victim.tenant).event("echo")
    )


async def test_forged_refusal_for_other_tenant_worker_is_refused(
    attacker: Attacker, victim: Victim, untouched: None
) -> None:
    """The engine tells a worker it refuses its protocol on ``workers.<id>.refused`` (a
    stream export into the tenant's account): A cannot send B's workers one to stop them."""
    subject = f"{Scope(victim.tenant).worker('b-worker-id')}.refused"
    await attacker.nc.publish(subject, b'{"reason": "stop", "accepts": [1]}')
    await violation(attacker, subject)


async def test_queue_depth_of_other_tenant_is_refused(
    attacker: Attacker, victim: Victim, untouched: None
) -> None:
    """What the metrics and KEDA read of a workflow's queue (its consumer's pending count)
    is B's alone: A cannot ask the JetStream API for it, nor list B's queues."""
    stream = tasks_stream_name(victim.tenant)
    consumer = task_consumer_name(Scope(victim.tenant), victim.workflow)
    await attacker.refused(
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        f"$JS.API.CONSUMER.LIST.{stream}",
        f"$JS.API.CONSUMER.NAMES.{stream}",
        f"$JS.API.STREAM.INFO.{stream}",
        body=b"",
    )
    await violation(attacker, "$JS.API.CONSUMER.INFO")


async def test_a_reply_subject_cannot_reach_other_tenant_workers(
    attacker: Attacker, victim: Victim, tenancy_engine: Engine, untouched: None
) -> None:
    """A asks its own log (a direct get, which B's and A's log accounts both serve) with B's
    worker-refusal subject as the reply: the answer stays in A's account, and nothing
    arrives where B's workers listen for the engine's refusals."""
    heard: list[Any] = []

    async def collect(msg: Any) -> None:
        heard.append(msg)

    b_log = log_nc(tenancy_engine, victim.tenant)
    refusals = await b_log.subscribe(f"{victim.tenant}.*.workers.*.refused", cb=collect)
    await b_log.flush()
    reply = f"{Scope(victim.tenant).worker('w1')}.refused"
    own = stream_name(attacker.tenant)
    await attacker.nc.publish(f"$JS.API.DIRECT.GET.{own}", b'{"seq": 1}', reply=reply)
    await attacker.nc.publish(Scope(attacker.tenant).event("own"), b"{}", reply=reply)
    await attacker.nc.flush()
    await a_still_works(attacker)  # a round trip through the server after the attempts
    await b_log.flush()
    assert heard == []
    await refusals.unsubscribe()
