"""Tenant A, holding only its own valid token, aims every JetStream answer it can provoke
(pub acks, direct gets, pull-request statuses and deliveries) at every subject that would
hurt: tenant B's events, runs and tasks, the engine's records, the JetStream API of B, C
and its own log, and the system account. NATS never checks reply subjects against
permissions; the account boundary is what must hold.

After every attempt B's and C's streams, consumers and Postgres rows, the engine's records
and A's own streams and consumers are as before (watched for a while: see ``watch.py``), B's
live connection is still up, the engine still serves every tenant, and A still works.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import nats.js.errors
import orjson
import psycopg
import pytest
from nats.aio.client import Client as NATS

import eventstore
from dispatcher.partition import SNAPSHOT_NAME
from eventstore import Append, append
from eventstore.provision import task_consumer_name
from eventstore.snapshot import snapshot_bucket
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import Scope, Task, encode
from schemas.subjects import stream_name, tasks_stream_name
from schemas.tenancy import TokenCreated, TokenRevoked, hash_secret, parse_token, token_subject
from tests.conftest import eventually, running
from tests.tenancy.conftest import (
    client_options,
    echo_workflow,
    forged_result,
    hatchet_with_token,
    new_tenant,
)
from tests.tenancy.watch import system_view, tenant_view, unchanged
from worker import Context, Hatchet

pytestmark = pytest.mark.timeout(300)

FORGED_SECRET = "forged-secret-forged-secret-forged"


@attrs.define
class Scene:
    """A (attacker), B (victim: a finished run, a queued one, a live connection), C."""

    engine: Engine
    db: psycopg.AsyncConnection[Any]
    a: str
    a_token: str
    a_nc: NATS
    b: str
    b_token: str
    b_nc: NATS
    b_pending_run: str
    c: str
    server_id: str
    leaked: list[bytes] = attrs.Factory(list)

    async def views(self) -> tuple[object, ...]:
        """B, C and the engine's records: must not change at all."""
        return (
            await tenant_view(self.engine, self.db, self.b),
            await tenant_view(self.engine, self.db, self.c),
            await system_view(self.engine),
            tuple(self.leaked),
        )

    async def own_shape(self) -> tuple[object, ...]:
        """A's own streams and consumers must survive, and its log lose nothing (its first
        sequence stays; its end moves, as A appends)."""
        view = await tenant_view(self.engine, self.db, self.a)
        log, *others = view.streams
        return (log[0], log[2], log[4]), tuple((o[0], o[4]) for o in others), view.consumers


def idle_workflow(hatchet: Hatchet) -> Any:
    @hatchet.workflow(name="Idle")
    class Idle:
        @hatchet.step()
        def wait(self, context: Context) -> None:
            return None

    return Idle()


async def _tenant_with_run(
    engine: Engine, server: NatsServer, db: psycopg.AsyncConnection[Any], prefix: str
) -> tuple[str, str, str]:
    """A tenant whose Echo workflow ran once and has one more run queued (no worker), and
    whose Idle workflow never gets a task."""
    tenant, token = await new_tenant(engine, server, prefix)
    hatchet = hatchet_with_token(token)
    worker = hatchet.worker(f"{prefix}-worker", max_runs=2)
    worker.register_workflow(echo_workflow(hatchet))
    worker.register_workflow(idle_workflow(hatchet))
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Echo", {"secret": f"{prefix}'s data"})
        await ref.result()
    pending = await hatchet.admin.aio_run_workflow("Echo", {"n": 2})
    hatchet.close()
    view = await eventually(lambda: _queued(engine, db, tenant, pending.workflow_run_id))
    assert view
    return tenant, token, pending.workflow_run_id


async def _queued(engine: Engine, db: psycopg.AsyncConnection[Any], tenant: str, run: str) -> bool:
    view = await tenant_view(engine, db, tenant)
    return (run, "QUEUED") in view.runs


