"""The eventstore contract, on a real JetStream: what every caller relies on, and what any
change to the hot path must keep true. Appends (dedup, atomic batches, refusals), reading
to the end and following, direct reads, consuming with acks and redelivery, slot-exact pull
requests with their 408/409 accounting, and errors translated at the door."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.js.api import AckPolicy, ConsumerConfig

import eventstore
from eventstore import (
    Append,
    Backoff,
    Connection,
    Delivery,
    DuplicateBatchError,
    Inputs,
    Slots,
    SnapshotStore,
    Tail,
    TaskPuller,
    TransportError,
    append,
    append_atomic,
    direct_history,
    direct_last,
    ensure_dispatcher_consumer,
    ensure_task_consumer,
    ensure_tenant_stream,
    read_to_end,
    replay,
)
from eventstore.provision import DISPATCHER_CONSUMER
from schemas import Scope, stream_name
from schemas.subjects import tasks_stream_name
from tests.conftest import eventually

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def log(nc: Connection) -> AsyncIterator[Scope]:
    """A fresh tenant's streams; the scope to write in."""
    tenant = f"c{uuid.uuid4().hex[:12]}"
    await ensure_tenant_stream(nc, tenant)
    yield Scope(tenant)


def event(scope: Scope, n: int, msg_id: str | None = None) -> Append:
    return Append(scope.event("e"), f'{{"n": {n}}}'.encode(), msg_id)


async def read_all(nc: Connection, scope: Scope) -> list[Any]:
    return [r async for r in replay(nc, scope.tenant)]


# -- appends ------------------------------------------------------------------------------


async def test_append_returns_the_sequence_and_dedups_by_id(nc: Connection, log: Scope) -> None:
    first = await append(nc, event(log, 1, "same"))
    again = await append(nc, event(log, 1, "same"))
    other = await append(nc, event(log, 2))
    assert (first, again, other) == (1, 1, 2)
    assert [r.seq for r in await read_all(nc, log)] == [1, 2]


async def test_atomic_batch_is_all_in_order_or_none(nc: Connection, log: Scope) -> None:
    last = await append_atomic(nc, [event(log, n, f"b{n}") for n in range(5)])
    records = await read_all(nc, log)
    assert last == 5 and [r.data for r in records] == [f'{{"n": {n}}}'.encode() for n in range(5)]


async def test_a_batch_with_an_id_already_in_the_log_is_refused_whole(
    nc: Connection, log: Scope
) -> None:
    """The server refuses the whole batch when one id is a duplicate (the dispatcher then
    appends one by one, so the new messages still land: dispatcher/service.py)."""
    await append(nc, event(log, 0, "old"))
    with pytest.raises(DuplicateBatchError):
        await append_atomic(nc, [event(log, 1, "new1"), event(log, 0, "old"), event(log, 2)])
    assert len(await read_all(nc, log)) == 1


async def test_an_append_nobody_captures_or_too_large_is_refused_clearly(
    nc: Connection, log: Scope
) -> None:
    with pytest.raises(eventstore.AppendError, match="no stream captures"):
        await append(nc, Append(f"nowhere.{uuid.uuid4().hex}", b"{}"))
    with pytest.raises(eventstore.AppendRefusedError, match="maximum payload") as refused:
        await append(nc, Append(log.event("big"), b"x" * (nc.max_payload + 1)))
    assert refused.value.permanent
    assert eventstore.max_message_bytes(nc) < nc.max_payload  # room for natchet's headers


# -- reading ------------------------------------------------------------------------------


async def test_read_to_end_reads_through_a_lull_to_the_end_it_knows(
    nc: Connection, log: Scope
) -> None:
    """Defect 6 of issue 8: a replay used to stop after a second without messages although
    it knew its end sequence; a rebuild could then decide from part of the history."""
    for n in range(3):
        await append(nc, event(log, n))

    async def late() -> None:
        await asyncio.sleep(1.5)  # longer than the old replay's lull
        for n in range(3, 6):
            await append(nc, event(log, n))

    writer = asyncio.create_task(late())
    seqs = [r.seq async for r in read_to_end(nc, stream_name(log.tenant), until_seq=6)]
    await writer
    assert seqs == [1, 2, 3, 4, 5, 6]


