"""The engine's ``/metrics``, ``/live`` and ``/ready`` (issue 11), on real NATS and Postgres:
the task counters equal what the read model holds, the queue gauges follow the queue, and
readiness follows Postgres."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from eventstore import ConfigError
from natchet.config import EngineSettings
from natchet.dev.embedded import EmbeddedPostgres, NatsServer
from natchet.engine import Engine
from projector import get_run
from schemas.subjects import tasks_stream_name
from tests.conftest import eventually, running
from tests.support import hatchet_for, http_get, run_ends, scrape, stop, total
from worker import Context, NonRetryableError, WorkflowRunError

pytestmark = pytest.mark.timeout(180)


def settings(nats_server: NatsServer, dsn: str, tenant: str, **more: Any) -> EngineSettings:
    return EngineSettings(
        nats_server.url, dsn, (tenant,), metrics_port=0, metrics_host="127.0.0.1", **more
    )


@pytest.fixture
async def metered(nats_server: NatsServer, dsn: str, tenant_name: str) -> AsyncIterator[Engine]:
    async with Engine(settings(nats_server, dsn, tenant_name)) as engine:
        yield engine


async def keda_lag(server: NatsServer, account: str, stream: str, consumer: str) -> float:
    """A consumer's lag as KEDA's ``nats-jetstream`` scaler reads it: the monitoring
    endpoint's ``/jsz?acc=..&consumers=true``, account, stream, consumer by name, and the
    consumer's ``num_pending`` (examples/kubernetes/keda-scaledobject.yaml)."""
    status, body = await http_get(f"{server.monitor_url}/jsz?acc={account}&consumers=true")
    assert status == 200, body
    for acc in orjson.loads(body).get("account_details") or []:
        for st in acc.get("stream_detail") or [] if acc["name"] == account else []:
            for con in st.get("consumer_detail") or [] if st["name"] == stream else []:
                if con["name"] == consumer:
                    return float(con["num_pending"])
    return -1.0


def url_of(engine: Engine) -> str:
    assert engine.health is not None
    return engine.health.url


# What the read model says of a tenant's tasks (steps offered to workers at least once).
READ_MODEL = """
SELECT count(*),
       count(*) FILTER (WHERE status = 'SUCCEEDED'),
       count(*) FILTER (WHERE status = 'FAILED'),
       count(*) FILTER (WHERE status = 'CANCELLED'),
       coalesce(sum(attempt - 1), 0)
FROM steps WHERE tenant = %s AND queued_at IS NOT NULL
"""
COUNTERS = ("created", "succeeded", "failed", "cancelled", "retried")