@pytest.fixture(scope="module")
async def scene(
    tenancy_engine: Engine, auth_server: NatsServer, tenancy_dsn: str
) -> AsyncIterator[Scene]:
    async with await psycopg.AsyncConnection.connect(tenancy_dsn, autocommit=True) as db:
        b, b_token, pending = await _tenant_with_run(tenancy_engine, auth_server, db, "b")
        c, _c_token, _ = await _tenant_with_run(tenancy_engine, auth_server, db, "c")
        a, a_token, _ = await _tenant_with_run(tenancy_engine, auth_server, db, "a")
        a_nc = await eventstore.connect(client_options(auth_server, a, a_token))
        b_nc = await eventstore.connect(client_options(auth_server, b, b_token))
        scene = Scene(
            tenancy_engine,
            db,
            a,
            a_token,
            a_nc,
            b,
            b_token,
            b_nc,
            pending,
            c,
            a_nc._server_info["server_id"],
        )

        async def leak(msg: Any) -> None:
            scene.leaked.append(msg.data)

        await a_nc.subscribe(f"{a}.leak", cb=leak)
        yield scene
        await a_nc.close()
        await b_nc.close()


# -- what A makes JetStream send, and where -------------------------------------------------


def payload_for(s: Scene, target: str) -> bytes:
    """The body A would want to arrive on ``target`` (for paths that carry A's body)."""
    b_log = stream_name(s.b)
    if target.startswith(("$JS.API.STREAM.DELETE", "$JS.API.CONSUMER.DELETE")):
        return b""  # these act on an empty body
    if target.startswith("$JS.API.STREAM.PURGE"):
        return b"{}"
    if target.startswith("$JS.API.CONSUMER.CREATE"):
        config = {"name": "leak", "deliver_subject": f"{s.a}.leak", "ack_policy": "none"}
        return orjson.dumps({"stream_name": b_log, "config": config})
    if target.startswith("$JS.API.STREAM.UPDATE"):
        return weakened(target.rsplit(".", 1)[-1], s.a if s.a in target else s.b)
    if target.startswith("$SYS.REQ.SERVER"):
        return orjson.dumps({"cid": s.b_nc._client_id})
    if target.startswith("natchet.system.tokens") and target.endswith(".created"):
        token_id = target.split(".")[3]
        forged = TokenCreated(token_id, s.b, hash_secret(FORGED_SECRET), name="forged")
        return encode(forged)
    if target.endswith(".revoked"):
        return encode(TokenRevoked(target.split(".")[3]))
    if ".runs." in target:
        return encode(forged_result(s.b_pending_run))
    if ".tasks." in target:
        return encode(Task(s.b_pending_run, "Echo", "say", 1, {"evil": 1}, {}, 60.0))
    return b'{"evil": true}'


def weakened(stream: str, tenant: str) -> bytes:
    """A stream update a server would take for a log as natchet made it before accounts
    (one stream on ``<t>.>``), with what an attacker wants: a new description, rollups,
    purges and at most one message kept."""
    config = {
        "name": stream,
        "subjects": [f"{tenant}.>"],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "max_msg_size": 1024 * 1024,
        "duplicate_window": 120 * 1_000_000_000,
        "deny_delete": True,
        "allow_direct": True,
        "allow_msg_ttl": True,
        "allow_msg_schedules": True,
        "allow_atomic": True,
    }
    weak = {"description": "pwned", "allow_rollup_hdrs": True, "deny_purge": False, "max_msgs": 1}
    return orjson.dumps({**config, **weak})


async def via_pub_ack(s: Scene, target: str) -> None:
    """A publishes to its own log; JetStream's pub ack goes to ``target``."""
    await s.a_nc.publish(Scope(s.a).event("relay"), payload_for(s, target), reply=target)


async def via_direct_get(s: Scene, target: str) -> None:
    """A stores the body it wants on its own log, then direct-gets it with reply
    ``target``: the stored message, body and headers, is what JetStream sends there."""
    subject = Scope(s.a).event(f"payload-{uuid.uuid4().hex[:8]}")
    await append(s.a_nc, Append(subject, payload_for(s, target)))
    api = f"$JS.API.DIRECT.GET.{stream_name(s.a)}"
    await s.a_nc.publish(f"{api}.{subject}", b"", reply=target)
    await s.a_nc.publish(api, orjson.dumps({"last_by_subj": subject}), reply=target)
    await s.a_nc.publish(api, orjson.dumps({"seq": 1, "batch": 3}), reply=target)