async def test_a_filtered_read_ends_when_nothing_matching_is_left(
    nc: Connection, log: Scope
) -> None:
    await append(nc, Append(log.run("r1", "created"), b"{}"))
    for n in range(4):
        await append(nc, event(log, n))
    runs = [r.seq async for r in replay(nc, log.tenant, [f"{log.tenant}.*.runs.>"])]
    assert runs == [1]
    assert [r async for r in replay(nc, log.tenant, [f"{log.tenant}.*.workflows.*"])] == []


async def test_a_read_of_several_subjects_keeps_only_those_in_order(
    nc: Connection, log: Scope
) -> None:
    """Several subjects are matched in the client on an unfiltered consumer (a consumer
    with several filters walks every block's subject tree per fetch): still only the
    matching records, in stream order, and the read ends at the last one."""
    t = log.tenant
    await append(nc, Append(log.run("r1", "created"), b"{}"))
    for n in range(5):
        await append(nc, event(log, n))
    await append(nc, Append(log.workflow("wf"), b"{}"))
    await append(nc, Append(log.run("r1", "finished"), b"{}"))
    for n in range(5, 8):
        await append(nc, event(log, n))
    wanted = [f"{t}.*.runs.>", f"{t}.*.workflows.*"]
    assert [r.seq async for r in replay(nc, t, wanted)] == [1, 7, 8]
    assert [r.seq async for r in read_to_end(nc, stream_name(t), wanted, batch_size=2)] == [
        1,
        7,
        8,
    ]
    tail = Tail(nc, stream_name(t), 1, subjects=wanted, batch_size=4, idle_poll_s=0.05)
    seen = [r.subject for _ in range(4) for r in await tail.next_batch()]
    await tail.close()
    assert seen == [log.run("r1", "created"), log.workflow("wf"), log.run("r1", "finished")]


async def test_tail_hands_out_everything_once_in_order_then_follows(
    nc: Connection, log: Scope
) -> None:
    for n in range(10):
        await append(nc, event(log, n))
    tail = Tail(nc, stream_name(log.tenant), 4, batch_size=3, idle_poll_s=0.05)
    seen: list[int] = []
    while len(seen) < 7:
        seen += [r.seq for r in await tail.next_batch()]
    assert seen == list(range(4, 11))
    assert await tail.next_batch() == []  # nothing new: an idle poll
    await append(nc, event(log, 10))
    await eventually(lambda: _more(tail, seen))
    await tail.close()
    assert seen == list(range(4, 12))


async def _more(tail: Tail, seen: list[int]) -> bool:
    seen += [r.seq for r in await tail.next_batch()]
    return len(seen) == 8


async def test_direct_reads_see_the_last_and_the_whole_history_of_a_subject(
    nc: Connection, log: Scope
) -> None:
    for kind in ("created", "queued", "finished"):
        await append(nc, Append(log.run("r1", kind), kind.encode()))
    await append(nc, Append(log.run("r2", "created"), b"other run"))
    last = await direct_last(nc, log.tenant, log.run("r1", "finished"))
    assert last is not None and last.data == b"finished" and last.seq == 3
    assert await direct_last(nc, log.tenant, log.run("r9", "finished")) is None
    history = [r.data async for r in direct_history(nc, log.tenant, log.run_filter("r1"), batch=2)]
    assert history == [b"created", b"queued", b"finished"]


# -- consuming ----------------------------------------------------------------------------


async def test_inputs_are_redelivered_until_acked(nc: Connection, log: Scope) -> None:
    await ensure_dispatcher_consumer(nc, log.tenant)
    await append(nc, event(log, 1))
    inputs = Inputs(nc, stream_name(log.tenant), DISPATCHER_CONSUMER)
    (first,) = await inputs.fetch(10, 2)
    assert (first.seq, first.delivered) == (1, 1)
    await first.nak()
    (again,) = await eventually(lambda: inputs.fetch(10, 1))
    assert (again.seq, again.delivered) == (1, 2)
    await again.ack_sync()
    assert await inputs.fetch(10, 0.3) == []
    await inputs.close()


