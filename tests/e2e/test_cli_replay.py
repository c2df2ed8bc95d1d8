"""Issue 10: ``natchet replay --verify`` rebuilds the read model from the log into a fresh
schema and compares it with the live one. Real NATS, Postgres, engine and worker; the CLI as
a real process."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import struct
import sys
import termios
from pathlib import Path
from typing import Any

import psycopg
from nats.aio.client import Client as NATS

from dispatcher.decide import event_run_id
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from projector import dump_tables
from schemas import Scope
from tests.conftest import running
from tests.e2e.test_cli_audit import an_audited_run, audited, finished
from tests.support import hatchet_for

ROOT = Path(__file__).resolve().parents[2]


async def natchet(tmp_path: Path, server: NatsServer, dsn: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "natchet.cli",
        *args,
        "--nats-url",
        server.url,
        "--database-url",
        dsn,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def read_until_closed(fd: int) -> bytes:
    """All a pseudo-terminal's master reads until every slave end is closed (Linux: EIO)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def natchet_on_a_terminal(
    tmp_path: Path, server: NatsServer, dsn: str, *args: str
) -> tuple[int, str]:
    """The CLI with stdout and stderr on a pseudo-terminal (80 columns): its exit code and
    everything the terminal received, read until the process is gone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    env.update(PYTHONPATH=str(ROOT), TERM="xterm", COLUMNS="80")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "natchet.cli",
            *args,
            "--nats-url",
            server.url,
            "--database-url",
            dsn,
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
        )
    finally:
        os.close(slave)  # the child's are its only ones: EOF once it exits
    try:
        reading = asyncio.create_task(asyncio.to_thread(read_until_closed, master))
        try:
            code = await asyncio.wait_for(proc.wait(), 120)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        text = (await asyncio.wait_for(reading, 30)).decode()
    finally:
        os.close(master)
    return code, text


async def replay_schemas(db: psycopg.AsyncConnection[Any]) -> list[str]:
    cur = await db.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'natchet_replay%' ORDER BY 1"
    )
    return [row[0] for row in await cur.fetchall()]


async def test_replay_verify_finds_nothing_then_exactly_the_changed_row(
    nats_server: NatsServer,
    engine: Engine,
    nc: NATS,
    db: psycopg.AsyncConnection[Any],
    dsn: str,
    tenant_name: str,
    tmp_path: Path,
) -> None:
    # A mixed workload: two diamonds, each with a step that fails once and is retried.
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("replayer", max_runs=4)
    worker.register_workflow(audited(hatchet))
    run_ids = []
    async with running(worker):
        for n in (1, 2):
            pushed = await hatchet.event.aio_push("audit:go", {"n": n})
            run_ids.append(event_run_id(Scope(tenant_name), int(pushed.event_id), "Audited"))
        for run_id in run_ids:
            await finished(nc, tenant_name, run_id)
    hatchet.close()
    end = await engine.projectors[tenant_name].wait_caught_up(timeout_s=30)
    # Another tenant's row, which no log of this test holds: a --tenant replay leaves it out.
    await db.execute(
        "INSERT INTO events (tenant, namespace, seq, key, valid) VALUES ('other', 'default', 1,"
        " 'x', false)"
    )

    code, out, err = await natchet(
        tmp_path, nats_server, dsn, "replay", "--verify", "--tenant", tenant_name
    )
    assert code == 0, (out, err)
    assert f"replayed {tenant_name}: log sequences 1..{end} " in out
    assert out.rstrip().endswith("with the rebuild: 0 differences"), out
    assert f"replayed {end:,}/{end:,} messages" in err  # plain progress: not a terminal
    assert await replay_schemas(db) == []  # the rebuild is dropped after a verify

    # One deliberate change in Postgres: the replay names exactly that row and column.
    run_id = run_ids[0]
    await db.execute(
        "UPDATE steps SET status = 'FAILED' WHERE tenant = %s AND run_id = %s AND name = 'd'",
        (tenant_name, run_id),
    )
    code, out, err = await natchet(
        tmp_path, nats_server, dsn, "replay", "--verify", "--tenant", tenant_name
    )
    assert code == 1, (out, err)
    lines = out.splitlines()
    diffs = [line for line in lines if line.startswith(("steps", "runs", "attempts", "events"))]
    assert diffs == [
        f"steps (tenant={tenant_name}, run_id={run_id}, name=d) status:"
        " live 'FAILED', rebuilt 'SUCCEEDED'"
    ], out
    assert lines[-1].endswith("with the rebuild: 1 difference"), out
    # Rebuilt in three processes (each its share of the runs): the same one difference.
    code, out3, err = await natchet(
        tmp_path, nats_server, dsn, "replay", "--verify", "--tenant", tenant_name, "--shares", "3"
    )
    assert code == 1, (out3, err)
    assert [line for line in out3.splitlines() if line.startswith("steps")] == diffs, out3
    assert out3.splitlines()[-1].endswith("with the rebuild: 1 difference"), out3
    code, _, err = await natchet(tmp_path, nats_server, dsn, "replay", "--shares", "0")
    assert code == 2 and "--shares: '0': a number of processes from 1 to" in err, err

    # Without --verify the rebuild stays, in the schema it names.
    keep = ("replay", "--tenant", tenant_name, "--schema", "natchet_replay_x")
    code, out, err = await natchet(tmp_path, nats_server, dsn, *keep)
    assert code == 0, (out, err)
    assert "schema natchet_replay_x" in out
    assert await replay_schemas(db) == ["natchet_replay_x"]
    cur = await db.execute(
        "SELECT status FROM natchet_replay_x.steps WHERE tenant = %s AND run_id = %s"
        " AND name = 'd'",
        (tenant_name, run_id),
    )
    assert await cur.fetchone() == ("SUCCEEDED",)
    # A schema that exists is refused, in one line.
    code, out, err = await natchet(tmp_path, nats_server, dsn, *keep)
    assert code == 2 and err.strip().count("\n") == 0 and "already exists" in err, err


async def test_replay_json_is_one_object_that_names_each_difference(
    nats_server: NatsServer,
    engine: Engine,
    nc: NATS,
    db: psycopg.AsyncConnection[Any],
    dsn: str,
    tenant_name: str,
    tmp_path: Path,
) -> None:
    """``--json``: stdout is one object (progress stays on stderr), the exit codes as
    without it."""
    run_id, _event = await an_audited_run(nats_server, nc, tenant_name)
    end = await engine.projectors[tenant_name].wait_caught_up(timeout_s=30)
    verify = ("replay", "--verify", "--tenant", tenant_name, "--json")

    code, out, err = await natchet(tmp_path, nats_server, dsn, *verify)
    assert code == 0, (out, err)
    clean = json.loads(out)  # all of stdout
    covered = clean["covered"][tenant_name]
    assert covered >= end and clean["messages"] == covered, clean
    assert clean["tenants"] == [tenant_name] and list(clean["covered"]) == [tenant_name]
    assert clean["verified"] is True and clean["rows_compared"] > 0
    assert clean["differences"] == [] and clean["swapped"] is False
    assert clean["seconds"] > 0 and clean["rate"] > 0
    assert f"replayed {covered:,}/{covered:,} messages" in err  # progress: stderr only
    assert clean["kept"] is False and await replay_schemas(db) == []

    await db.execute(
        "UPDATE steps SET status = 'FAILED' WHERE tenant = %s AND run_id = %s AND name = 'd'",
        (tenant_name, run_id),
    )
    code, out, err = await natchet(tmp_path, nats_server, dsn, *verify)
    assert code == 1, (out, err)
    changed = json.loads(out)
    assert changed["differences"] == [
        {
            "table": "steps",
            "key": {"tenant": tenant_name, "run_id": run_id, "name": "d"},
            "column": "status",
            "live": "FAILED",
            "rebuilt": "SUCCEEDED",
        }
    ], changed
    assert changed["verified"] is True and changed["swapped"] is False

    # --swap refuses, and says so in the object; the exit code is the same.
    code, out, err = await natchet(tmp_path, nats_server, dsn, "replay", "--swap", "--json")
    assert code == 1, (out, err)
    refused = json.loads(out)
    assert refused["swapped"] is False and len(refused["differences"]) == 1, refused


async def test_replay_swap_makes_the_rebuild_live_and_the_projector_goes_on(
    nats_server: NatsServer,
    engine: Engine,
    nc: NATS,
    db: psycopg.AsyncConnection[Any],
    dsn: str,
    tenant_name: str,
    tmp_path: Path,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("swapper", max_runs=4)
    worker.register_workflow(audited(hatchet))
    projector = engine.projectors[tenant_name]
    async with running(worker):

        async def one_run(n: int) -> str:
            pushed = await hatchet.event.aio_push("audit:go", {"n": n})
            run_id = event_run_id(Scope(tenant_name), int(pushed.event_id), "Audited")
            await finished(nc, tenant_name, run_id)
            await projector.wait_caught_up(timeout_s=30)
            return run_id

        first = await one_run(1)
        # A changed row: the swap is refused, and the live projection is left as it was.
        await db.execute(
            "UPDATE steps SET status = 'FAILED' WHERE tenant = %s AND run_id = %s AND name = 'd'",
            (tenant_name, first),
        )
        code, out, err = await natchet(tmp_path, nats_server, dsn, "replay", "--swap")
        assert code == 1 and "not swapped" in out, (out, err)
        assert await replay_schemas(db) == []
        cur = await db.execute(
            "SELECT status FROM steps WHERE tenant = %s AND run_id = %s AND name = 'd'",
            (tenant_name, first),
        )
        assert await cur.fetchone() == ("FAILED",)
        # Another tenant's rows would be lost by a one-tenant swap: refused before any work.
        code, out, err = await natchet(
            tmp_path, nats_server, dsn, "replay", "--swap", "--tenant", "someoneelse"
        )
        assert code == 2 and "replay every tenant" in err, (out, err)

        await db.execute(
            "UPDATE steps SET status = 'SUCCEEDED' WHERE tenant = %s AND run_id = %s"
            " AND name = 'd'",
            (tenant_name, first),
        )
        before = await dump_tables(db)
        code, out, err = await natchet(tmp_path, nats_server, dsn, "replay", "--swap")
        assert code == 0, (out, err)
        assert "0 differences" in out and "swapped: the rebuilt read model" in out, out
        [old] = [w for w in out.split() if w.startswith("natchet_old_")][:1]
        # The rebuild is live; the old tables are where the command said.
        assert await dump_tables(db) == before
        assert await dump_tables(db, old) == before
        cur = await db.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = 'runs'",
            (old,),
        )
        assert await cur.fetchone() == (1,)

        # The live projector goes on into the swapped-in tables, from their checkpoint.
        second = await one_run(2)
    hatchet.close()
    cur = await db.execute(
        "SELECT status FROM runs WHERE tenant = %s AND id = %s", (tenant_name, second)
    )
    assert await cur.fetchone() == ("SUCCEEDED",)
    code, out, err = await natchet(tmp_path, nats_server, dsn, "replay", "--verify")
    assert code == 0 and out.rstrip().endswith("0 differences"), (out, err)


async def test_replay_verify_while_the_engine_works_compares_the_same_prefix(
    nats_server: NatsServer,
    engine: Engine,
    nc: NATS,
    dsn: str,
    tenant_name: str,
    tmp_path: Path,
) -> None:
    """Runs go on during the replay: the live projection moves (and lags the log); the
    replay covers what the live one holds in the snapshot it compares, so no difference."""
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("busy", max_runs=8)
    worker.register_workflow(audited(hatchet))
    stop = asyncio.Event()

    async def load() -> int:
        n = 0
        while not stop.is_set():
            n += 1
            await hatchet.event.aio_push("audit:go", {"n": n})
            await asyncio.sleep(0.02)
        return n

    async with running(worker):
        for n in range(5):
            await hatchet.event.aio_push("audit:go", {"warm": n})
        await engine.projectors[tenant_name].wait_caught_up(timeout_s=30)
        pushing = asyncio.create_task(load())
        try:
            code, out, err = await natchet(
                tmp_path, nats_server, dsn, "replay", "--verify", "--tenant", tenant_name
            )
        finally:
            stop.set()
            pushed = await pushing
    hatchet.close()
    assert pushed > 5
    assert code == 0, (out, err)
    assert out.rstrip().endswith("0 differences"), out


# tqdm's frame on close: "replay: 100%|####| N/N [MM:SS<00:00, R msg/s]".
BAR = re.compile(
    r"replay: +100%\|[^|]*\| (?P<done>\d+)/(?P<total>\d+)"
    r" \[(?P<elapsed>(?:\d+:)?\d\d:\d\d)<(?P<eta>(?:\d+:)?\d\d:\d\d),"
    r" +(?P<rate>\d+(?:\.\d+)?)msg/s\]"
)


async def test_replay_on_a_terminal_draws_a_bar_with_count_rate_and_eta(
    nats_server: NatsServer,
    engine: Engine,
    dsn: str,
    tenant_name: str,
    tmp_path: Path,
) -> None:
    """On a terminal the progress is tqdm's bar (the plain lines are for pipes and files):
    messages done of all, the rate, elapsed and ETA, ending at the count the log holds."""
    hatchet = hatchet_for(nats_server, tenant_name)
    for first in range(0, 300, 50):
        await asyncio.gather(
            *(hatchet.event.aio_push("bar:n", {"n": n}) for n in range(first, first + 50))
        )
    hatchet.close()
    end = await engine.projectors[tenant_name].wait_caught_up(timeout_s=30)
    assert end >= 300

    code, text = await natchet_on_a_terminal(
        tmp_path, nats_server, dsn, "replay", "--verify", "--tenant", tenant_name
    )
    assert code == 0, text
    frames = [f.strip() for f in re.split(r"[\r\n]+", text) if f.strip()]
    assert not any(f.startswith("replayed ") and "messages," in f for f in frames), text
    bars = [m for f in frames if (m := BAR.search(f))]
    assert bars, text
    final = bars[-1]
    covered = int(re.findall(rf"replayed {tenant_name}: log sequences 1\.\.(\d+) ", text)[0])
    assert covered >= end
    assert int(final["done"]) == int(final["total"]) == covered, final.group(0)
    assert final["eta"].endswith("00:00") and float(final["rate"]) > 0, final.group(0)
    assert "with the rebuild: 0 differences" in text
