"""Structured logs: JSON lines that say which tenant, namespace, run, step, attempt and
worker they concern, ``context.log`` lines among them, and a step's own ``logging``
captured into the step's log when the user opts in (``ClientConfig(logger=...)``)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest

from eventstore import logs
from eventstore.errors import ConfigError
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from tests.conftest import running
from tests.support import hatchet_for, run_ends
from worker import ClientConfig, Context, Hatchet

USER = "natchet-test-user-code"  # the user's logger (not one of natchet's own)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the root logger writes meanwhile, as JSON lines (restored after)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def workflow(hatchet: Hatchet) -> Any:
    @hatchet.workflow()
    class Logged:
        @hatchet.step()
        async def first(self, context: Context) -> dict[str, Any]:
            context.log("first says hello")
            logging.getLogger(f"{USER}.steps").warning("first warns through logging")
            return {}

        @hatchet.step(parents=["first"])
        def second(self, context: Context) -> dict[str, Any]:  # a sync step: its own thread
            context.log("second says hello")
            logging.getLogger(USER).info("second informs through logging")
            return {}

    return Logged()


async def test_json_lines_carry_the_run_step_attempt_and_worker(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
    json_lines: io.StringIO,
) -> None:
    user = logging.getLogger(USER)
    hatchet = hatchet_for(nats_server, tenant_name)
    hatchet = Hatchet(settings=hatchet.settings, config=ClientConfig(logger=user))
    worker = hatchet.worker("json-worker", max_runs=2)
    worker.register_workflow(workflow(hatchet))
    try:
        async with running(worker):
            ref = await hatchet.admin.aio_run_workflow("Logged", {})
            run = await run_ends(db, ref.workflow_run_id)
        user.warning("outside any step")
    finally:
        hatchet.close()
        for handler in user.handlers[:]:
            user.removeHandler(handler)

    assert run["status"] == "SUCCEEDED", run
    lines = parsed(json_lines)
    said = {line["message"]: line for line in lines}
    for message, step in [
        ("first says hello", "first"),
        ("second says hello", "second"),
        ("first warns through logging", "first"),
        ("second informs through logging", "second"),
    ]:
        line = said[message]
        assert line["run_id"] == ref.workflow_run_id and line["step"] == step, line
        assert line["attempt"] == 1 and line["worker"] == "json-worker", line
        assert line["tenant"] == tenant_name and line["namespace"] == "default", line
        assert line["worker_id"] == worker.id, line
    assert said["first warns through logging"]["level"] == "WARNING"
    assert "run_id" not in said["outside any step"]
    # The captured lines are in the step's log, with the context.log lines, in order.
    steps = {s["name"]: [entry["line"] for entry in s["logs"]] for s in run["steps"]}
    assert steps["first"] == [
        "first says hello",
        f"WARNING {USER}.steps: first warns through logging",
    ]
    assert steps["second"] == ["second says hello", f"INFO {USER}: second informs through logging"]


def test_an_error_is_logged_with_its_traceback_and_bound_fields() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
    try:
        raise ValueError("bad value")
    except ValueError:
        record.exc_info = sys.exc_info()
    with logs.bound(tenant="t1", run_id="r1"), logs.bound(step="s", run_id=None):
        logs.ContextFilter().filter(record)
    line = orjson.loads(logs.JsonFormatter().format(record))
    assert (line["message"], line["tenant"], line["run_id"], line["step"]) == (
        "failed here",
        "t1",
        "r1",
        "s",
    )
    assert line["error"] == "ValueError: bad value"
    assert "raise ValueError" in line["traceback"]
    assert logs.current() == {}


def test_an_unknown_tracing_mode_is_refused_in_one_line() -> None:
    env = {**os.environ, "NATCHET_TRACING": "loud"}
    cli = [sys.executable, "-m", "natchet.cli", "engine", "--nats-url", "nats://127.0.0.1:1"]
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "natchet: NATCHET_TRACING='loud': use off, on or otlp"
    ]


def test_an_unknown_log_format_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="NATCHET_LOG_FORMAT='xml' is not a log format"):
        logs.log_format(None, {"NATCHET_LOG_FORMAT": "xml"})
    assert logs.log_format("json", {"NATCHET_LOG_FORMAT": "text"}) == "json"
    env = {**os.environ, "NATCHET_LOG_FORMAT": "xml"}
    cli = [sys.executable, "-m", "natchet.cli", "runs", "list"]
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "natchet: NATCHET_LOG_FORMAT='xml' is not a log format: use text or json"
    ]


async def test_the_engine_logs_json_lines_with_its_tenant(
    nats_server: NatsServer, dsn: str, tenant_name: str
) -> None:
    """``natchet --log-format json engine``: every line it (and its projector process)
    writes parses, and the dispatcher's and projector's lines name the tenant."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "natchet.cli", "--log-format", "json", "engine"],
        *["--nats-url", nats_server.url, "--database-url", dsn, "--tenants", tenant_name],
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NATCHET_NATS_AUTH_FILE": ""},
    )
    assert proc.stderr is not None
    seen: list[dict[str, Any]] = []
    loggers: set[str] = set()
    try:
        async with asyncio.timeout(60):
            while not {"dispatcher.service", "projector.runner"} <= loggers:
                raw = await proc.stderr.readline()
                assert raw, f"the engine ended: {seen}"
                seen.append(orjson.loads(raw))
                if seen[-1].get("tenant") == tenant_name:
                    loggers.add(seen[-1]["logger"])
    finally:
        proc.terminate()
        await proc.wait()
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in seen)