async def test_inputs_a_killed_dispatcher_fetched_come_back_after_its_successor_acks_later_ones(
    nc: Connection, log: Scope
) -> None:
    """Each input is acked on its own: a successor acking the inputs it decided must not ack
    those its killed predecessor had fetched and not decided (a cumulative ack did, and the
    engine kill -9 fault test lost a result)."""
    await ensure_dispatcher_consumer(nc, log.tenant)
    stream = stream_name(log.tenant)
    for n in range(2):
        await append(nc, event(log, n))
    killed = Inputs(nc, stream, DISPATCHER_CONSUMER)
    assert [d.seq for d in await killed.fetch(2, 2)] == [1, 2]
    await killed.close()  # never acks
    for n in range(2, 4):
        await append(nc, event(log, n))
    successor = Inputs(nc, stream, DISPATCHER_CONSUMER)
    later = await successor.fetch(2, 2)
    assert [d.seq for d in later] == [3, 4]
    for delivery in later:
        await delivery.ack_sync()
    back = await successor.fetch(10, eventstore.provision.DISPATCHER_ACK_WAIT_S + 3)
    assert [(d.seq, d.delivered) for d in back] == [(1, 2), (2, 2)]
    await successor.close()


async def test_the_ack_floor_is_the_end_of_what_was_acked_without_a_gap(
    nc: Connection, log: Scope
) -> None:
    """What the dispatcher's snapshot may claim: every message up to the floor was acked;
    one fetched and not acked holds it back, whatever is acked after it."""
    await ensure_dispatcher_consumer(nc, log.tenant)
    inputs = Inputs(nc, stream_name(log.tenant), DISPATCHER_CONSUMER)
    assert await inputs.ack_floor() == 0
    for n in range(4):
        await append(nc, event(log, n))
    first, second, *rest = await inputs.fetch(4, 2)
    await first.ack_sync()
    for delivery in rest:
        await delivery.ack_sync()
    assert await inputs.ack_floor() == 1
    await second.ack_sync()
    assert await inputs.ack_floor() == 4
    await inputs.close()


async def test_a_snapshot_is_stored_whole_and_replaced_whole(nc: Connection, log: Scope) -> None:
    """None before the first; then the latest, byte for byte, also when it is larger than a
    message (chunked); the bucket is beside the log, which stays untouched."""
    store = SnapshotStore(nc, log.tenant, "dispatcher")
    assert await store.load() is None
    await store.save(b"first")
    assert await store.load() == b"first"
    big = bytes(range(256)) * (5 * 4096)  # 5 MiB
    await store.save(big)
    assert await SnapshotStore(nc, log.tenant, "dispatcher").load() == big
    await store.save(b"")
    assert await store.load() == b""
    assert await read_all(nc, log) == []


async def test_the_snapshot_bucket_keeps_the_tenants_quota(nc: Connection) -> None:
    tenant = f"c{uuid.uuid4().hex[:12]}"
    quota = 8 * 1024 * 1024
    await ensure_tenant_stream(nc, tenant, eventstore.StreamLimits(max_bytes=quota))
    await SnapshotStore(nc, tenant, "dispatcher").save(b"x")
    info = await nc.jetstream().stream_info(f"OBJ_{eventstore.snapshot_bucket(tenant)}")
    assert info.config.max_bytes == quota


async def test_an_older_filtered_dispatcher_consumer_restarts_after_what_it_acked(
    nc: Connection, log: Scope
) -> None:
    """An engine before issue 9 left a consumer with six filters and explicit acks: it is
    replaced by one that delivers the whole log from just after its ack floor, so nothing it
    had not acknowledged is skipped and nothing it had is read again."""
    stream = stream_name(log.tenant)
    old = ConsumerConfig(
        durable_name=DISPATCHER_CONSUMER,
        filter_subjects=eventstore.dispatcher_filters(log.tenant),
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=5.0,
    )
    await nc.jetstream().add_consumer(stream, old)
    await append(nc, event(log, 0))
    await append(nc, Append(log.run("r1", "queued"), b"{}"))  # not an input of the old one
    await append(nc, event(log, 1))
    await append(nc, event(log, 2))
    inputs = Inputs(nc, stream, DISPATCHER_CONSUMER)
    first, second = await inputs.fetch(2, 2)
    assert (first.seq, second.seq) == (1, 3)
    await first.ack_sync()
    await second.ack_sync()
    await inputs.close()
    await ensure_dispatcher_consumer(nc, log.tenant)
    info = await nc.jetstream().consumer_info(stream, DISPATCHER_CONSUMER)
    assert info.config.ack_policy == AckPolicy.EXPLICIT and not info.config.filter_subjects
    inputs = Inputs(nc, stream, DISPATCHER_CONSUMER)
    assert [d.seq for d in await inputs.fetch(10, 2)] == [4]
    await inputs.close()
    await ensure_dispatcher_consumer(nc, log.tenant)  # now current: left as it is
    again = await nc.jetstream().consumer_info(stream, DISPATCHER_CONSUMER)
    assert again.created == info.created


