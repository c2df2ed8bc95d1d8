"""The commands around the dashboard, as a user runs them: ``natchet admin-token create``
against a secured deployment, ``natchet dev`` serving the dashboard with an operator
credential it prints, and ``natchet dashboard`` failing in one line."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path

import httpx
import pytest

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from natchet.tenancy.serverconf import AUTH_FILE
from tests.support import clean_env, start_natchet_dev, stop

NATCHET = [sys.executable, "-m", "natchet.cli"]


async def natchet(cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *NATCHET,
        *args,
        cwd=cwd,
        env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_admin_token_create_signs_in_as_operator(
    tmp_path: Path,
    auth_server: NatsServer,
    auth_dir: Path,
    tenancy_engine: Engine,
    dashboard_url: str,
) -> None:
    code, out, err = await natchet(
        tmp_path,
        "admin-token",
        "create",
        "--name",
        "ops",
        NATCHET_NATS_URL=auth_server.url,
        NATCHET_NATS_AUTH_FILE=str(auth_dir / AUTH_FILE),
    )
    assert code == 0, err
    [credential] = re.findall(r"nco_\S+", out)
    operator_id = credential.removeprefix("nco_").split(".")[0]
    nats = {
        "NATCHET_NATS_URL": auth_server.url,
        "NATCHET_NATS_AUTH_FILE": str(auth_dir / AUTH_FILE),
    }
    async with httpx.AsyncClient(base_url=dashboard_url) as c:
        r = await c.post("/api/session", json={"token": credential})
        assert r.status_code == 200 and r.json()["kind"] == "operator"
        code, out, err = await natchet(tmp_path, "admin-token", "list", "--json", **nats)
        assert code == 0 and operator_id in out and credential.split(".")[1] not in out
        code, out, err = await natchet(tmp_path, "admin-token", "revoke", operator_id, **nats)
        assert code == 0, err
        # Its session ends at once, and it signs in no more.
        assert (await c.get("/api/session")).status_code == 401
        r = await c.post("/api/session", json={"token": credential})
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
    code, _out, err = await natchet(tmp_path, "admin-token", "revoke", "abcdef123456", **nats)
    assert code == 2 and "no operator credential" in err and "Traceback" not in err


async def test_dashboard_failures_are_one_line(tmp_path: Path, auth_server: NatsServer) -> None:
    code, _out, err = await natchet(tmp_path, "dashboard")
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "NATCHET_NATS_URL" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _out, err = await natchet(
            tmp_path,
            "dashboard",
            "--port",
            str(port),
            "--nats-url",
            auth_server.url,
            "--database-url",
            "postgresql://nobody@127.0.0.1:1/none",
        )
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and f"127.0.0.1:{port}" in err
    code, _out, err = await natchet(tmp_path, "dashboard", "--port", "http")
    assert code == 2 and "not a port number" in err


@pytest.mark.timeout(180)
async def test_natchet_dev_serves_the_dashboard_with_an_operator_credential(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    proc, text = await start_natchet_dev(tmp_path, data)
    try:
        url = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+)", text)
        credential = re.search(r"(nco_\S+)", text)
        assert url and credential, text
        assert (data / "operator.credential").read_text().strip() == credential.group(1)
        assert (data / "operator.credential").stat().st_mode & 0o077 == 0
        async with httpx.AsyncClient(base_url=url.group(1)) as c:
            r = await c.post("/api/session", json={"token": credential.group(1)})
            assert r.status_code == 200 and "dev" in r.json()["tenants"]
            spec = await c.get("/api/openapi.json")
            assert spec.status_code == 200 and "/api/tenants/{tenant}/runs" in spec.json()["paths"]
    finally:
        await stop(proc, grace_s=60)
    assert proc.returncode == 0


@pytest.mark.timeout(120)
async def test_natchet_engine_serves_the_dashboard_behind_a_flag(
    tmp_path: Path, nats_server: NatsServer, dsn: str, tenant_name: str
) -> None:
    """``natchet engine --dashboard-port 0``: the engine's own process serves it (and says
    where); a credential it does not know is refused with a message, not an error page."""
    proc = await asyncio.create_subprocess_exec(
        *NATCHET,
        *["engine", "--dashboard-port", "0"],
        *["--nats-url", nats_server.url, "--database-url", dsn, "--tenants", tenant_name],
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        assert proc.stdout is not None
        line = b""
        while b"dashboard on" not in line:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "natchet engine stopped before serving the dashboard"
        url = re.search(rb"dashboard on (http://127\.0\.0\.1:\d+)", line)
        assert url, line
        async with httpx.AsyncClient(base_url=url.group(1).decode()) as c:
            assert (await c.get("/signin")).status_code == 200
            spec = await c.get("/api/openapi.json")
            assert spec.status_code == 200 and "/api/session" in spec.json()["paths"]
            r = await c.post("/api/session", json={"token": "nct_not_a_token"})
            assert 400 <= r.status_code < 500 and r.json()["detail"], r.text
    finally:
        await stop(proc)