async def via_pull_status(s: Scene, target: str) -> None:
    """A pull request on A's (empty) queue with ``no_wait``: the server answers ``target``
    with a 404 status, whose body is empty."""
    queue = task_consumer_name(Scope(s.a), "Idle")
    api = f"$JS.API.CONSUMER.MSG.NEXT.{tasks_stream_name(s.a)}.{queue}"
    await s.a_nc.publish(api, orjson.dumps({"batch": 1, "no_wait": True}), reply=target)
    await s.a_nc.publish(api, orjson.dumps({"batch": 1, "expires": 10_000_000}), reply=target)


async def via_pull_delivery(s: Scene, target: str) -> None:
    """A queues a task of its own, then pulls it with reply ``target``: the task itself
    (engine-written body, the stored headers) is delivered there."""
    hatchet = hatchet_with_token(s.a_token)
    await hatchet.admin.aio_run_workflow("Echo", {"relay": target})
    hatchet.close()
    js = s.engine.provisioner.logs[s.a].jetstream()  # type: ignore[union-attr]
    queue = task_consumer_name(Scope(s.a), "Echo")

    async def waiting() -> bool:
        info = await js.consumer_info(tasks_stream_name(s.a), queue)
        return info.num_pending > 0

    await eventually(waiting)
    api = f"$JS.API.CONSUMER.MSG.NEXT.{tasks_stream_name(s.a)}.{queue}"
    await s.a_nc.publish(api, orjson.dumps({"batch": 1, "expires": 500_000_000}), reply=target)


PATHS: dict[str, Callable[[Scene, str], Awaitable[None]]] = {
    "pub-ack": via_pub_ack,
    "direct-get": via_direct_get,
    "pull-status": via_pull_status,
    "pull-delivery": via_pull_delivery,
}

TARGETS: dict[str, Callable[[Scene], str]] = {
    "B-events": lambda s: Scope(s.b).event("echo"),
    "B-run-result": lambda s: Scope(s.b).run(s.b_pending_run, "result"),
    "B-tasks": lambda s: Scope(s.b).task("Echo", "say"),
    "system-token-created": lambda s: token_subject("deadbeef0001", "created"),
    "system-token-revoked": lambda s: token_subject(parse_token(s.b_token).token_id, "revoked"),
    "B-stream-delete": lambda s: f"$JS.API.STREAM.DELETE.{stream_name(s.b)}",
    "C-stream-delete": lambda s: f"$JS.API.STREAM.DELETE.{stream_name(s.c)}",
    "B-consumer-create": lambda s: f"$JS.API.CONSUMER.CREATE.{stream_name(s.b)}.leak",
    "B-stream-update": lambda s: f"$JS.API.STREAM.UPDATE.{stream_name(s.b)}",
    "B-dispatcher-delete": lambda s: f"$JS.API.CONSUMER.DELETE.{stream_name(s.b)}.dispatcher",
    "SYS-kick-B": lambda s: f"$SYS.REQ.SERVER.{s.server_id}.KICK",
    "own-log-delete": lambda s: f"$JS.API.STREAM.DELETE.{stream_name(s.a)}",
    "own-tasks-delete": lambda s: f"$JS.API.STREAM.DELETE.{tasks_stream_name(s.a)}",
    "own-log-purge": lambda s: f"$JS.API.STREAM.PURGE.{stream_name(s.a)}",
    "own-log-update": lambda s: f"$JS.API.STREAM.UPDATE.{stream_name(s.a)}",
    "own-dispatcher-delete": lambda s: f"$JS.API.CONSUMER.DELETE.{stream_name(s.a)}.dispatcher",
}


