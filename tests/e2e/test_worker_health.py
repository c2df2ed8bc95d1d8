"""Operating a worker (issue 11): ``/health`` and ``/metrics``, a blocked event loop seen
from outside it, a worker that exits when NATS is gone and comes back under a restart-always
supervisor, a protocol the engine refuses, and the versions ``natchet`` shows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from natchet.config import EngineSettings
from natchet.dev.embedded import NatsServer, free_port
from natchet.engine import Engine
from natchet.version import natchet_version
from schemas.protocol import PROTOCOL
from tests import support
from tests.conftest import eventually, running
from tests.support import get_blocking, http_get, worker_env
from worker import ClientSettings, Context, Hatchet, Worker, WorkerFatalError
from worker.vitals import Exit

NATCHET = [sys.executable, "-m", "natchet.cli"]
ROOT = Path(__file__).resolve().parents[2]

# A worker process as an operator runs one: worker.start(), settings from the environment.
# Logs go to stdout, so stderr holds only what the process says as it ends.
WORKER_SCRIPT = """
import asyncio, logging, os, sys, time
logging.basicConfig(stream=sys.stdout, level=logging.INFO)
import worker.version
if os.environ.get("TEST_PROTOCOL"):
    worker.version.PROTOCOL = int(os.environ["TEST_PROTOCOL"])
from worker import Context, Hatchet

hatchet = Hatchet()


@hatchet.workflow(name="Chores")
class Chores:
    @hatchet.step()
    async def work(self, context: Context):
        with open(os.environ["TEST_MARKER"], "a") as f:
            f.write(f"{context.delivery}\\n")
        if os.environ.get("TEST_BLOCK"):
            time.sleep(float(os.environ["TEST_BLOCK"]))  # a sync call in an async step
        if context.delivery == 1:
            await asyncio.sleep(float(context.workflow_input().get("hold", 0)))
        return {"delivery": context.delivery}


w = hatchet.worker("ops", max_runs=2)
w.register_workflow(Chores())
w.start()
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The worker scripts import natchet from this checkout."""
    return support.clean_env(PYTHONPATH=str(ROOT), **extra)


def health_hatchet(server: NatsServer, tenant: str, port: int, **env: str) -> Hatchet:
    settings = ClientSettings(nats_url=server.url, tenant=tenant)
    return Hatchet(
        settings=settings,
        env={
            "HATCHET_CLIENT_WORKER_HEALTHCHECK_ENABLED": "true",
            "HATCHET_CLIENT_WORKER_HEALTHCHECK_PORT": str(port),
            "HATCHET_CLIENT_WORKER_HEALTHCHECK_BIND_ADDRESS": "127.0.0.1",
            **env,
        },
    )


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_worker_with_health_enabled_serves_health_and_metrics(
    nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    port = free_port()
    hatchet = health_hatchet(nats_server, tenant_name, port)

    @hatchet.workflow(name="Mixed")
    class Mixed:
        @hatchet.step()
        async def work(self, context: Context) -> dict[str, bool]:
            if context.workflow_input().get("fail"):
                raise ValueError("asked to fail")
            return {"ok": True}

    w = hatchet.worker("healthy", max_runs=3)
    w.register_workflow(Mixed())
    base = f"http://127.0.0.1:{port}"
    async with running(w):
        status, body = await http_get(f"{base}/health")
        assert status == 200, body
        health = json.loads(body)
        assert health["status"] == "HEALTHY" and health["problems"] == [], health
        assert health["worker"] == "healthy" and health["worker_id"] == w.id, health
        assert health["protocol"] == PROTOCOL and health["sdk_version"] == natchet_version()
        ok = await hatchet.admin.aio_run_workflow("Mixed", {})
        bad = await hatchet.admin.aio_run_workflow("Mixed", {"fail": True})
        assert await asyncio.wait_for(ok.result(), 30) == {"work": {"ok": True}}
        with pytest.raises(Exception, match="asked to fail"):
            await asyncio.wait_for(bad.result(), 30)
        labels = {"tenant": tenant_name, "namespace": "default", "worker": "healthy"}
        step = {**labels, "workflow": "Mixed", "step": "work"}

        async def counted() -> str | None:
            status, body = await http_get(f"{base}/metrics")
            assert status == 200
            text = body.decode()
            done = metric(text, "natchet_worker_steps_finished_total", outcome="failed", **step)
            return text if done == 1.0 else None

        text = await eventually(counted)
        assert metric(text, "natchet_worker_slots", **labels) == 3.0
        assert metric(text, "natchet_worker_slots_available", **labels) == 3.0
        assert metric(text, "natchet_worker_slots_used", **labels) == 0.0
        assert metric(text, "natchet_worker_steps_started_total", **step) == 2.0
        finished = "natchet_worker_steps_finished_total"
        assert metric(text, finished, outcome="succeeded", **step) == 1.0
        assert metric(text, "natchet_worker_nats_connected", **labels) == 1.0
        assert metric(text, "natchet_worker_info", worker_id=w.id, protocol=str(PROTOCOL)) == 1.0
        assert "process_cpu_seconds_total" in text
        assert ok.workflow_run_id not in text, "a run id in a label: unbounded cardinality"
        status, _ = await http_get(f"{base}/nope")
        assert status == 404
    # Stopped: the port is free again.
    with pytest.raises(OSError):
        await http_get(f"{base}/health")
    hatchet.close()


class Poller(threading.Thread):
    """Asks ``/health`` every 50 ms from its own thread (the test's loop is the one a step
    blocks), noting when each status was first seen."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.first: dict[int, float] = {}
        self.bodies: dict[int, bytes] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            with contextlib.suppress(OSError):
                status, body = get_blocking(self.url, 5)
                self.first.setdefault(status, time.monotonic())
                self.bodies.setdefault(status, body)