async def test_task_counters_equal_the_read_model_after_a_mixed_workload(
    nats_server: NatsServer, metered: Engine, dsn: str, tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    flakes = {"n": 0}
    started = asyncio.Event()

    @hatchet.workflow(name="Fine", on_events=["go"])
    class Fine:
        @hatchet.step()
        def first(self, context: Context) -> dict[str, int]:
            return {"n": 1}

        @hatchet.step(parents=["first"])
        async def second(self, context: Context) -> dict[str, int]:
            return {"n": 2}

    @hatchet.workflow(name="Flaky")
    class Flaky:
        @hatchet.step(retries=2)
        def wobble(self, context: Context) -> dict[str, int]:
            flakes["n"] += 1
            if flakes["n"] == 1:
                raise ConnectionError("flake")
            return {"attempt": context.attempt}

    @hatchet.workflow(name="Doomed")
    class Doomed:
        @hatchet.step(retries=1)
        def break_(self, context: Context) -> None:
            raise ValueError("always")

        @hatchet.step(parents=["break_"])
        def never(self, context: Context) -> None:  # cancelled, never offered: no task
            return None

        @hatchet.on_failure_step()
        def cleanup(self, context: Context) -> dict[str, str]:
            return {"saw": "failure"}

    @hatchet.workflow(name="Refused")
    class Refused:
        @hatchet.step(retries=3)
        def no(self, context: Context) -> None:
            raise NonRetryableError("no")

    @hatchet.workflow(name="Slow")
    class Slow:
        @hatchet.step(timeout="60s")
        async def wait(self, context: Context) -> None:
            started.set()
            await asyncio.sleep(60)

    worker = hatchet.worker("mixed", max_runs=8)
    for wf in (Fine(), Flaky(), Doomed(), Refused(), Slow()):
        worker.register_workflow(wf)
    async with (
        running(worker),
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as db,
    ):
        for n in range(3):
            await hatchet.event.aio_push("go", {"n": n})
        refs = [
            await hatchet.admin.aio_run_workflow(name, {})
            for name in ("Flaky", "Doomed", "Refused", "Slow")
        ]
        await asyncio.wait_for(started.wait(), 30)

        async def slow_running() -> bool:  # its assignment is in the log: taken, then cancelled
            run = await get_run(db, refs[-1].workflow_run_id, tenant=tenant_name)
            return run is not None and run["status"] == "RUNNING"

        await eventually(slow_running)
        await hatchet.admin.aio_cancel(refs[-1].workflow_run_id, reason="test")
        assert (await refs[0].result())["wobble"] == {"attempt": 2}
        for ref in refs[1:]:
            with pytest.raises(WorkflowRunError):
                await ref.result()
        for ref in refs:
            await run_ends(db, ref.workflow_run_id, tenant=tenant_name)

        async def equal() -> tuple[list[int], list[float]]:
            row = await (await db.execute(READ_MODEL, (tenant_name,))).fetchone()
            assert row is not None
            samples = await scrape(url_of(metered))
            got = [
                total(samples, f"hatchet_{what}_tasks_total", tenant=tenant_name)
                for what in COUNTERS
            ]
            assert [int(v) for v in row] == [int(v) for v in got], (row, got)
            return list(row), got

        read_model, _ = await eventually(equal, timeout_s=30)
    hatchet.close()
    created, succeeded, failed, cancelled, retried = read_model
    # Fine: 3 runs x 2 steps; Flaky: 1, retried once; Doomed: break_ (retried, failed) and
    # cleanup (succeeded), not `never` (cancelled unoffered: no task); Refused: 1, failed at
    # once; Slow: 1, cancelled.
    assert (created, succeeded, failed, cancelled, retried) == (11, 8, 2, 1, 2)
    samples = await scrape(url_of(metered))
    waits = total(samples, "hatchet_queued_to_assigned_time_seconds_count", tenant=tenant_name)
    per = {
        dict(ls)["workflow"]: v
        for (n, ls), v in samples.items()
        if n == "hatchet_queued_to_assigned_time_seconds_count"
    }
    assert waits == created + retried, per  # every attempt was taken by a worker
    assert total(samples, "natchet_dispatcher_decision_seconds_count", tenant=tenant_name) > 0
    assert total(samples, "natchet_append_errors_total", tenant=tenant_name) == 0


async def test_queue_depth_rises_without_workers_and_drains_to_zero(
    nats_server: NatsServer, metered: Engine, tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)

    @hatchet.workflow(name="Queued", on_events=["pile"])
    class Queued:
        @hatchet.step()
        def take(self, context: Context) -> dict[str, bool]:
            return {"ok": True}

    url = url_of(metered)
    registrar = hatchet.worker("registrar", max_runs=1)
    registrar.register_workflow(Queued())
    async with running(registrar):
        pass  # registers the workflow (and so its queue group), then stops: no workers
    for n in range(5):
        await hatchet.event.aio_push("pile", {"n": n})

    async def depth(expected: float) -> bool:
        samples = await scrape(url)
        queue = total(samples, "natchet_queue_depth", tenant=tenant_name, namespace="default")
        pending = total(samples, "natchet_workflow_pending_tasks", workflow="Queued")
        # The same count where KEDA's NATS JetStream scaler reads it: the server's /jsz.
        lag = await keda_lag(nats_server, "$G", tasks_stream_name(tenant_name), "default~Queued")
        assert (queue, pending, lag) == (expected, expected, expected), (
            queue,
            pending,
            (await metered.probe.look()).checks,
            {k: v for k, v in samples.items() if "natchet" in k[0]},
        )
        return True

    await eventually(lambda: depth(5), timeout_s=30)
    worker = hatchet.worker("drainer", max_runs=3)
    worker.register_workflow(Queued())
    async with running(worker):
        await eventually(lambda: depth(0), timeout_s=30)

        async def slots() -> bool:
            samples = await scrape(url)
            total_slots = total(samples, "hatchet_tenant_worker_slots", tenant=tenant_name)
            free = total(samples, "hatchet_tenant_available_worker_slots", tenant=tenant_name)
            return total_slots == 3 and free == 3

        await eventually(slots, timeout_s=30)
    hatchet.close()


async def test_live_and_ready_answer_and_unknown_paths_are_404(metered: Engine) -> None:
    url = url_of(metered)
    assert await http_get(f"{url}/live") == (200, b'{"live":true}')
    status, body = await http_get(f"{url}/ready")
    assert status == 200 and orjson.loads(body) == {"ready": True}
    assert (await http_get(f"{url}/nope"))[0] == 404


async def test_the_units_this_engine_holds_the_lease_of_are_a_gauge(
    metered: Engine, tenant_name: str
) -> None:
    samples = await scrape(url_of(metered))
    for component in ("dispatch", "project"):
        assert total(samples, "natchet_lease_held", tenant=tenant_name, component=component) == 1


@pytest.fixture
def own_postgres(tmp_path: Path) -> Any:
    """A PostgreSQL of this test's own, to stop and start (never the session's)."""
    server = EmbeddedPostgres(tmp_path / "pg")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_ready_is_503_while_postgres_is_down_and_200_once_it_is_back(
    nats_server: NatsServer, own_postgres: EmbeddedPostgres, tenant_name: str
) -> None:
    engine = Engine(settings(nats_server, own_postgres.url(), tenant_name))
    async with engine:
        url = url_of(engine)

        async def ready(expected: int) -> dict[str, Any]:
            status, body = await http_get(f"{url}/ready")
            assert status == expected, body
            answer: dict[str, Any] = orjson.loads(body)
            return answer

        await eventually(lambda: ready(200), timeout_s=30)
        await asyncio.to_thread(own_postgres.stop)
        answer = await eventually(lambda: ready(503), timeout_s=30)
        assert answer["ready"] is False
        assert "postgres" in answer["failed"], answer
        assert (await http_get(f"{url}/live"))[0] == 200
        await asyncio.to_thread(own_postgres.start)
        await eventually(lambda: ready(200), timeout_s=60)


async def test_natchet_engine_serves_metrics_from_the_parent_only(
    nats_server: NatsServer, dsn: str, tenant_name: str, tmp_path: Path
) -> None:
    """``natchet engine --metrics-port 0``: the dispatcher's process serves (and says where);
    its projector child, with the same environment, does not try to."""
    log = (tmp_path / "engine.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "natchet.cli", "engine", "--metrics-port", "0"],
        *["--metrics-host", "127.0.0.1"],
        *["--nats-url", nats_server.url, "--database-url", dsn, "--tenants", tenant_name],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env={**os.environ, "NATCHET_NATS_AUTH_FILE": "", "NATCHET_METRICS_PORT": "1"},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.startswith(b"natchet engine: metrics on http://127.0.0.1:"), line
        url = line.split(b" on ", 1)[1].strip().decode().removesuffix("/metrics")

        async def ready() -> bool:
            status, body = await http_get(f"{url}/ready")
            assert status == 200, body
            return True

        await eventually(ready, timeout_s=60)
        samples = await scrape(url)
        assert ("natchet_projector_lag_messages", frozenset({("tenant", tenant_name)})) in samples
        assert proc.returncode is None
    finally:
        await stop(proc)
        log.close()
    assert proc.returncode == 0, (tmp_path / "engine.log").read_text()[-2000:]


async def test_a_bad_metrics_port_is_one_line(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "natchet.cli", "engine", "--metrics-port", "70000"],
        *["--nats-url", "nats://127.0.0.1:1", "--database-url", "postgresql://x@127.0.0.1:1/x"],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert err.decode().strip().splitlines() == [
        "natchet: --metrics-port / NATCHET_METRICS_PORT: a port is 0 to 65535, not 70000"
    ]


async def test_a_metrics_port_in_use_is_one_line(nats_server: NatsServer, dsn: str) -> None:
    taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = taken.sockets[0].getsockname()[1]
    try:
        engine = Engine(
            EngineSettings(
                nats_server.url, dsn, ("x",), metrics_port=port, metrics_host="127.0.0.1"
            )
        )
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}: "):
            await engine.start()
        await engine.shutdown()
    finally:
        taken.close()


async def test_ready_is_503_while_the_projector_lags_past_the_bound(
    nats_server: NatsServer, dsn: str, tenant_name: str
) -> None:
    """An engine that answers for a projector nobody runs: the log grows, the checkpoint
    does not, and once the oldest message not applied is older than the bound, /ready
    fails naming the projector, and the lag gauges say how far behind it is."""
    lagging = settings(nats_server, dsn, tenant_name, role="dispatch", ready_max_lag_s=1.0)
    async with Engine(lagging, watch_projector=True) as engine:
        url = url_of(engine)
        hatchet = hatchet_for(nats_server, tenant_name)
        await hatchet.event.aio_push("nobody-listens", {"n": 1})
        hatchet.close()

        async def lagging_503() -> dict[str, Any]:
            status, body = await http_get(f"{url}/ready")
            assert status == 503, body
            answer: dict[str, Any] = orjson.loads(body)
            return answer

        answer = await eventually(lagging_503, timeout_s=30)
        assert list(answer["failed"]) == ["projector"], answer
        assert "bound 1s" in answer["failed"]["projector"]
        samples = await scrape(url)
        assert total(samples, "natchet_projector_lag_messages", tenant=tenant_name) >= 1
        assert total(samples, "natchet_projector_lag_seconds", tenant=tenant_name) > 1
        assert total(samples, "natchet_dispatcher_lag_messages", tenant=tenant_name) == 0


async def raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_bad_requests_get_an_answer_not_a_crash(metered: Engine) -> None:
    url = url_of(metered)
    assert (await raw(url, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    assert (await raw(url, b"POST /ready HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
    head = await raw(url, b"HEAD /live HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 13" in head
    assert (await http_get(f"{url}/live"))[0] == 200  # still serving