async def engine_serves(engine: Engine, *tenants: str) -> None:
    for tenant in tenants:
        assert engine.dispatchers[tenant].ready.is_set()
    assert not [t for t in engine._tasks if t.done()], "a dispatcher or projector stopped"


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("path", list(PATHS))
async def test_reply_path_cannot_reach_beyond_own_account(
    scene: Scene, path: str, target: str
) -> None:
    subject = TARGETS[target](scene)
    before, own_before = await scene.views(), await scene.own_shape()
    await PATHS[path](scene, subject)
    await unchanged(scene.a_nc, scene.views, before)
    assert await scene.own_shape() == own_before
    assert scene.b_nc.is_connected, "B's connection was kicked"
    await engine_serves(scene.engine, scene.a, scene.b, scene.c)
    assert await append(scene.a_nc, Append(Scope(scene.a).event("still-works"), b"{}")) > 0


@pytest.mark.parametrize("path", list(PATHS))
async def test_each_path_answers_on_the_reply_it_names(scene: Scene, path: str) -> None:
    """The control: every path above does deliver JetStream's answer to the reply A names,
    here a subject A listens on in its own account. So the cases above are real attempts,
    and what stops them is where the answer lands."""
    scene.leaked.clear()
    await PATHS[path](scene, f"{scene.a}.leak")
    assert await eventually(lambda: len(scene.leaked) > 0, timeout_s=5)
    scene.leaked.clear()


async def test_forged_token_record_gives_no_access(scene: Scene) -> None:
    """The table's second row, end to end: whatever A relayed at the token records, a
    token built on the forged secret does not connect."""
    for path in PATHS.values():
        await path(scene, token_subject("deadbeef0002", "created"))
    await unchanged(scene.a_nc, scene.views, await scene.views())
    forged = parse_token(scene.b_token)
    token = attrs.evolve(forged, token_id="deadbeef0002", secret=FORGED_SECRET).encode()
    with pytest.raises(eventstore.ConnectError):
        await eventstore.connect(client_options_for(scene, token))


def client_options_for(s: Scene, token: str) -> eventstore.NatsOptions:
    url = s.a_nc.connected_url
    assert url is not None
    return eventstore.NatsOptions(f"nats://{url.hostname}:{url.port}", token=token)


def _snapshot_targets(s: Scene, tenant: str) -> tuple[str, str]:
    """A fresh chunk subject and the dispatcher's meta subject in ``tenant``'s snapshot
    bucket: a body landing on them would be a forged dispatcher state."""
    bucket = snapshot_bucket(tenant)
    name = base64.urlsafe_b64encode(SNAPSHOT_NAME.encode()).decode()
    return f"$O.{bucket}.C.evil{uuid.uuid4().hex[:8]}", f"$O.{bucket}.M.{name}"


async def _snapshot_untouched(s: Scene, tenant: str, chunk: str, meta: str) -> None:
    js = s.engine.provisioner.logs[tenant].jetstream()  # type: ignore[union-attr]
    stream = f"OBJ_{snapshot_bucket(tenant)}"
    info = await js.stream_info(stream, subjects_filter=chunk)
    assert not info.state.subjects, f"A's answer landed in {stream}: {info.state.subjects}"
    with contextlib.suppress(nats.js.errors.NotFoundError):  # no snapshot stored yet
        stored = await js.get_last_msg(stream, meta)
        assert orjson.loads(stored.data or b"{}").get("name") == SNAPSHOT_NAME, stored.data


@pytest.mark.parametrize("whose", ["own", "B"])
@pytest.mark.parametrize("path", list(PATHS))
async def test_reply_path_cannot_write_a_snapshot(scene: Scene, path: str, whose: str) -> None:
    """The dispatcher restores from its snapshot bucket (``OBJ_snap-<t>``, in the log
    account): A aims every answer it can provoke at a chunk and at the dispatcher's meta
    subject there, its own tenant's and B's. Nothing lands (the watch in ``unchanged``
    covers only that the bucket exists with its settings: the dispatcher replaces its
    contents)."""
    tenant = scene.a if whose == "own" else scene.b
    chunk, meta = _snapshot_targets(scene, tenant)
    before = await scene.views()
    for target in (chunk, meta):
        await PATHS[path](scene, target)
    await unchanged(scene.a_nc, scene.views, before)
    await _snapshot_untouched(scene, tenant, chunk, meta)
    await engine_serves(scene.engine, scene.a, scene.b, scene.c)