async def test_a_worker_whose_loop_a_step_blocks_reports_503_within_the_bound(
    nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    bound_s = 1.0
    port = free_port()
    hatchet = health_hatchet(
        nats_server,
        tenant_name,
        port,
        HATCHET_CLIENT_WORKER_HEALTHCHECK_EVENT_LOOP_BLOCK_THRESHOLD_SECONDS=str(bound_s),
        NATCHET_WORKER_LOOP_BLOCKED_EXIT_SECONDS="0",
    )
    started: list[float] = []

    @hatchet.workflow(name="Blocker")
    class Blocker:
        @hatchet.step()
        async def block(self, context: Context) -> dict[str, bool]:
            started.append(time.monotonic())
            time.sleep(bound_s + 2.0)  # the mistake under test
            return {"ok": True}

    w = hatchet.worker("blocked", max_runs=1)
    w.register_workflow(Blocker())
    poller = Poller(f"http://127.0.0.1:{port}/health")
    async with running(w):
        poller.start()
        await eventually(lambda: 200 in poller.first)
        ref = await hatchet.admin.aio_run_workflow("Blocker", {})
        assert await asyncio.wait_for(ref.result(), 30) == {"block": {"ok": True}}
        await eventually(lambda: 503 in poller.first)
        seen_after = poller.first[503] - started[0]
        assert seen_after <= bound_s + 1.0, f"503 only {seen_after:.1f}s after the block began"
        body = json.loads(poller.bodies[503])
        assert body["status"] == "UNHEALTHY", body
        assert "event loop has been blocked" in body["problems"][0], body

        async def healthy_again() -> bool:
            status, _ = await http_get(poller.url)
            return status == 200

        await eventually(healthy_again)
    poller.done.set()
    poller.join()
    hatchet.close()


@contextlib.asynccontextmanager
async def supervised(
    args: list[str], env: dict[str, str], log: Path
) -> AsyncIterator[tuple[list[tuple[int, str]], list[asyncio.subprocess.Process]]]:
    """Run ``args`` under a ``restart: always`` loop: each exit is noted (code, stderr) and
    the process started again, until the block ends (then SIGTERM, and its exit is noted)."""
    exits: list[tuple[int, str]] = []
    procs: list[asyncio.subprocess.Process] = []
    stop = asyncio.Event()

    async def loop() -> None:
        with log.open("ab") as out:
            while not stop.is_set():
                proc = await asyncio.create_subprocess_exec(
                    *args, env=env, stdout=out, stderr=asyncio.subprocess.PIPE
                )
                procs.append(proc)
                _, err = await proc.communicate()
                assert proc.returncode is not None
                exits.append((proc.returncode, err.decode()))
                if not stop.is_set():
                    await asyncio.sleep(0.5)

    task = asyncio.create_task(loop())
    try:
        yield exits, procs
    finally:
        stop.set()
        if procs and procs[-1].returncode is None:
            procs[-1].send_signal(signal.SIGTERM)
        await asyncio.wait_for(task, 60)


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


async def test_a_worker_that_loses_nats_exits_and_comes_back_to_finish_its_work(
    tmp_path: Path, dsn: str, tenant_name: str
) -> None:
    """NATS stops under a worker running a step: past the bound it exits 69 with one line;
    the supervisor starts it again (and again, while NATS is down); once NATS is back the
    new worker gets the task again and the run succeeds. SIGTERM then ends it with 0."""
    store = tmp_path / "nats"
    nats = NatsServer(store)
    nats.start()
    script = tmp_path / "ops_worker.py"
    script.write_text(WORKER_SCRIPT)
    marker = tmp_path / "deliveries"
    env = clean_env(
        **worker_env(nats, tenant_name),
        TEST_MARKER=str(marker),
        NATCHET_WORKER_NATS_LOST_EXIT_SECONDS="2",
        NATCHET_WORKER_GRACE_SECONDS="2",
    )
    try:
        async with Engine(EngineSettings(nats.url, dsn, (tenant_name,))) as engine:
            hatchet = Hatchet(settings=ClientSettings(nats_url=nats.url, tenant=tenant_name))
            worker_log = tmp_path / "w.log"
            async with supervised([sys.executable, str(script)], env, worker_log) as (
                exits,
                procs,
            ):
                await eventually(
                    lambda: worker_log.exists() and "started:" in worker_log.read_text(),
                    timeout_s=60,
                )
                ref = await hatchet.admin.aio_run_workflow("Chores", {"hold": 300})
                await eventually(
                    lambda: marker.exists() and marker.read_text() == "1\n", timeout_s=60
                )
                await asyncio.to_thread(nats.stop)
                await eventually(lambda: exits, timeout_s=30)
                code, stderr = exits[0]
                assert code == Exit.NATS_LOST, (code, stderr)
                line = one_line(stderr)
                assert line.startswith("natchet worker ops: NATS has been unreachable"), line
                # Started again while NATS is still down: it cannot connect, says so, exits 69.
                await eventually(lambda: len(exits) >= 2, timeout_s=60)
                code, stderr = exits[1]
                assert code == Exit.NATS_LOST, (code, stderr)
                # (the connect's own timeout, or the bound, whichever ends first)
                line = one_line(stderr)
                assert "cannot connect to NATS" in line or "NATS has been unreachable" in line
                nats = NatsServer(store, port=nats.port)
                await asyncio.to_thread(nats.start)
                result = await asyncio.wait_for(ref.result(), 90)
                assert result == {"work": {"delivery": 2}}, result
                assert all(c == Exit.NATS_LOST for c, _ in exits), exits
                running_now = procs[-1]
            assert running_now.returncode == 0, exits[-1]
            assert exits[-1][0] == 0, exits[-1]
            hatchet.close()
            assert engine.ready.is_set()
    finally:
        await asyncio.to_thread(nats.stop)


async def test_a_worker_whose_loop_stays_blocked_exits_70_with_one_line(
    tmp_path: Path, nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    script = tmp_path / "ops_worker.py"
    script.write_text(WORKER_SCRIPT)
    marker = tmp_path / "deliveries"
    log = tmp_path / "w.log"
    env = clean_env(
        **worker_env(nats_server, tenant_name),
        TEST_MARKER=str(marker),
        TEST_BLOCK="120",
        NATCHET_WORKER_LOOP_BLOCKED_EXIT_SECONDS="2",
    )
    hatchet = Hatchet(settings=ClientSettings(nats_url=nats_server.url, tenant=tenant_name))
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), env=env, stdout=out, stderr=asyncio.subprocess.PIPE
        )
        try:
            await eventually(lambda: "started:" in log.read_text(), timeout_s=60)
            await hatchet.admin.aio_run_workflow("Chores", {})
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    hatchet.close()
    assert marker.read_text() == "1\n"
    assert proc.returncode == Exit.LOOP_BLOCKED, (proc.returncode, err)
    line = one_line(err.decode())
    assert line.startswith("natchet worker ops: the event loop has been blocked"), line


