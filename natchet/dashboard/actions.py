"""What the dashboard does, once for the JSON API and the pages: reads of the read model and
the log, and the operations, through the same code as the CLI (``natchet.runops``,
``natchet.tenancy.admin``). Every function takes the tenant already checked visible
(:func:`natchet.dashboard.auth.require_tenant`); a run of another tenant is never read.
Bad input is an :class:`HTTPException` 4xx with a message."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from fastapi import HTTPException

from eventstore import ConfigError, append
from eventstore import replay as read_log
from natchet.audit import RUN_ID_RE, RunNotFoundError, entries, read_run
from natchet.cli.workers import worker_rows
from natchet.dashboard.backend import Backend
from natchet.runops import cancel_request, replay_answer, replay_request
from natchet.tenancy import admin
from projector.queries import CursorError, Page, events_page, get_run, runs_page
from projector.runner import read_checkpoint
from schemas import RunRejected, RunStatus, Scope, WorkflowDef, subjects
from schemas.codec import DecodeError, decode_as
from schemas.errors import NatchetError
from schemas.subjects import SubjectError, check_tenant

log = logging.getLogger(__name__)

MAX_LIMIT = 200
REPLAY_ANSWER_S = 5.0
STATUSES = [s.value for s in RunStatus]


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise HTTPException(400, f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit


def check_status(status: str | None) -> str | None:
    if status and status.upper() not in STATUSES:
        raise HTTPException(400, f"unknown status {status!r}: one of {', '.join(STATUSES)}")
    return status.upper() if status else None


def check_name(value: str | None, what: str) -> str | None:
    """A workflow or namespace filter: one subject token (else 400)."""
    if not value:
        return None
    try:
        check_tenant(value)  # the same rule: one token, no separators or wildcards
    except SubjectError:
        raise HTTPException(400, f"invalid {what} {value!r}") from None
    return value


def check_run(run_id: str) -> str:
    if not RUN_ID_RE.match(run_id):
        raise HTTPException(400, f"invalid run id {run_id!r}")
    return run_id


COUNT_LIMIT = 10_000  # a page counts its matches up to this ("10,000+"), never more


def check_time(value: str | None, what: str) -> dt.datetime | None:
    """An ISO 8601 time (a form's ``datetime-local`` too); without a zone it is UTC."""
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise HTTPException(400, f"invalid {what} {value!r}: use ISO 8601") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def check_event_key(key: str | None) -> str | None:
    if not key:
        return None
    try:
        return subjects.check_event_key(key.strip())
    except SubjectError:
        raise HTTPException(400, f"invalid event key {key!r}") from None


def check_run_prefix(prefix: str | None) -> str | None:
    """The start of a run id: what a run id may hold (letters, digits, '-', '_')."""
    prefix = (prefix or "").strip()
    if not prefix:
        return None
    if not RUN_ID_RE.match(prefix):
        raise HTTPException(400, f"invalid run id {prefix!r}")
    return prefix


async def list_runs(
    backend: Backend,
    tenant: str,
    *,
    status: str | None,
    workflow: str | None,
    namespace: str | None,
    run_id: str | None,
    after: str | None,
    limit: int,
    event_key: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Page:
    """A page of the tenant's runs, newest first: ``run_id`` matches by prefix, ``since``
    (inclusive) and ``until`` (exclusive) bound ``created_at``."""
    status, limit = check_status(status), check_limit(limit)
    workflow, namespace = check_name(workflow, "workflow"), check_name(namespace, "namespace")
    key, prefix = check_event_key(event_key), check_run_prefix(run_id)
    created_from, created_to = check_time(since, "since"), check_time(until, "until")
    async with backend.db() as conn:
        try:
            return await runs_page(
                conn,
                tenant=tenant,
                namespace=namespace,
                status=status,
                workflow=workflow,
                event_key=key,
                created_from=created_from,
                created_to=created_to,
                run_id_prefix=prefix,
                limit=limit,
                after=after or None,
                count_limit=COUNT_LIMIT,
            )
        except CursorError as exc:
            raise HTTPException(400, str(exc)) from None


async def live_from(backend: Backend, tenant: str) -> int:
    """Where a page's live updates start: the first log message the read model it is about
    to read may not hold (the projector's checkpoint, plus one). Read before the page's
    rows: what lands in between is told twice, never missed."""
    async with backend.db() as conn:
        return await read_checkpoint(conn, tenant) + 1


async def run_detail(backend: Backend, tenant: str, run_id: str) -> dict[str, Any]:
    async with backend.db() as conn:
        run = await get_run(conn, check_run(run_id), tenant=tenant)
    if run is None:
        raise HTTPException(404, f"no run {run_id} (it may not be projected yet)")
    return run


async def audit(backend: Backend, tenant: str, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's history from the log (``natchet audit``'s entries)."""
    nc = await backend.log_nc(tenant)
    try:
        _scope, pairs, _end = await read_run(nc, tenant, run["id"], run["namespace"])
    except RunNotFoundError:
        return []
    return entries(pairs)[0]


async def cancel(backend: Backend, tenant: str, run_id: str, reason: str | None) -> dict[str, Any]:
    run = await run_detail(backend, tenant, run_id)
    if RunStatus(run["status"]).terminal:
        raise HTTPException(409, f"run {run_id} has ended ({run['status']}): nothing to cancel")
    nc = await backend.log_nc(tenant)
    await append(nc, cancel_request(Scope(tenant, run["namespace"]), run["id"], reason or None))
    return {"run_id": run["id"], "cancel_requested": True}


async def replay(
    backend: Backend, tenant: str, run_id: str, from_step: str | None
) -> dict[str, Any]:
    run = await run_detail(backend, tenant, run_id)
    if not RunStatus(run["status"]).terminal:
        raise HTTPException(409, f"run {run_id} is {run['status']}: only ended runs re-run")
    if from_step and from_step not in {s["name"] for s in run["steps"]}:
        raise HTTPException(400, f"run {run_id} has no step {from_step!r}")
    nc = await backend.log_nc(tenant)
    scope = Scope(tenant, run["namespace"])
    new_id, request = replay_request(scope, run["id"], from_step or None)
    await append(nc, request)
    # As `natchet runs replay` does: wait a little for the engine's answer, and say it.
    answer = await replay_answer(nc, scope, new_id, REPLAY_ANSWER_S)
    out: dict[str, Any] = {"run_id": new_id, "replay_of": run["id"], "from_step": from_step or None}
    if isinstance(answer, RunRejected):
        return {**out, "answer": "rejected", "reason": answer.reason}
    if answer is None:
        return {**out, "answer": None, "reason": "the engine has not answered yet"}
    return {**out, "answer": "created", "kept": sorted(answer.kept)}


async def projected(backend: Backend, tenant: str, run_id: str, within_s: float = 3.0) -> bool:
    """Whether the read model has run ``run_id`` (waiting up to ``within_s`` for it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        async with backend.db() as conn:
            if await get_run(conn, run_id, tenant=tenant) is not None:
                return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.1)


async def workers(backend: Backend, tenant: str) -> list[dict[str, Any]]:
    """``natchet workers list``'s rows, active first."""
    return await worker_rows(await backend.log_nc(tenant), tenant)


async def events(
    backend: Backend, tenant: str, namespace: str | None, after: str | None, limit: int
) -> Page:
    """Recent events, each with the runs it started (one read of the read model: a page of
    events and their runs in one snapshot)."""
    namespace, limit = check_name(namespace, "namespace"), check_limit(limit)
    async with backend.db() as conn:
        try:
            return await events_page(
                conn,
                tenant=tenant,
                namespace=namespace,
                limit=limit,
                after=after or None,
                with_runs=True,
            )
        except CursorError as exc:
            raise HTTPException(400, str(exc)) from None


async def create_tenant(backend: Backend, name: str) -> dict[str, Any]:
    try:
        created = await admin.create_tenant(await backend.engine_nc(), name.strip())
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None
    if not created:
        raise HTTPException(409, f"tenant {name!r} already exists")
    return {"tenant": name.strip(), "created": True}


def tokens_of(state: Any, tenant: str) -> list[dict[str, Any]]:
    return [
        {
            "id": r.token_id,
            "name": r.name,
            "created_at": r.created_at,
            "expires_at": r.expires_at,
            "revoked_at": r.revoked_at,
        }
        for r in state.tokens.values()
        if r.tenant == tenant
    ]


async def create_token(
    backend: Backend, tenant: str, name: str, expires: str | None, namespace: str | None
) -> dict[str, Any]:
    """A new token, shown this once, with the ``.env`` block a worker needs."""
    namespace = check_name(namespace, "namespace") or "default"
    try:
        expires_in = admin.parse_duration(expires) if expires else None
        issued = await admin.create_token(
            await backend.engine_nc(),
            tenant,
            backend.settings.public_nats_url,
            name=name.strip(),
            expires_in=expires_in,
        )
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None
    env = f"HATCHET_CLIENT_TOKEN={issued.token}\nHATCHET_CLIENT_NAMESPACE={namespace}\n"
    return {
        "id": issued.token_id,
        "tenant": tenant,
        "token": issued.token,
        "expires_at": issued.expires_at,
        "env": env,
    }


async def revoke_token(backend: Backend, state: Any, tenant: str, token_id: str) -> dict[str, Any]:
    record = state.tokens.get(token_id)
    if record is None or record.tenant != tenant:
        raise HTTPException(404, f"no token {token_id!r}")
    if record.revoked_at is None:
        await admin.revoke_token(await backend.engine_nc(), token_id)
    return {"id": token_id, "revoked": True}


async def workflows(backend: Backend, tenant: str, namespace: str | None) -> list[dict[str, Any]]:
    """Every workflow registered in the tenant's log (in ``namespace``, or all): its
    current definition (steps, triggers), and every version registered, newest first.

    Read from the log's registrations (TODO(projector.queries): a workflows query over the
    read model's ``workflows`` table, which would not read every registration)."""
    namespace = check_name(namespace, "namespace")
    nc = await backend.log_nc(tenant)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    async for rec in read_log(nc, tenant, [f"{tenant}.{namespace or '*'}.workflows.*"]):
        try:
            wf = decode_as(WorkflowDef, WorkflowDef.KIND, rec.data)
        except DecodeError:
            continue
        ns = rec.subject.split(".")[1]
        entry = found.setdefault((ns, wf.name), {"namespace": ns, "name": wf.name, "versions": {}})
        entry["versions"].setdefault(wf.version, wf.registered_at)
        entry["current"] = wf
    out = []
    for (_ns, _name), entry in sorted(found.items()):
        wf = entry.pop("current")
        steps = [
            {
                "name": s.name,
                "parents": list(s.parents),
                "timeout_s": s.timeout_s,
                "retries": s.retries,
            }
            for s in wf.steps
        ]
        versions = sorted(entry["versions"].items(), key=lambda kv: kv[1], reverse=True)
        out.append(
            {
                **entry,
                "version": wf.version,
                "versions": [{"version": v, "registered_at": at} for v, at in versions],
                "on_events": list(wf.on_events),
                "steps": steps,
                "on_failure": None if wf.on_failure is None else wf.on_failure.name,
                "on_success": None if wf.on_success is None else wf.on_success.name,
            }
        )
    return out


NAMESPACES_TTL_S = 15.0


async def namespaces(backend: Backend, tenant: str) -> list[str]:
    """The namespaces the tenant's workflows were registered in, for the namespace selector
    (kept ``NAMESPACES_TTL_S``: each page shows it)."""
    now = dt.datetime.now(dt.UTC).timestamp()
    cached = backend.namespaces.get(tenant)
    if cached is not None and now - cached[0] < NAMESPACES_TTL_S:
        return cached[1]
    try:
        registered = await workflows(backend, tenant, None)
    except NatchetError as exc:  # a tenant whose log the engine is still setting up
        log.debug("namespaces of %s: %s", tenant, exc)
        return ["default"]
    found = sorted({wf["namespace"] for wf in registered} | {"default"})
    backend.namespaces[tenant] = (now, found)
    return found
