"""Issue 10: ``natchet audit`` reads a run's history from the JetStream log, not Postgres.
Real NATS, a real engine and worker, the CLI as a real process with no database to reach."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

import eventstore
from dispatcher.decide import event_run_id
from eventstore.provision import log_stream_config
from natchet.dev.embedded import NatsServer, free_port
from natchet.engine import Engine
from schemas import Scope, stream_name
from tests.conftest import eventually, running
from tests.support import hatchet_for
from worker import Context, Hatchet

ROOT = Path(__file__).resolve().parents[2]
NATCHET = [sys.executable, "-m", "natchet.cli"]
NOT_RECORDED = "not recorded by NATS"


def cli_env(tmp_path: Path) -> dict[str, str]:
    """No natchet settings but a database nobody listens on: audit must not need one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    env["NATCHET_DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{free_port()}/gone"
    env["PYTHONPATH"] = str(ROOT)
    return env


async def natchet(
    tmp_path: Path, server: NatsServer, tenant: str, *args: str
) -> tuple[int, str, str]:
    """Run the CLI without blocking the loop the worker runs on."""
    proc = await asyncio.create_subprocess_exec(
        *NATCHET,
        *args,
        "--nats-url",
        server.url,
        "--tenant",
        tenant,
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def audited(hatchet: Hatchet) -> Any:
    """A diamond whose ``b`` fails its first attempt and is slow on its second (so that
    attempt has an ``assigned``; the fast ones are known from their results)."""
    calls = {"b": 0}

    @hatchet.workflow(on_events=["audit:go"])
    class Audited:
        @hatchet.step()
        def a(self, context: Context) -> dict[str, Any]:
            return {"a": 1}

        @hatchet.step(parents=["a"], retries=1, backoff_factor=0.2)
        async def b(self, context: Context) -> dict[str, Any]:
            calls["b"] += 1
            if calls["b"] == 1:
                raise ValueError("flake in b")
            await asyncio.sleep(0.3)
            return {"b": 2}

        @hatchet.step(parents=["a"])
        def c(self, context: Context) -> dict[str, Any]:
            context.log("c was here")
            return {"c": 3}

        @hatchet.step(parents=["b", "c"])
        def d(self, context: Context) -> dict[str, Any]:
            return {"d": 4}

    return Audited()


async def finished(nc: NATS, tenant: str, run_id: str) -> None:
    async def ended() -> bool:
        subject = Scope(tenant).run(run_id, "finished")
        return await eventstore.direct_last(nc, tenant, subject) is not None

    await eventually(ended, timeout_s=30)


async def an_audited_run(server: NatsServer, nc: NATS, tenant: str) -> tuple[str, str]:
    """Run ``Audited`` once, from an event, to its end: (run id, event id)."""
    hatchet = hatchet_for(server, tenant)
    worker = hatchet.worker("auditor", max_runs=4)
    worker.register_workflow(audited(hatchet))
    async with running(worker):
        pushed = await hatchet.event.aio_push("audit:go", {"n": 1})
        run_id = event_run_id(Scope(tenant), int(pushed.event_id), "Audited")
        await finished(nc, tenant, run_id)
    hatchet.close()
    return run_id, pushed.event_id


async def check_event_audit(
    tmp_path: Path, server: NatsServer, tenant: str, event_id: str, run_id: str, created: int
) -> None:
    """``audit --event``: the event, its publisher not recorded, and the run it started."""
    code, out, err = await natchet(tmp_path, server, tenant, "audit", "--event", event_id, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["event"]["key"] == "audit:go" and shown["event"]["payload"] == {"n": 1}
    assert NOT_RECORDED in shown["event"]["publisher"]
    assert shown["runs"] == [
        {"id": run_id, "workflow": "Audited", "status": "SUCCEEDED", "created_seq": created}
    ]
    code, out, err = await natchet(tmp_path, server, tenant, "audit", "--event", event_id)
    assert code == 0 and run_id in out and "started 1 run" in out, (out, err)


def check_the_failure(by_kind: dict[str, list[dict[str, Any]]]) -> None:
    """b's first attempt failed: its error, where it raised, and the retry it caused."""
    failed = [e for e in by_kind["result"] if e["error"]]
    assert [(e["step"], e["attempt"], e["delivery"]) for e in failed] == [("b", 1, 1)]
    assert failed[0]["error"] == "ValueError: flake in b"
    # Where it raised: the step's own line, from the traceback its result carries.
    assert 'raise ValueError("flake in b")' in failed[0]["traceback"]
    assert failed[0]["traceback"].rstrip().endswith("ValueError: flake in b")
    [retry] = by_kind["retry_scheduled"]
    assert (retry["step"], retry["attempt"], retry["error"]) == ("b", 1, "ValueError: flake in b")


async def test_audit_of_a_run_with_a_retry_from_the_log_without_postgres(
    nats_server: NatsServer, engine: Engine, nc: NATS, tenant_name: str, tmp_path: Path
) -> None:
    run_id, event_id = await an_audited_run(nats_server, nc, tenant_name)

    code, out, err = await natchet(tmp_path, nats_server, tenant_name, "audit", run_id, "--json")
    assert code == 0, err
    report = json.loads(out)
    run, entries, attempts = report["run"], report["entries"], report["attempts"]
    assert (run["id"], run["workflow"], run["status"]) == (run_id, "Audited", "SUCCEEDED")
    assert run["triggered_by"] == {"event_key": "audit:go", "event_id": event_id}

    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "event" and kinds[1] == "created" and kinds[-1] == "finished"
    assert kinds.count("task") == 5  # a, b twice, c, d
    assert kinds.count("result") == 5 and kinds.count("retry_scheduled") == 1
    assert kinds.count("log") == 1

    by_kind = {k: [e for e in entries if e["kind"] == k] for k in set(kinds)}
    event = by_kind["event"][0]
    assert event["seq"] == int(event_id)
    assert event["actor"] == {"role": "publisher", "identity": event["actor"]["identity"]}
    assert NOT_RECORDED in event["actor"]["identity"]
    for kind in ("created", "task", "retry_scheduled", "finished"):
        assert all(e["actor"] == {"role": "dispatcher"} for e in by_kind[kind]), kind
    worker_ids = set()
    for kind in ("result", "log", "assigned"):
        for e in by_kind.get(kind, []):
            assert e["actor"]["role"] == "worker" and e["actor"]["name"] == "auditor", e
            worker_ids.add(e["actor"]["id"])
    assert len(worker_ids) == 1 and None not in worker_ids

    check_the_failure(by_kind)
    assert by_kind["log"][0]["summary"] == "c was here" and by_kind["log"][0]["step"] == "c"
    assert by_kind["finished"][0]["verdicts"][-1]["step"] == "d"

    # Who ran each attempt: from its `assigned` (b's slow second attempt), else its result.
    rows = {(a["step"], a["attempt"]): a for a in attempts}
    assert set(rows) == {("a", 1), ("b", 1), ("b", 2), ("c", 1), ("d", 1)}
    assert all(a["worker_name"] == "auditor" and a["worker_id"] in worker_ids for a in attempts)
    assert rows[("b", 2)]["assignment_from"] == "assigned"
    assert rows[("a", 1)]["assignment_from"] == "result"
    assert (rows[("b", 1)]["status"], rows[("b", 1)]["error"]) == (
        "FAILED",
        "ValueError: flake in b",
    )

    code, out, err = await natchet(tmp_path, nats_server, tenant_name, "audit", run_id)
    assert code == 0, err
    assert f"run {run_id}  Audited  SUCCEEDED" in out
    assert "worker auditor (" in out and "error: ValueError: flake in b" in out
    assert 'raise ValueError("flake in b")' in out
    assert "not Postgres" in out and "publisher (not recorded)" in out

    await check_event_audit(tmp_path, nats_server, tenant_name, event_id, run_id, seqs[1])


async def test_audit_says_its_history_is_from_the_append_only_log(
    nats_server: NatsServer, engine: Engine, nc: NATS, tenant_name: str, tmp_path: Path
) -> None:
    """The last line (and ``log`` in ``--json``): the stream the history was read from and
    what its stored configuration promises, read from the server, not assumed."""
    run_id, event_id = await an_audited_run(nats_server, nc, tenant_name)
    stream = stream_name(tenant_name)
    append_only = {
        "stream": stream,
        "append_only": True,
        "deny_delete": True,
        "deny_purge": True,
        "weaknesses": [],
    }

    code, out, err = await natchet(tmp_path, nats_server, tenant_name, "audit", run_id)
    assert code == 0, err
    last = out.rstrip().splitlines()[-1]
    assert last.startswith(f"history from the append-only log, stream {stream}: "), out
    assert "denies delete and purge (deny_delete, deny_purge)" in last
    code, out, err = await natchet(tmp_path, nats_server, tenant_name, "audit", run_id, "--json")
    assert code == 0 and json.loads(out)["log"] == append_only, (out, err)
    code, out, err = await natchet(
        tmp_path, nats_server, tenant_name, "audit", "--event", event_id, "--json"
    )
    assert code == 0 and json.loads(out)["log"] == append_only, (out, err)

    # A log someone made by hand, which allows deletes and purges: the audit says so.
    weak_tenant = f"w{tenant_name}"
    weak = log_stream_config(weak_tenant)
    weak.deny_delete = weak.deny_purge = False
    await nc.jetstream().add_stream(weak)
    try:
        seq = await eventstore.append(nc, eventstore.Append(Scope(weak_tenant).event("x"), b"{}"))
        code, out, err = await natchet(
            tmp_path, nats_server, weak_tenant, "audit", "--event", str(seq), "--json"
        )
        assert code == 0, err
        assert json.loads(out)["log"] == {
            "stream": stream_name(weak_tenant),
            "append_only": False,
            "deny_delete": False,
            "deny_purge": False,
            "weaknesses": ["deny_delete is off", "deny_purge is off"],
        }
        code, out, err = await natchet(
            tmp_path, nats_server, weak_tenant, "audit", "--event", str(seq)
        )
        assert code == 0, err
        assert out.rstrip().splitlines()[-1] == (
            f"history from stream {stream_name(weak_tenant)}, which is NOT append-only as stored:"
            " deny_delete is off; deny_purge is off"
        )
    finally:
        await nc.jetstream().delete_stream(stream_name(weak_tenant))


async def test_audit_of_what_is_not_there_is_one_line(
    nats_server: NatsServer, engine: Engine, tenant_name: str, tmp_path: Path
) -> None:
    for args, says, exit_code in (
        (["audit", "no-such-run"], "no run no-such-run", 1),
        (["audit", "a.b"], "invalid run id", 2),
        (["audit", "--event", "999999"], "no event 999999", 1),
        (["audit"], "give a run id, or --event", 2),
    ):
        code, out, err = await natchet(tmp_path, nats_server, tenant_name, *args)
        lines = err.strip().splitlines()
        assert (code, len(lines), out) == (exit_code, 1, ""), (args, code, err)
        assert lines[0].startswith("natchet: ") and says in lines[0], (args, lines)


async def interrupted_quietly(tmp_path: Path, server: NatsServer, tenant: str, run_id: str) -> None:
    """Ctrl-C stops ``--follow`` of a run still going, without a traceback."""
    proc = await asyncio.create_subprocess_exec(
        *NATCHET,
        *("audit", run_id, "--follow", "--nats-url", server.url, "--tenant", tenant),
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 30)  # it is following
    proc.send_signal(signal.SIGINT)
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130 and err == b"", err.decode()


async def test_audit_follow_prints_until_the_run_ends(
    nats_server: NatsServer, engine: Engine, nc: NATS, tenant_name: str, tmp_path: Path
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    release = asyncio.Event()

    @hatchet.workflow(name="Slow")
    class Slow:
        @hatchet.step()
        async def wait(self, context: Context) -> dict[str, Any]:
            context.log("waiting")
            await release.wait()
            return {"done": True}

    worker = hatchet.worker("follower", max_runs=1)
    worker.register_workflow(Slow())
    out_file = tmp_path / "follow.jsonl"
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Slow", {})
        subject = Scope(tenant_name).run(ref.workflow_run_id, "assigned")

        async def assigned() -> bool:
            return await eventstore.direct_last(nc, tenant_name, subject) is not None

        await eventually(assigned)
        with out_file.open("w") as out:
            proc = await asyncio.create_subprocess_exec(
                *NATCHET,
                "audit",
                ref.workflow_run_id,
                "--follow",
                "--json",
                "--nats-url",
                nats_server.url,
                "--tenant",
                tenant_name,
                cwd=tmp_path,
                env=cli_env(tmp_path),
                stdout=out,
            )

            def printed() -> list[dict[str, Any]]:
                return [json.loads(line) for line in out_file.read_text().splitlines()]

            await eventually(lambda: any(e["kind"] == "assigned" for e in printed()))
            assert proc.returncode is None  # the run goes on, and so does the audit
            await interrupted_quietly(tmp_path, nats_server, tenant_name, ref.workflow_run_id)
            release.set()
            assert await asyncio.wait_for(proc.wait(), 30) == 0
    hatchet.close()
    kinds = [e["kind"] for e in printed()]
    assert kinds[:3] == ["requested", "created", "task"], kinds
    assert kinds[-2:] == ["result", "finished"], kinds
    assert printed()[0]["actor"] == {"role": "client"}
    assert printed()[-2]["actor"]["name"] == "follower"


async def test_runs_get_as_of_shows_the_run_as_it_stood_then(
    nats_server: NatsServer, engine: Engine, nc: NATS, tenant_name: str, tmp_path: Path
) -> None:
    """``runs get --as-of SEQ|TIME``: the run folded from the log through that point by the
    projector's own rules, with no database to reach."""
    run_id, _event = await an_audited_run(nats_server, nc, tenant_name)
    code, out, err = await natchet(tmp_path, nats_server, tenant_name, "audit", run_id, "--json")
    assert code == 0, err
    entries = json.loads(out)["entries"]
    failed = next(e for e in entries if e["kind"] == "result" and e["error"])
    end = entries[-1]

    async def as_of(point: str) -> tuple[int, dict[str, Any] | str]:
        code, out, err = await natchet(
            tmp_path, nats_server, tenant_name, "runs", "get", run_id, "--as-of", point, "--json"
        )
        return code, (json.loads(out) if code == 0 else err)

    code, then = await as_of(str(failed["seq"]))
    assert code == 0 and isinstance(then, dict)
    assert then["as_of"]["seq"] == failed["seq"]
    assert then["run"]["status"] == "RUNNING" and then["run"]["finished_at"] is None
    steps = {s["name"]: s for s in then["steps"]}
    assert steps["a"]["status"] == "SUCCEEDED" and steps["d"]["status"] == "PENDING"
    assert [(a["attempt"], a["status"]) for a in steps["b"]["attempts"]] == [(1, "FAILED")]

    code, now = await as_of(end["time"])  # by time: the run's end, stored then
    assert code == 0 and isinstance(now, dict)
    assert now["run"]["status"] == "SUCCEEDED" and now["as_of"]["seq"] >= end["seq"]
    assert [a["status"] for a in now["steps"][1]["attempts"]][-1] == "SUCCEEDED"

    code, message = await as_of(str(entries[0]["seq"]))  # the event: no run yet
    assert (
        code == 1
        and message.strip() == f"natchet: run {run_id} did not exist yet at {entries[0]['seq']}"
    )
    code, message = await as_of("yesterday")
    assert code != 0 and "neither a sequence number nor an ISO 8601 time" in message
    assert "Traceback" not in message and len(message.strip().splitlines()) == 1