async def test_a_health_port_in_use_is_one_line_and_exit_78(
    tmp_path: Path, nats_server: NatsServer, tenant_name: str
) -> None:
    script = tmp_path / "ops_worker.py"
    script.write_text(WORKER_SCRIPT)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = clean_env(
            **worker_env(nats_server, tenant_name),
            TEST_MARKER=str(tmp_path / "deliveries"),
            HATCHET_CLIENT_WORKER_HEALTHCHECK_ENABLED="true",
            HATCHET_CLIENT_WORKER_HEALTHCHECK_BIND_ADDRESS="127.0.0.1",
            HATCHET_CLIENT_WORKER_HEALTHCHECK_PORT=str(taken.getsockname()[1]),
        )
        proc, err = await run_to_end(script, env)
    assert proc.returncode == Exit.CONFIG, (proc.returncode, err)
    line = one_line(err.decode())
    assert "cannot serve the worker's health endpoint" in line, line


async def test_a_library_worker_that_loses_nats_raises_a_fatal_error(
    tmp_path: Path, tenant_name: str
) -> None:
    """As a library (``await worker.run()``), the process is the caller's: past the bound
    the worker stops on its own and ``run()`` raises ``WorkerFatalError`` with the code."""
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    try:
        hatchet = Hatchet(
            settings=ClientSettings(nats_url=nats.url, tenant=tenant_name),
            env={"NATCHET_WORKER_NATS_LOST_EXIT_SECONDS": "1"},
        )

        @hatchet.workflow(name="Lonely")
        class Lonely:
            @hatchet.step()
            async def work(self, context: Context) -> None:
                return None

        w = hatchet.worker("lonely", max_runs=1)
        w.register_workflow(Lonely())
        task = asyncio.create_task(w.run())  # no engine: it keeps trying to register
        await eventually(lambda: w.vitals.check().nats_connected and w.running)
        await asyncio.to_thread(nats.stop)
        with pytest.raises(WorkerFatalError, match="NATS has been unreachable") as info:
            await asyncio.wait_for(task, 30)
        assert info.value.code == Exit.NATS_LOST
        assert not w.running
        hatchet.close()
    finally:
        await asyncio.to_thread(nats.stop)


