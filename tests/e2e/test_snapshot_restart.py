"""The dispatcher starts from its snapshot, on a real JetStream: the same state as a rebuild
from the start; a corrupt or other-version snapshot means a rebuild, never a crash; a kill
between appends is still finished; finished runs leave memory, and neither a repeated
request nor an event redelivered after a crash starts a run that ended twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import orjson
import pytest

from dispatcher import Dispatcher, Output, State, fold
from dispatcher.checkpoint import SnapshotPolicy
from dispatcher.partition import SNAPSHOT_NAME
from dispatcher.snapshot import load
from eventstore import (
    Append,
    Connection,
    Inputs,
    SnapshotStore,
    append,
    ensure_tenant_stream,
    replay,
)
from eventstore.provision import DISPATCHER_CONSUMER
from schemas import (
    DecodeError,
    RunRequested,
    Scope,
    StepDef,
    SubjectError,
    WorkflowDef,
    decode_subject,
    encode,
    parse,
    stream_name,
)
from tests.conftest import eventually
from tests.e2e.test_crash_between_appends import (
    DIAMOND,
    decide_dying,
    finished,
    message_ids,
    report,
)


async def in_log(nc: Connection, tenant: str, ids: Sequence[str]) -> bool:
    """Every one of ``ids`` is in the log (decided by the dispatcher running)."""

    async def present() -> bool:
        found = await message_ids(nc, tenant)
        return all(found[i] for i in ids)

    return await eventually(present)


pytestmark = pytest.mark.timeout(120)

ONE = WorkflowDef(name="one", version="v1", steps=(StepDef("a"),), on_events=("go",))
OFTEN = SnapshotPolicy(every_messages=10, every_s=0.1)


async def rebuilt(nc: Connection, tenant: str) -> State:
    """The reference: the whole log folded from the start, as a dispatcher with no
    snapshot would."""
    state = State()
    async for rec in replay(nc, tenant):
        try:
            parsed = parse(rec.subject)
            if parsed.area in ("runs", "workflows", "tasks"):
                fold(state, parsed.scope, decode_subject(parsed, rec.data))
        except (SubjectError, DecodeError):
            continue
    return state


async def floor(nc: Connection, tenant: str) -> int:
    inputs = Inputs(nc, stream_name(tenant), DISPATCHER_CONSUMER)
    try:
        return await inputs.ack_floor()
    finally:
        await inputs.close()


async def decided(nc: Connection, tenant: str, seq: int) -> bool:
    return await floor(nc, tenant) >= seq


async def setup(nc: Connection, tenant: str) -> Scope:
    scope = Scope(tenant)
    await ensure_tenant_stream(nc, tenant)
    await append(nc, Append(scope.workflow("wf"), encode(DIAMOND), "workflow:default:wf:v1"))
    await append(nc, Append(scope.workflow("one"), encode(ONE), "workflow:default:one:v1"))
    return scope


async def request(nc: Connection, scope: Scope, run_id: str, workflow: str = "wf") -> int:
    body = encode(RunRequested(run_id, workflow, {"n": run_id}))
    return await append(nc, Append(scope.run(run_id, "requested"), body))


async def stored_snapshot(nc: Connection, tenant: str) -> int:
    data = await SnapshotStore(nc, tenant, SNAPSHOT_NAME).load()
    return -1 if data is None else load(data).seq


async def history(nc: Connection, tenant: str) -> None:
    """Runs over, runs half way, runs just requested."""
    scope = await setup(nc, tenant)
    async with Dispatcher(nc, tenant) as dispatcher:
        await eventually(dispatcher.ready.is_set)
        for r in ("r1", "r2", "r3", "r4"):
            await request(nc, scope, r)
        assert await in_log(nc, tenant, [f"{r}:a:1:task" for r in ("r1", "r2", "r3", "r4")])
        for r in ("r1", "r2"):
            await report(nc, scope, r, "a")
        assert await in_log(nc, tenant, ["r1:b:1:task", "r2:b:1:task"])
        await report(nc, scope, "r1", "b")
        await report(nc, scope, "r1", "c")
        assert await in_log(nc, tenant, ["r1:d:1:task"])
        await report(nc, scope, "r1", "d")
        assert await in_log(nc, tenant, ["r1:finished"])


async def test_a_restart_from_the_snapshot_has_the_state_of_a_full_rebuild(
    nc: Connection, tenant_name: str
) -> None:
    await history(nc, tenant_name)  # ends with a graceful shutdown: a snapshot
    scope = Scope(tenant_name)
    at = await stored_snapshot(nc, tenant_name)
    assert at > 0
    # More history after the snapshot, written while no dispatcher runs.
    await request(nc, scope, "r5")
    await report(nc, scope, "r3", "a")
    async with Dispatcher(nc, tenant_name) as dispatcher:
        await eventually(dispatcher.ready.is_set)
        assert await in_log(nc, tenant_name, ["r5:a:1:task", "r3:b:1:task"])
    reference = await rebuilt(nc, tenant_name)
    assert dispatcher.state.workflows == reference.workflows
    assert dispatcher.state.runs == reference.runs
    assert set(dispatcher.state.runs) == {"r2", "r3", "r4", "r5"}
    assert dispatcher.state.done <= reference.done


@pytest.mark.parametrize("bad", ["garbage", "other-version", "not-an-object", "missing-field"])
async def test_a_bad_snapshot_means_a_rebuild_from_the_start(
    nc: Connection, tenant_name: str, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    await history(nc, tenant_name)
    store = SnapshotStore(nc, tenant_name, SNAPSHOT_NAME)
    good = orjson.loads(await store.load() or b"{}")
    data = {
        "garbage": b"\x00not json",
        "other-version": orjson.dumps({**good, "format": 999}),
        "not-an-object": b"[1, 2]",
        "missing-field": orjson.dumps({k: v for k, v in good.items() if k != "runs"}),
    }[bad]
    await store.save(data)
    with caplog.at_level(logging.WARNING, logger="dispatcher"):
        async with Dispatcher(nc, tenant_name) as dispatcher:
            await eventually(dispatcher.ready.is_set)
    assert "rebuilding from the start" in caplog.text
    reference = await rebuilt(nc, tenant_name)
    assert dispatcher.state.runs == reference.runs
    assert set(dispatcher.state.runs) == {"r2", "r3", "r4"}
    # The rebuild stored a good snapshot again.
    assert await stored_snapshot(nc, tenant_name) > 0


@pytest.mark.parametrize("kill_after", [1, 2])
async def test_a_kill_between_appends_is_finished_with_a_snapshot_present(
    nc: Connection, tenant_name: str, kill_after: int
) -> None:
    scope = await setup(nc, tenant_name)
    await request(nc, scope, "r1")
    assert await finished(nc, tenant_name, ["r1:created", "r1:a:1:task"])
    assert await stored_snapshot(nc, tenant_name) > 0
    await report(nc, scope, "r1", "a")
    await decide_dying(nc, tenant_name, kill_after)  # a's verdict, b's task, c's task
    assert await finished(nc, tenant_name, ["r1:a:finished", "r1:b:1:task", "r1:c:1:task"])
    counts = await message_ids(nc, tenant_name)
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n > 1}


class DiesBeforeAck(Dispatcher):
    """Stores its next decisions, then dies before acking their inputs (once)."""

    armed = False

    async def _store(self, decisions: list[list[Output]]) -> None:
        await super()._store(decisions)
        if self.armed and any(decisions):
            raise RuntimeError("killed before the ack")


async def drive(nc: Connection, scope: Scope, ids: Sequence[str]) -> None:
    """One-step runs requested and answered, to their end."""
    for r in ids:
        await request(nc, scope, r, "one")
    assert await in_log(nc, scope.tenant, [f"{r}:a:1:task" for r in ids])
    for r in ids:
        await report(nc, scope, r, "a")
    assert await in_log(nc, scope.tenant, [f"{r}:finished" for r in ids])


async def test_finished_runs_leave_memory_and_a_request_again_starts_nothing(
    nc: Connection, tenant_name: str
) -> None:
    scope = await setup(nc, tenant_name)
    ids = [f"m{i}" for i in range(60)]
    async with Dispatcher(nc, tenant_name, snapshots=OFTEN) as dispatcher:
        await eventually(dispatcher.ready.is_set)
        for i in range(0, len(ids), 10):
            await drive(nc, scope, ids[i : i + 10])
        # Every run is over; a few checkpoints later, none is remembered.
        await eventually(lambda: len(dispatcher.state.done) < 10, timeout_s=10)
        assert not dispatcher.state.runs
        assert dispatcher._checkpoints.forgot_through > 0
        # A client asks again for runs long over (and forgotten): nothing starts.
        seqs = [await request(nc, scope, r, "one") for r in ("m0", "m1", "m59")]
        await eventually(lambda: decided(nc, tenant_name, max(seqs)))
        assert not dispatcher.state.runs
    # And the same from a restart (the snapshot has forgotten them too).
    async with Dispatcher(nc, tenant_name, snapshots=OFTEN) as restarted:
        await eventually(restarted.ready.is_set)
        assert len(restarted.state.done) < 10
        seq = await request(nc, scope, "m2", "one")
        await eventually(lambda: decided(nc, tenant_name, seq))
        assert not restarted.state.runs
    counts = await message_ids(nc, tenant_name)
    assert all(counts[f"{r}:created"] == 1 for r in ids)
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n > 1}


async def test_events_redelivered_after_a_crash_start_nothing_twice(
    nc: Connection, tenant_name: str
) -> None:
    scope = await setup(nc, tenant_name)
    async with Dispatcher(nc, tenant_name, snapshots=OFTEN) as dispatcher:
        await eventually(dispatcher.ready.is_set)
        await drive(nc, scope, [f"m{i}" for i in range(20)])  # something to forget
        await eventually(lambda: dispatcher._checkpoints.forgot_through > 0, timeout_s=10)
    dying = DiesBeforeAck(nc, tenant_name, snapshots=OFTEN)
    task = dying.start()
    await eventually(dying.ready.is_set)
    dying.armed = True
    events = [await append(nc, Append(scope.event("go"), b'{"e": 1}')) for _ in range(3)]
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done and isinstance(task.exception(), RuntimeError)
    ids = await message_ids(nc, tenant_name)
    created = [k for k in ids if k.endswith(":created") and not k.startswith("m")]
    assert 1 <= len(created) <= 3  # the events it decided before dying, stored, not acked
    # The successor gets the events again (unacked) and starts nothing twice; then the
    # runs finish, are forgotten, and the events are behind the ack floor for good.
    async with Dispatcher(nc, tenant_name, snapshots=OFTEN) as successor:
        await eventually(successor.ready.is_set)
        await eventually(lambda: decided(nc, tenant_name, max(events)), timeout_s=15)
        assert len(successor.state.runs) == 3
    counts = await message_ids(nc, tenant_name)
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n > 1}
    runs = [k for k in counts if k.endswith(":created") and not k.startswith("m")]
    assert len(runs) == 3
