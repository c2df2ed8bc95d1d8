"""A rebuild split among processes by run (``projector.shares``, ``natchet replay --shares``):
the same tables as one process, each run's rows written by one share, and a share that
fails fails the rebuild in one line. Real NATS and Postgres; the shares are real processes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from nats.aio.client import Client as NATS
from projector_scenario import Writer, read_breaking_after, write_history
from test_projector_rejections import write_bad_messages

import eventstore
import projector.rebuild
import schemas
from projector import dump_tables, list_runs, migrate, ops, read_checkpoint
from projector import shares as shares_module
from projector.share_child import check_owned
from projector.shares import ShareError, share_of, share_of_record

T0 = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


async def autocommit(dsn: str) -> psycopg.AsyncConnection[Any]:
    """The shares see only what is committed: the schema is made through autocommit."""
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


async def a_busy_log(nc: NATS, tenant: str) -> int:
    """The projector scenario's history, a few more diamonds (runs enough that three shares
    each hold some) and runs whose step only a task queued, as today's engine logs it (the
    task's run id is in its body, not its subject). The log's last sequence."""
    await write_history(nc, tenant)
    w = Writer(nc, schemas.Scope(tenant))
    for n in range(6):
        await w.diamond(t=200 + 20 * n)
    for n in range(6):
        run_id = str(uuid.uuid4())
        await w.created(run_id, t=400 + 10 * n)
        await w.put(w.queue(run_id, "s", 1, t=401 + 10 * n, workflow="flaky")[1])
    return await eventstore.last_seq(nc, tenant)


async def test_three_shares_give_the_tables_one_process_gives(
    nc: NATS, tenant: str, dsn: str
) -> None:
    end = await a_busy_log(nc, tenant)
    async with await autocommit(dsn) as conn:
        await migrate(conn, "one")
        await projector.rebuild.rebuild(conn, nc, tenant, "one", until_seq=end, batch_size=7)
        await migrate(conn, "three")
        applied: list[int] = []
        await projector.rebuild.rebuild(
            conn, nc, tenant, "three", until_seq=end, batch_size=7, shares=3,
            on_batch=applied.append,
        )  # fmt: skip
        assert await dump_tables(conn, "three") == await dump_tables(conn, "one")
        assert await read_checkpoint(conn, tenant, "three") == end
        # Every message was applied once, and the runs fell in more than one share (else
        # this would test one process).
        assert sum(applied) == end
        runs = await list_runs(conn, schema="three")
        assert len({share_of(r["id"], 3) for r in runs}) >= 2, [r["id"] for r in runs]


async def test_bad_messages_are_rejected_by_the_shares_as_by_one_process(
    nc: NATS, tenant: str, dsn: str
) -> None:
    """Undecodable messages, a task whose run id is not text, a message whose body names
    another run than its subject, and one Postgres refuses (found by the share's halving
    into savepoints): the same rejections, and the same rows after them."""
    await a_busy_log(nc, tenant)
    await write_bad_messages(nc, tenant)
    scope = schemas.Scope(tenant)
    await eventstore.append(nc, eventstore.Append(scope.task("diamond", "a"), b'{"run_id": 7}'))
    await Writer(nc, scope).diamond(t=900)
    end = await eventstore.last_seq(nc, tenant)
    async with await autocommit(dsn) as conn:
        await migrate(conn, "one")
        await projector.rebuild.rebuild(conn, nc, tenant, "one", until_seq=end, batch_size=7)
        await migrate(conn, "three")
        await projector.rebuild.rebuild(
            conn, nc, tenant, "three", until_seq=end, batch_size=7, shares=3
        )
        tables = await dump_tables(conn, "three")
        assert tables == await dump_tables(conn, "one")
        reasons = [reason for _, _, _, reason, _ in tables["rejections"]]
        assert any("postgres refused the message" in r for r in reasons), reasons
        assert any("differs from the subject" in r for r in reasons), reasons


def test_a_replay_left_to_choose_splits_only_a_long_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto``: one process below ``SHARED_FROM`` messages; from it, one a core (up to
    ``MAX_AUTO``), as ``natchet replay`` without ``--shares`` rebuilds."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert shares_module.auto(shares_module.SHARED_FROM - 1) == 1
    assert shares_module.auto(shares_module.SHARED_FROM) == shares_module.MAX_AUTO
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert shares_module.auto(10 * shares_module.SHARED_FROM) == 2
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert shares_module.auto(10 * shares_module.SHARED_FROM) == 1


def test_each_message_goes_to_the_share_of_its_run() -> None:
    task = orjson.dumps({"run_id": "r-42", "step": "a"})
    for n in (2, 3, 5):
        assert share_of_record("t.ns.runs.r-42.created", b"{}", n) == share_of("r-42", n)
        assert share_of_record("t.ns.tasks.wf.a", task, n) == share_of("r-42", n)
        # Everything that is not a run's goes to share 0, as does what names no run.
        for subject, data in (
            ("t.ns.events.order.paid", b"{}"),
            ("t.ns.workflows.wf", b"{}"),
            ("t.ns.crons.wf.nightly", b"{}"),
            ("t.ns.tasks.wf.a", b"not json"),
            ("t.ns.tasks.wf.a", b"[1]"),
            ("t.ns.tasks.wf.a", b'{"run_id": 7}'),
            ("t.ns.runs.r-42", b"{}"),
            ("t", b""),
        ):
            assert share_of_record(subject, data, n) == 0, subject
    # The runs spread: 100 run ids fill every one of 4 shares.
    assert {share_of(f"run-{i}", 4) for i in range(100)} == {0, 1, 2, 3}


def test_a_share_refuses_an_operation_on_another_shares_run() -> None:
    mine = next(f"run-{i}" for i in range(100) if share_of(f"run-{i}", 2) == 0)
    theirs = next(f"run-{i}" for i in range(100) if share_of(f"run-{i}", 2) == 1)
    check_owned([ops.Queued(5, mine, "a", 1, T0)], 0, 2)
    check_owned([ops.Event(6, "ns", "key", "{}", None, True, T0)], 0, 2)  # not a run's
    with pytest.raises(ShareError, match=f"sequence 7 names run {theirs}.*--shares 1"):
        check_owned([ops.Queued(7, theirs, "a", 1, T0)], 0, 2)


async def test_a_share_that_fails_fails_the_rebuild_in_one_line(
    nc: NATS, tenant: str, dsn: str
) -> None:
    """Postgres refusing a share's writes (here: the schema was never made) is the rebuild's
    error, naming the share and what Postgres said, and no share process is left."""
    end = await a_busy_log(nc, tenant)
    async with await autocommit(dsn) as conn:
        with pytest.raises(ShareError) as failed:
            await projector.rebuild.rebuild(
                conn, nc, tenant, "never_made", until_seq=end, batch_size=7, shares=2
            )
    text = str(failed.value)
    assert text.count("\n") == 0 and "does not exist" in text, text
    assert text.startswith(("share 0 of the rebuild failed:", "share 1 of the rebuild failed:"))
    assert _shares_alive() == []


async def test_a_share_killed_midway_fails_the_rebuild(
    nc: NATS, tenant: str, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 of a share while the log is still being handed out: the rebuild fails with
    why (not a hang, not a broken pipe's traceback), and the other share is stopped."""
    end = await a_busy_log(nc, tenant)
    monkeypatch.setattr(shares_module, "FRAME", 1)  # many frames: the handing out goes on
    killed: list[int] = []

    def kill_one(n: int) -> None:
        alive = _shares_alive()
        if not killed and alive:
            os.kill(alive[0], signal.SIGKILL)
            killed.append(alive[0])

    async with await autocommit(dsn) as conn:
        await migrate(conn, "killed")
        with pytest.raises(ShareError, match=r"share \d of the rebuild failed: .*(-9|status)"):
            await projector.rebuild.rebuild(
                conn, nc, tenant, "killed", until_seq=end, batch_size=1, shares=2,
                on_batch=kill_one,
            )  # fmt: skip
        assert killed
        # Nothing claims the rebuild got to the end.
        assert await read_checkpoint(conn, tenant, "killed") == 0
    assert _shares_alive() == []


def _shares_alive() -> list[int]:
    """This process's children that are share processes (not reaped zombies)."""
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with open(task / "children") as f:
            pids.extend(int(p) for p in f.read().split())
    alive = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if b"projector.share_child" in cmd and state != "Z":
            alive.append(pid)
    return alive


async def test_a_read_that_fails_stops_the_shares(
    nc: NATS, tenant: str, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log failing to read midway is the rebuild's error, and no share is left
    waiting for more."""
    end = await a_busy_log(nc, tenant)
    monkeypatch.setattr(projector.rebuild.eventstore, "read_to_end", read_breaking_after(40))
    monkeypatch.setattr(shares_module, "FRAME", 1)
    async with await autocommit(dsn) as conn:
        await migrate(conn, "unread")
        with pytest.raises(eventstore.TransportError, match="went away"):
            await projector.rebuild.rebuild(
                conn, nc, tenant, "unread", until_seq=end, batch_size=3, shares=2
            )
        assert await read_checkpoint(conn, tenant, "unread") == 0
    assert _shares_alive() == []