async def test_a_worker_announcing_an_unsupported_protocol_is_refused(
    tmp_path: Path, nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    script = tmp_path / "ops_worker.py"
    script.write_text(WORKER_SCRIPT)
    env = clean_env(
        **worker_env(nats_server, tenant_name),
        TEST_MARKER=str(tmp_path / "deliveries"),
        TEST_PROTOCOL=str(PROTOCOL + 98),
    )
    proc, err = await run_to_end(script, env)
    assert proc.returncode == Exit.REFUSED, (proc.returncode, err)
    line = one_line(err.decode())
    assert line.startswith("natchet worker ops: the engine refuses this worker"), line
    assert f"wire protocol {PROTOCOL + 98}" in line and f"accepts protocol {PROTOCOL}" in line


async def run_to_end(script: Path, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, bytes]:
    """Run a worker script until it exits on its own (within 60 s): it and its stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc, err


async def natchet(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *NATCHET,
        *args,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_natchet_version_and_workers_list_show_the_versions(
    nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    code, out, err = await natchet("version", "--json", "--nats-url", nats_server.url)
    assert code == 0, err
    info = json.loads(out)
    assert info["engine"] == info["sdk"] == natchet_version()
    assert info["protocol"] == PROTOCOL and info["accepted_protocols"] == str(PROTOCOL)
    assert info["nats_server"] and info["nats_server"][0].isdigit(), info
    code, out, err = await natchet("version", "--nats-url", nats_server.url)
    assert code == 0 and f"nats-server: {info['nats_server']}" in out, (out, err)

    hatchet = Hatchet(settings=ClientSettings(nats_url=nats_server.url, tenant=tenant_name))

    @hatchet.workflow(name="Idle")
    class Idle:
        @hatchet.step()
        async def work(self, context: Context) -> None:
            return None

    w: Worker = hatchet.worker("versioned", max_runs=1)
    w.register_workflow(Idle())
    async with running(w):
        args = ("workers", "list", "--nats-url", nats_server.url, "--tenant", tenant_name)

        async def listed() -> list[dict[str, Any]]:
            code, out, err = await natchet(*args, "--json")
            assert code == 0, err
            return [r for r in json.loads(out) if r["id"] == w.id]

        [row] = await eventually(listed)
        assert row["sdk_version"] == natchet_version() and row["protocol"] == PROTOCOL, row
        assert row["outdated"] is False and row["refused"] is False, row
        code, out, _ = await natchet(*args)
        assert "SDK" in out and "PROTO" in out and natchet_version() in out, out
    hatchet.close()


def test_workers_list_flags_workers_older_than_this_natchet() -> None:
    import datetime as dt

    from natchet.cli.workers import worker_row
    from schemas import WorkerHeartbeat, WorkerStatus

    now = dt.datetime.now(dt.UTC)

    def row(sdk: str, protocol: int) -> dict[str, Any]:
        beat = WorkerHeartbeat(
            "w1",
            "w",
            ("a:b",),
            1,
            0,
            WorkerStatus.ACTIVE,
            now.isoformat(),
            now.isoformat(),
            sdk_version=sdk,
            protocol=protocol,
        )
        return worker_row(beat, "default", now, current="0.2.0")

    assert row("0.2.0", PROTOCOL)["outdated"] is False
    assert row("0.1.9", PROTOCOL)["outdated"] is True
    assert row("", 0)["outdated"] is True  # from before versions were announced
    assert row("", 0)["protocol"] == 1 and row("", 0)["refused"] is False
    assert row("0.3.0", PROTOCOL + 1)["refused"] is True


def test_a_heartbeat_from_before_versions_decodes() -> None:
    from schemas import WorkerHeartbeat
    from schemas.codec import decode_as

    old = (
        b'{"worker_id":"w1","name":"w","actions":["a:b"],"slots":1,"running":0,'
        b'"status":"ACTIVE","started_at":"2026-01-01T00:00:00+00:00",'
        b'"at":"2026-01-01T00:00:00+00:00","v":1}'
    )
    beat = decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, old)
    assert (beat.sdk_version, beat.protocol) == ("", 0)
