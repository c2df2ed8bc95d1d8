"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import signal
import sys
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from natchet.dev.embedded import NatsServer
from projector import get_run
from tests.conftest import eventually, running
from worker import ClientSettings, Hatchet, WorkflowRunError


def hatchet_for(server: NatsServer, tenant: str, namespace: str = "default") -> Hatchet:
    return Hatchet(settings=ClientSettings(nats_url=server.url, tenant=tenant, namespace=namespace))


def worker_env(server: NatsServer, tenant: str, namespace: str = "default") -> dict[str, str]:
    return {
        "HATCHET_CLIENT_HOST_PORT": f"127.0.0.1:{server.port}",
        "HATCHET_CLIENT_TENANT_ID": tenant,
        "HATCHET_CLIENT_NAMESPACE": namespace,
    }


async def run_ends(
    db: psycopg.AsyncConnection[Any],
    run_id: str,
    *,
    tenant: str | None = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """The run as projected, once it reached a terminal status (``tenant``: the only tenant
    with that run id, when not given)."""

    async def terminal() -> dict[str, Any] | None:
        owner = tenant
        if owner is None:
            cur = await db.execute("SELECT tenant FROM runs WHERE id = %s", (run_id,))
            rows = await cur.fetchall()
            assert len(rows) <= 1, f"run id {run_id} in several tenants: pass tenant="
            if not rows:
                return None
            owner = rows[0][0]
        run = await get_run(db, run_id, tenant=owner)
        if run and run["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return run
        return None

    return await eventually(terminal, timeout_s=timeout_s)


async def runs_of(db: psycopg.AsyncConnection[Any], tenant: str) -> list[dict[str, Any]]:
    cur = await db.execute("SELECT id FROM runs WHERE tenant = %s ORDER BY created_at", (tenant,))
    return [
        r
        for (rid,) in await cur.fetchall()
        if (r := await get_run(db, rid, tenant=tenant)) is not None
    ]


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie, exited but not yet reaped, has stopped: it holds no port and
    no file)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def get_blocking(url: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """GET ``url``: the status and the body, whatever the status (blocking: a thread's)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as exc:  # 4xx, 5xx: the answer is what is tested
        return exc.code, exc.read()


async def http_get(url: str, *, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """GET ``url`` (plain http) in a thread, without blocking the event loop the server
    may share: the status and the body (chunked or not), whatever the status."""
    return await asyncio.to_thread(get_blocking, url, timeout_s)


async def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` parsed: (sample name, its labels) -> value."""
    status, body = await http_get(f"{url}/metrics")
    assert status == 200, body
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def stop(proc: asyncio.subprocess.Process, *, grace_s: float = 30.0) -> None:
    """SIGTERM, and SIGKILL if it has not ended within ``grace_s``."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without natchet's and Hatchet's variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    return {**env, **extra}


async def start_natchet_dev(cwd: Path, data: Path) -> tuple[asyncio.subprocess.Process, str]:
    """``natchet dev --data-dir DATA``, and what it printed until it was up (its URLs and the
    operator credential); stop it with :func:`stop`."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "natchet.cli", "dev", "--data-dir", str(data)],
        cwd=cwd,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not lines or "Press Ctrl-C" not in lines[-1]:
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            assert line, "natchet dev stopped:\n" + "".join(lines)
            lines.append(line.decode())
    except BaseException:
        await stop(proc, grace_s=60)
        raise
    return proc, "".join(lines)


async def start_engine_process(
    server: NatsServer | str, dsn: str, tenant: str, log: Path, *args: str
) -> asyncio.subprocess.Process:
    """``natchet engine`` for ``tenant`` (or several, comma-separated) as a process of its
    own (to kill -9 and start again), on ``server`` (or a URL list, for a cluster), with
    ``args``, its output appended to ``log``."""
    url = server if isinstance(server, str) else server.url
    with log.open("ab") as out:  # the child keeps its own descriptor
        return await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "natchet.cli", "engine"],
            *["--nats-url", url, "--database-url", dsn, "--tenants", tenant, *args],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={**os.environ, "NATCHET_NATS_AUTH_FILE": ""},
        )


