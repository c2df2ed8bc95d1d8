"""The dashboard's JSON API on the secured stack: sign-in, tenant scoping (another tenant's
things are 404, creating tenants is the operator's), CSRF, bad input (4xx with a message,
never 500), tokens shown once and revoked, and cancel and re-run reaching the log."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg

from eventstore import direct_last
from natchet.engine import Engine
from schemas import Scope
from schemas.codec import decode_run_message
from tests.conftest import eventually
from tests.dashboard.conftest import Client
from tests.support import run_ends
from tests.tenancy.conftest import Attacker, Victim, log_nc


async def test_sign_in_and_out(dashboard_url: str, operator: str) -> None:
    async with httpx.AsyncClient(base_url=dashboard_url) as c:
        assert (await c.get("/api/session")).status_code == 401
        bad = await c.post("/api/session", json={"token": "nct_nonsense.secret"})
        assert bad.status_code == 401 and "sign-in refused" in bad.json()["detail"]
        unknown = await c.post("/api/session", json={"token": "nco_abcdef123456.wrong"})
        assert unknown.status_code == 401
        r = await c.post("/api/session", json={"token": operator})
        assert r.status_code == 200
        body = r.json()
        assert body["kind"] == "operator" and body["may_create_tenants"] is True
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        assert operator not in r.text  # the credential is never echoed
        assert (await c.get("/api/session")).status_code == 200
        # Signing out changes state: without the CSRF token it is refused.
        assert (await c.delete("/api/session")).status_code == 403
        out = await c.delete("/api/session", headers={"X-CSRF-Token": body["csrf_token"]})
        assert out.status_code == 204
        assert (await c.get("/api/session")).status_code == 401


async def test_a_tenant_sees_only_its_own(
    client: Client, victim: Victim, attacker: Attacker
) -> None:
    a = await client(attacker.token)
    b = await client(victim.token)
    me = (await a.get("/api/session")).json()
    assert me["kind"] == "tenant" and me["tenants"] == [attacker.tenant]
    assert me["may_create_tenants"] is False

    assert (
        await b.get(f"/api/tenants/{victim.tenant}/runs/{victim.finished_run}")
    ).status_code == 200
    base = f"/api/tenants/{victim.tenant}"
    run = f"{base}/runs/{victim.finished_run}"
    for path in (
        f"{base}/runs",
        run,
        f"{run}/audit",
        f"{base}/workers",
        f"{base}/events",
        f"{base}/tokens",
        f"{base}/workflows",
        f"{base}/live",
    ):
        r = await a.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert "b's data" not in r.text
    for path, body in (
        (f"{run}/cancel", {}),
        (f"{run}/replay", {}),
        (f"{base}/tokens", {"name": "stolen"}),
        (f"{base}/tokens/abcdef123456/revoke", {}),
    ):
        r = await a.post(path, json=body)
        assert r.status_code == 404, (path, r.status_code, r.text)
    # The same run id under the attacker's own tenant: not there either.
    own = await a.get(f"/api/tenants/{attacker.tenant}/runs/{victim.finished_run}")
    assert own.status_code == 404
    wfs = (await b.get(f"{base}/workflows")).json()["workflows"]
    [echo] = [w for w in wfs if w["name"] == "Echo"]
    assert echo["on_events"] == ["echo"] and [s["name"] for s in echo["steps"]] == ["say"]
    assert echo["versions"][0]["version"] == echo["version"]
    listed = (await a.get(f"/api/tenants/{attacker.tenant}/runs")).json()
    assert all(r["tenant"] == attacker.tenant for r in listed["runs"])
    created = await a.post("/api/tenants", json={"name": f"x{uuid.uuid4().hex[:8]}"})
    assert created.status_code == 403


async def test_state_changes_need_the_csrf_token(
    client: Client, victim: Victim, operator: str
) -> None:
    b = await client(victim.token)
    token = b.headers.pop("X-CSRF-Token")
    run = f"/api/tenants/{victim.tenant}/runs/{victim.pending_run}"
    assert (await b.post(f"{run}/cancel", json={})).status_code == 403
    wrong = await b.post(f"{run}/cancel", json={}, headers={"X-CSRF-Token": token + "x"})
    assert wrong.status_code == 403
    assert (await b.post(f"/api/tenants/{victim.tenant}/tokens", json={})).status_code == 403
    op = await client(operator)
    op.headers.pop("X-CSRF-Token")
    assert (await op.post("/api/tenants", json={"name": "nocsrf"})).status_code == 403
    # The pages' forms too: a form without its csrf_token field is refused.
    form = await b.post(f"/t/{victim.tenant}/runs/{victim.pending_run}/cancel", data={})
    assert form.status_code == 403


async def test_bad_input_is_a_4xx_with_a_message(
    client: Client, victim: Victim, operator: str
) -> None:
    b = await client(victim.token)
    op = await client(operator)
    base = f"/api/tenants/{victim.tenant}"
    cases: list[tuple[httpx.AsyncClient, str, str, Any]] = [
        (b, "GET", f"{base}/runs?limit=0", None),
        (b, "GET", f"{base}/runs?limit=abc", None),
        (b, "GET", f"{base}/runs?status=NOPE", None),
        (b, "GET", f"{base}/runs?after=garbage", None),
        (b, "GET", f"{base}/runs?workflow=a.b", None),
        (b, "GET", f"{base}/runs?run_id=a.b", None),
        (b, "GET", f"{base}/runs?since=yesterday", None),
        (b, "GET", f"{base}/runs?until=2026-13-01", None),
        (b, "GET", f"{base}/runs?event_key=a..b", None),
        (b, "GET", f"{base}/runs/a*b", None),
        (b, "GET", f"{base}/events?after=%%%", None),
        (b, "POST", f"{base}/tokens", {"name": "x", "expires": "soon"}),
        (b, "POST", f"{base}/tokens", {"name": "x", "namespace": "a b"}),
        (b, "POST", f"{base}/tokens", "not json"),
        (b, "POST", f"{base}/runs/{victim.pending_run}/replay", {}),  # not ended: 409
        (b, "POST", f"{base}/runs/{victim.finished_run}/cancel", {}),  # ended: 409
        (b, "POST", f"{base}/runs/{victim.finished_run}/replay", {"from_step": "nope"}),
        (op, "POST", "/api/tenants", {"name": "bad name!"}),
        (op, "POST", "/api/tenants", {"name": "system"}),
        (op, "POST", "/api/tenants", {}),
        (op, "POST", "/api/tenants", {"name": victim.tenant}),  # exists: 409
        (op, "GET", "/api/tenants/nosuchtenant/runs", None),
    ]
    for c, method, path, body in cases:
        if isinstance(body, str):
            r = await c.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
        else:
            r = await c.request(method, path, json=body)
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and detail, (path, r.text)


async def test_tenant_and_token_shown_once_then_revoked(
    client: Client, operator: str, tenancy_engine: Engine
) -> None:
    op = await client(operator)
    name = f"d{uuid.uuid4().hex[:10]}"
    r = await op.post("/api/tenants", json={"name": name})
    assert r.status_code == 201, r.text
    assert name in (await op.get("/api/tenants")).json()["tenants"]
    # A tenant just created: its pages answer at once, empty.
    for path in ("runs", "events", "workers", "tokens"):
        r = await op.get(f"/api/tenants/{name}/{path}")
        assert r.status_code == 200, (path, r.text)
    issued = await op.post(
        f"/api/tenants/{name}/tokens", json={"name": "ci", "expires": "7d", "namespace": "staging"}
    )
    assert issued.status_code == 201, issued.text
    token = issued.json()
    assert token["token"].startswith("nct_") and token["expires_at"]
    assert token["env"] == (
        f"HATCHET_CLIENT_TOKEN={token['token']}\nHATCHET_CLIENT_NAMESPACE=staging\n"
    )
    listed = await op.get(f"/api/tenants/{name}/tokens")
    assert token["id"] in {t["id"] for t in listed.json()["tokens"]}
    secret = token["token"].rsplit(".", 1)[1]
    assert secret not in listed.text  # never shown again
    page = await op.get(f"/t/{name}/settings")
    assert page.status_code == 200 and secret not in page.text

    # The new token signs in, and sees its tenant only.
    t = await client(token["token"])
    assert (await t.get("/api/session")).json()["tenants"] == [name]
    revoked = await op.post(f"/api/tenants/{name}/tokens/{token['id']}/revoke")
    assert revoked.status_code == 200
    listed = (await op.get(f"/api/tenants/{name}/tokens")).json()["tokens"]
    assert next(x for x in listed if x["id"] == token["id"])["revoked_at"]
    # Its session ends at once, and it cannot sign in again.
    assert (await t.get(f"/api/tenants/{name}/runs")).status_code == 401
    async with httpx.AsyncClient(base_url=str(op.base_url)) as again:
        r = await again.post("/api/session", json={"token": token["token"]})
        assert r.status_code == 401 and "revoked" in r.json()["detail"]


async def test_cancel_and_replay_reach_the_log(
    client: Client,
    victim: Victim,
    tenancy_engine: Engine,
    tdb: psycopg.AsyncConnection[Any],
) -> None:
    b = await client(victim.token)
    base = f"/api/tenants/{victim.tenant}/runs"
    nc = log_nc(tenancy_engine, victim.tenant)
    scope = Scope(victim.tenant, "default")

    r = await b.post(f"{base}/{victim.pending_run}/cancel", json={"reason": "from a test"})
    assert r.status_code == 202, r.text
    record = await direct_last(nc, victim.tenant, scope.run(victim.pending_run, "cancel_requested"))
    assert record is not None
    assert decode_run_message("cancel_requested", record.data).reason == "from a test"  # type: ignore[union-attr]
    ended = await run_ends(tdb, victim.pending_run)
    assert ended["status"] == "CANCELLED"

    r = await b.post(f"{base}/{victim.finished_run}/replay", json={"from_step": "say"})
    assert r.status_code == 202, r.text
    new_id = r.json()["run_id"]
    assert r.json()["answer"] == "created"  # the engine's answer, as `runs replay` waits for
    requested = await direct_last(nc, victim.tenant, scope.run(new_id, "requested"))
    assert requested is not None

    async def shown() -> bool:
        r = await b.get(f"{base}/{new_id}")
        return r.status_code == 200 and r.json()["replay_of"]["run_id"] == victim.finished_run

    # No worker is left to run it: the engine created it, and it waits in the queue.
    await eventually(shown)


async def test_runs_page_by_keyset_and_an_operator_sees_every_tenant(
    client: Client, victim: Victim, attacker: Attacker, operator: str
) -> None:
    b = await client(victim.token)
    base = f"/api/tenants/{victim.tenant}/runs"
    first = (await b.get(f"{base}?limit=1")).json()
    assert first["total"] == 2 and len(first["runs"]) == 1 and first["next"]
    second = (await b.get(f"{base}?limit=1&after={first['next']}")).json()
    assert len(second["runs"]) == 1 and second["next"] is None
    ids = {first["runs"][0]["id"], second["runs"][0]["id"]}
    assert ids == {victim.finished_run, victim.pending_run}
    done = (await b.get(f"{base}?status=succeeded")).json()["runs"]
    assert [r["id"] for r in done] == [victim.finished_run]
    assert (await b.get(f"{base}?namespace=elsewhere")).json()["runs"] == []
    exact = (await b.get(f"{base}?run_id={victim.pending_run}")).json()["runs"]
    assert [r["id"] for r in exact] == [victim.pending_run]
    # The run id matches by its start; the creation time by a range (UTC without a zone).
    prefix = victim.pending_run[:8]
    started = (await b.get(f"{base}?run_id={prefix}")).json()["runs"]
    assert victim.pending_run in [r["id"] for r in started]
    assert all(r["id"].startswith(prefix) for r in started)
    created = first["runs"][0]["created_at"]
    at = (await b.get(base, params={"since": created, "until": created})).json()["runs"]
    assert at == []  # until is exclusive
    upto = (await b.get(base, params={"until": "2000-01-01T00:00:00"})).json()
    assert upto["runs"] == [] and upto["exact"] is True
    since = (await b.get(base, params={"since": "2000-01-01T00:00:00"})).json()["runs"]
    assert len(since) == 2
    assert (await b.get(f"{base}?event_key=never:sent")).json()["runs"] == []

    op = await client(operator)
    tenants = (await op.get("/api/tenants")).json()["tenants"]
    assert {victim.tenant, attacker.tenant} <= set(tenants)
    r = await op.get(f"/api/tenants/{victim.tenant}/runs/{victim.finished_run}")
    assert r.status_code == 200