def pulling(
    nc: Connection, log: Scope, slots: Slots, got: list[Delivery], expires_s: float = 0.5
) -> tuple[TaskPuller, asyncio.Task[None]]:
    """A puller on queue group ``wf`` handing deliveries to ``got``, running."""
    puller = TaskPuller(
        nc,
        tasks_stream_name(log.tenant),
        eventstore.task_consumer_name(log, "wf"),
        slots,
        got.append,
        expires_s=expires_s,
    )
    return puller, asyncio.create_task(puller.run())


async def stopped(puller: TaskPuller, running: asyncio.Task[None]) -> None:
    await puller.stop()
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def test_pull_asks_for_exactly_the_free_slots_and_accounts_for_every_one(
    nc: Connection, log: Scope
) -> None:
    """Three free slots, five tasks: three arrive and nothing more is held for this worker;
    when the requests expire (408) or are cut short (409) the slots come back exactly."""
    await ensure_task_consumer(nc, log, "wf")
    for n in range(5):
        await append(nc, Append(log.task("wf", "s"), f"{n}".encode()))
    slots = Slots(3)
    got: list[Delivery] = []
    puller, running = pulling(nc, log, slots, got)
    await eventually(lambda: len(got) == 3)
    assert slots.free == 0 and puller.outstanding == 0
    for delivery in got:
        await delivery.ack()
        slots.finish()
    await eventually(lambda: len(got) == 5)
    assert slots.running == 5 - 3 and slots.free + slots.reserved + slots.running == 3
    await stopped(puller, running)
    assert slots.reserved == 0 and puller.outstanding == 0


async def test_a_stopped_puller_ends_its_requests_and_the_next_task_goes_to_another(
    nc: Connection, log: Scope
) -> None:
    """Stopping does not wait for its requests to expire (30 s here), and what they asked
    for is not taken: the task appended after the stop is the other puller's, at its first
    delivery (a request left waiting would have taken it into a closed inbox, and it would
    have come back only after the 30 s ack wait)."""
    await ensure_task_consumer(nc, log, "wf", eventstore.TaskConsumerSettings(ack_wait_s=30))
    slots = Slots(2)
    got: list[Delivery] = []
    first, first_running = pulling(nc, log, slots, got, expires_s=30)
    await eventually(lambda: first.outstanding > 0)
    await asyncio.wait_for(stopped(first, first_running), timeout=10)
    assert slots.reserved == 0 and first.outstanding == 0
    await append(nc, Append(log.task("wf", "s"), b"t"))
    other: list[Delivery] = []
    second, second_running = pulling(nc, log, Slots(1), other)
    await eventually(lambda: len(other) == 1)
    assert not got and other[0].delivered == 1
    await other[0].ack_sync()
    await stopped(second, second_running)


async def test_a_task_not_acked_in_time_comes_back_as_a_new_delivery(
    nc: Connection, log: Scope
) -> None:
    await ensure_task_consumer(nc, log, "wf", eventstore.TaskConsumerSettings(ack_wait_s=0.5))
    await append(nc, Append(log.task("wf", "s"), b"t"))
    slots = Slots(1)
    got: list[Delivery] = []
    puller, running = pulling(nc, log, slots, got)
    await eventually(lambda: len(got) == 1)
    slots.finish()  # the worker "died": no ack, no in_progress
    await eventually(lambda: len(got) == 2)
    assert [d.delivered for d in got] == [1, 2] and got[0].seq == got[1].seq
    await got[1].ack_sync()
    await stopped(puller, running)


# -- errors and policies ------------------------------------------------------------------


async def test_errors_are_translated_at_the_door(nats_server: Any, log: Scope) -> None:
    nc = await eventstore.connect(eventstore.NatsOptions(nats_server.url))
    await ensure_dispatcher_consumer(nc, log.tenant)
    await append(nc, event(log, 1))
    (delivery,) = await Inputs(nc, stream_name(log.tenant), DISPATCHER_CONSUMER).fetch(1, 2)
    await eventstore.close(nc)
    with pytest.raises(TransportError):
        await delivery.ack()
    with pytest.raises(eventstore.NatchetError):
        await append(nc, event(log, 2))
    await eventstore.close(nc)  # idempotent


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = Backoff(base_s=0.1, max_s=1.0)
    assert [policy.delay(n) for n in range(7)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