ROOT = Path(__file__).resolve().parents[1]


@contextlib.asynccontextmanager
async def worker_process(
    server: NatsServer, tenant: str, name: str, tmp_path: Path, script: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A worker of its own (``script``, a Python program taking the worker's name as its
    argument) running as ``name``, its output in ``<tmp_path>/<name>.log``; stopped
    (SIGTERM) at the end of the block if it still runs (kill it -9 to test a crash)."""
    path = tmp_path / f"{name}_worker.py"
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    env.update(worker_env(server, tenant), PYTHONPATH=str(ROOT))
    with (tmp_path / f"{name}.log").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(path), name, cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


async def natchet_cli(nats_url: str, dsn: str, *args: str) -> str:
    """``natchet ARGS`` as a process against that NATS and Postgres; its stdout (it must
    succeed, without a traceback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    env.update(PYTHONPATH=str(ROOT), NATCHET_NATS_URL=nats_url, NATCHET_DATABASE_URL=dsn)
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "natchet.cli", *args],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0 and b"Traceback" not in err, err.decode()
    return out.decode()


@attrs.frozen
class Contest:
    """Two runs of one key (``second`` started while ``first`` ran): the one a strategy
    cancelled, as projected once over, and the other's result."""

    refs: dict[str, Any]  # "first", "second": their run refs
    loser: dict[str, Any]
    won: Any


async def second_while_first_runs(
    db: psycopg.AsyncConnection[Any],
    tenant: str,
    wf: Any,
    release: asyncio.Event,
    cancelled: str,
) -> Contest:
    """Start a run of ``wf`` (user ``ada``), and once it is RUNNING a second one; wait for
    the ``cancelled`` one ("first" or "second") to end, then ``release`` the other's step
    and take its result (the loser's result raising ``WorkflowRunError``)."""
    first = await wf.aio_run_no_wait({"user": "ada"})

    async def started() -> bool:
        run = await get_run(db, first.workflow_run_id, tenant=tenant)
        return bool(run) and run["status"] == "RUNNING"

    await eventually(started, timeout_s=30)
    second = await wf.aio_run_no_wait({"user": "ada"})
    refs = {"first": first, "second": second}
    loser = await run_ends(db, refs[cancelled].workflow_run_id, tenant=tenant)
    release.set()
    winner = refs["second" if cancelled == "first" else "first"]
    won = await asyncio.wait_for(winner.aio_result(), 30)
    with pytest.raises(WorkflowRunError):
        await asyncio.wait_for(refs[cancelled].aio_result(), 30)
    return Contest(refs, loser, won)


async def run_all_on_workers(
    hatchet: Hatchet, wf: Any, runs: list[dict[str, Any]], *, workers: int = 4, slots: int = 2
) -> None:
    """Run ``runs`` (bulk items for ``wf``) to their ends on ``workers`` in-process workers
    of ``slots`` each, then close ``hatchet``."""
    async with contextlib.AsyncExitStack() as stack:
        for i in range(workers):
            await stack.enter_async_context(
                running(hatchet.worker(f"w{i}", slots=slots, workflows=[wf]))
            )
        refs = await hatchet.admin.aio_run_workflows(runs)
        for ref in refs:
            await asyncio.wait_for(ref.aio_result(), 120)
    hatchet.close()


def assert_one_at_a_time(
    rows: list[tuple[str, dt.datetime, dt.datetime, str]], keys: list[str], what: str
) -> None:
    """``rows`` (key, started, finished, worker name) never overlap within a key, cover
    exactly ``keys``, and were run by more than one worker."""
    by_key: dict[str, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    for key, started, finished, _worker in rows:
        by_key[key].append((started, finished))
    assert sorted(by_key) == sorted(keys)
    for key, spans in by_key.items():
        spans.sort()
        for (_s0, f0), (s1, _f1) in itertools.pairwise(spans):
            assert s1 >= f0, f"key {key}: {what} started at {s1} while another ran until {f0}"
    assert len({r[3] for r in rows}) > 1, "one worker ran everything"
