"""The README, as a user follows it: `natchet dev`, the worker examples (v0 and v1) as
written, an event, and the CLI reading the run back. Real processes, real servers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from natchet.config import read_env_file
from natchet.dev.demo import raw_publish
from tests.conftest import eventually
from tests.support import http_get, scrape, total

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
NATCHET = [sys.executable, "-m", "natchet.cli"]


def readme_worker_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    [code] = [b for b in blocks if "from worker import Hatchet, Context" in b]
    return code


def readme_v1_code() -> tuple[str, str]:
    """The README's v1 example: the worker (``orders.py``) and the code that runs it."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    [worker] = [b for b in blocks if "input_validator=" in b and "hatchet.worker(" in b]
    [run] = [b for b in blocks if "from orders import orders" in b]
    return worker, run


def natchet(*args: str, env: dict[str, str]) -> Any:
    out = subprocess.run(
        [*NATCHET, *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout) if "--json" in args else out.stdout


@pytest.fixture
def dev_stack(tmp_path: Path) -> Any:
    env_file = tmp_path / "worker.env"
    with (tmp_path / "natchet-dev.log").open("w") as log:
        proc = subprocess.Popen(
            [*NATCHET, "dev", "--data-dir", str(tmp_path / "data"), "--env-file", str(env_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    yield proc, env_file
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


async def test_readme_worker_runs_under_natchet_dev(dev_stack: Any, tmp_path: Path) -> None:
    proc, env_file = dev_stack

    async def env_written() -> dict[str, str] | None:
        assert proc.poll() is None, (tmp_path / "natchet-dev.log").read_text()
        return read_env_file(env_file) if env_file.exists() else None

    worker_env = await eventually(env_written, timeout_s=60)
    for key in (
        "HATCHET_CLIENT_HOST_PORT",
        "HATCHET_CLIENT_TENANT_ID",
        "NATCHET_NATS_URL",
        "NATCHET_DATABASE_URL",
    ):
        assert worker_env.get(key), key
    # The machine's own services hold 4222 and 5432; natchet dev picked free ports instead.
    assert not worker_env["HATCHET_CLIENT_HOST_PORT"].endswith(":4222")
    assert ":5432/" not in worker_env["NATCHET_DATABASE_URL"]

    script = tmp_path / "my_worker.py"
    script.write_text(readme_worker_code())
    env = {**os.environ, **worker_env, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)
    try:

        async def registered() -> bool:
            out = subprocess.run(
                [*NATCHET, "runs", "list", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            return out.returncode == 0

        await eventually(registered, timeout_s=30)

        # The README's `nats pub` line, sent as written over the bare NATS protocol.
        [(subject, body)] = re.findall(r"nats pub (\S+) '(.*?)'", README)
        tenant = worker_env["HATCHET_CLIENT_TENANT_ID"]
        assert subject == f"{tenant}.default.events.user:create"
        host, port = worker_env["HATCHET_CLIENT_HOST_PORT"].rsplit(":", 1)

        async def run_succeeded() -> list[dict[str, Any]]:
            # Publish until the worker has registered (an event before that starts no run).
            runs = natchet("runs", "list", "--json", env=env)["runs"]
            if not runs:
                token = worker_env.get("HATCHET_CLIENT_TOKEN")
                raw_publish(host, int(port), subject, [body.encode()], token=token)
            return [r for r in runs if r["status"] == "SUCCEEDED"]

        [run, *_] = await eventually(run_succeeded, timeout_s=60, interval_s=0.5)
        detail = natchet("runs", "get", run["id"], "--json", env=env)
        assert detail["workflow"] == "MyWorkflow"
        assert detail["triggered_by"]["event_key"] == "user:create"
        steps = {s["name"]: s for s in detail["steps"]}
        assert steps["step1"]["output"] == {"result": "success"}
        assert steps["step2"]["output"] == {"seen": "success", "input": {"id": 1}}
        assert steps["step2"]["attempts"][0]["worker_name"] == "test-worker"

        pushed = natchet("event", "push", "user:create", '{"id": 2}', env=env)
        assert f"{tenant}.default.events.user:create" in pushed

        async def two_runs() -> bool:
            runs = natchet("runs", "list", "--json", env=env)["runs"]
            return sum(r["status"] == "SUCCEEDED" for r in runs) >= 2

        await eventually(two_runs, timeout_s=30, interval_s=0.5)

        # natchet dev serves the engine's metrics on a free port, and says where.
        [url] = re.findall(
            r"Metrics: (http://127\.0\.0\.1:\d+)/metrics",
            (tmp_path / "natchet-dev.log").read_text(),
        )

        async def counted() -> bool:
            samples = await scrape(url)
            return total(samples, "hatchet_succeeded_tasks_total", tenant=tenant) >= 4

        await eventually(counted, timeout_s=30, interval_s=0.5)
        assert (await http_get(f"{url}/ready"))[0] == 200
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


async def test_readme_v1_worker_and_run_under_natchet_dev(dev_stack: Any, tmp_path: Path) -> None:
    """The v1 example as written: ``orders.py`` serves, ``orders.run(...)`` in another
    process prints the run's outputs, and an event's payload that does not fit the model
    fails the run at once, naming the field."""
    proc, env_file = dev_stack

    async def env_written() -> dict[str, str] | None:
        assert proc.poll() is None, (tmp_path / "natchet-dev.log").read_text()
        return read_env_file(env_file) if env_file.exists() else None

    worker_env = await eventually(env_written, timeout_s=60)
    worker_code, run_code = readme_v1_code()
    (tmp_path / "orders.py").write_text(worker_code)
    (tmp_path / "run_orders.py").write_text(run_code)
    env = {**os.environ, **worker_env, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "orders.py"], env=env, cwd=tmp_path)
    try:

        async def serving() -> bool:
            out = subprocess.run(
                [*NATCHET, "workers", "list", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if out.returncode != 0:
                return False
            rows = json.loads(out.stdout)
            return any(
                r["name"] == "order-worker" and r["status"] == "ACTIVE" and r["slots"] == 4
                for r in rows
            )

        await eventually(serving, timeout_s=60, interval_s=0.5)
        ran = subprocess.run(
            [sys.executable, "run_orders.py"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == (
            "{'price': {'total': 10.0}, 'confirm': {'message': '4 x tea = 10.0'}}"
        )

        natchet("event", "push", "order:placed", '{"sku": "tea", "qty": "lots"}', env=env)

        async def failed() -> list[dict[str, Any]]:
            runs = natchet("runs", "list", "--json", env=env)["runs"]
            return [r for r in runs if r["status"] == "FAILED"]

        [run] = await eventually(failed, timeout_s=30, interval_s=0.5)
        detail = natchet("runs", "get", run["id"], "--json", env=env)
        steps = {s["name"]: s for s in detail["steps"]}
        [attempt] = steps["price"]["attempts"]
        assert "input does not match Order: qty: " in attempt["error"]
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


def test_event_push_rejects_a_body_that_is_not_json(tmp_path: Path) -> None:
    out = subprocess.run(
        [*NATCHET, "event", "push", "user:create", "{not json", "--nats-url", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "must be JSON" in out.stderr


def test_runs_list_without_a_database_says_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATCHET_")}
    out = subprocess.run(
        [*NATCHET, "runs", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 2
    assert "NATCHET_DATABASE_URL is not set" in out.stderr
    assert "natchet dev" in out.stderr
