"""The NATS accounts natchet runs on, as JWT claims. Pure: builds dicts, signs nothing.

Operator mode: one operator signs every account; the server learns accounts from the
built-in full resolver, which the engine updates at run time (``$SYS.REQ.CLAIMS.UPDATE``).

| account            | holds                                        | who connects            |
|--------------------|----------------------------------------------|-------------------------|
| ``SYS``            | the server's system account                  | the engine (kick, push) |
| ``natchet-auth``   | the auth callout and the default sentinel     | the engine's callout    |
| ``natchet``        | ``natchet-system``: tenants, token hashes     | the engine, the CLI     |
| ``log-<t>``        | t's log, task queues, liveness, timers, snaps | the engine only         |
| ``tenant-<t>``     | nothing but imports from ``log-<t>``          | t's users (via callout) |

Why two accounts per tenant: NATS checks permissions on a message's subject, never on its
reply subject, and JetStream answers pub acks, pull requests (even a 404 status with an
empty body) and API calls to whatever reply a client names, from inside the account. In an
account that holds a stream, a client allowed only to pull from one consumer can aim the
answer at ``$JS.API.STREAM.DELETE.<stream>`` and delete it (``docs/tenancy.md`` shows the
experiment). So tenant users live in an account with no JetStream at all, and reach their
log through service imports: the server hands the exporting account a fresh ``_R_.``
reply and carries the answer back, so a reply a tenant picks exists only in its own,
empty account.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from eventstore.provision import LIVE_MAX_BYTES, SCHEDULES_MAX_BYTES
from schemas.subjects import live_subjects, stream_name, tasks_stream_name
from schemas.tenancy import inbox_prefix

NO_LIMIT = -1
RESPONSE_THRESHOLD_NS = 30 * 1_000_000_000  # longer than any pull request's expiry

Kind = Literal["service", "stream"]


@attrs.frozen
class Grant:
    """One subject a tenant's users reach in its log account: ``service`` (they publish;
    an answer comes back) or ``stream`` (they subscribe to what the engine publishes)."""

    subject: str
    kind: Kind
    response: Literal["Singleton", "Stream"] = "Singleton"
    name: str = ""


def tenant_grants(tenant: str) -> list[Grant]:
    """Exactly what workers and publishers need, and nothing of the engine's."""
    log, tasks = stream_name(tenant), tasks_stream_name(tenant)
    t = tenant
    return [
        Grant(f"{t}.*.events.>", "service", name="publish events"),
        Grant(f"{t}.*.workflows.*", "service", name="register workflows"),
        Grant(f"{t}.*.runs.*.requested", "service", name="start runs"),
        Grant(f"{t}.*.runs.*.cancel_requested", "service", name="cancel runs"),
        Grant(f"{t}.*.runs.*.assigned", "service", name="report assignments"),
        Grant(f"{t}.*.runs.*.result", "service", name="report results"),
        Grant(f"{t}.*.runs.*.log", "service", name="report log lines"),
        Grant(f"{t}.*.runs.*.waiting", "service", name="report durable waits"),
        Grant(f"{t}.*.ratelimits.*", "service", name="set rate limits"),
        # Crons and scheduled runs: a tenant asks (created, deleted); the engine alone
        # answers (armed, fired, rejected) and sets the timers, in a stream of its own.
        Grant(f"{t}.*.crons.*.created", "service", name="create crons"),
        Grant(f"{t}.*.crons.*.deleted", "service", name="delete crons"),
        Grant(f"{t}.*.schedules.*.created", "service", name="schedule runs"),
        Grant(f"{t}.*.schedules.*.deleted", "service", name="delete scheduled runs"),
        Grant(live_subjects(t), "service", name="heartbeats"),
        Grant(f"$JS.API.CONSUMER.MSG.NEXT.{tasks}.*", "service", "Stream", "pull tasks"),
        Grant(f"$JS.API.CONSUMER.INFO.{tasks}.*", "service", name="queue info"),
        Grant(f"$JS.ACK.{tasks}.>", "service", name="ack tasks"),
        Grant(f"$JS.API.DIRECT.GET.{log}", "service", "Stream", "read own log"),
        Grant(f"$JS.API.DIRECT.GET.{log}.>", "service", name="read own log by subject"),
        Grant(f"{t}.*.runs.*.finished", "stream", name="run ends"),
        Grant(f"{t}.*.runs.*.step_finished", "stream", name="step ends"),
        Grant(f"{t}.*.runs.*.rejected", "stream", name="run rejections"),
        Grant(f"{t}.*.workers.*.refused", "stream", name="worker refusals"),
    ]


def tenant_permissions(tenant: str) -> dict[str, Any]:
    """The user permissions the callout grants inside the tenant's account: the imports,
    the tenant's own inboxes, and its own subjects to listen on."""
    grants = tenant_grants(tenant)
    inboxes = [f"{inbox_prefix(tenant)}.>", "_INBOX.>"]
    publish = [g.subject for g in grants if g.kind == "service"] + inboxes
    subscribe = [f"{tenant}.>", *inboxes]
    return {"pub": {"allow": publish}, "sub": {"allow": subscribe}}


@attrs.frozen
class TenantLimits:
    """What one tenant may use. ``max_bytes`` is the log's quota (-1: none): a full log
    refuses new messages and keeps every old one."""

    max_bytes: int = NO_LIMIT
    max_connections: int = NO_LIMIT
    max_consumers: int = NO_LIMIT

    @property
    def disk_bytes(self) -> int:
        """The log account's storage: the log, the task queues (as large again at most), the
        dispatcher's snapshots (a fold of the log: no larger than it) and a little for
        liveness and timers."""
        if self.max_bytes < 0:
            return NO_LIMIT
        return 3 * self.max_bytes + LIVE_MAX_BYTES + SCHEDULES_MAX_BYTES


def _limits(*, conn: int = NO_LIMIT, disk: int = 0, streams: int = 0, consumers: int = 0) -> Any:
    return {
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "imports": NO_LIMIT,
        "exports": NO_LIMIT,
        "wildcards": True,
        "conn": conn,
        "leaf": 0,
        # JetStream is on for an account when it may store something.
        "mem_storage": 0,
        "disk_storage": disk,
        "streams": streams,
        "consumer": consumers,
    }


def _account(name: str, account_key: str, nats: dict[str, Any]) -> dict[str, Any]:
    return {"sub": account_key, "name": name, "nats": {**nats, "type": "account", "version": 2}}


def operator_claims(operator_key: str, system_account: str) -> dict[str, Any]:
    return {
        "sub": operator_key,
        "name": "natchet",
        "nats": {"system_account": system_account, "type": "operator", "version": 2},
    }


def system_account_claims(key: str) -> dict[str, Any]:
    return _account("SYS", key, {"limits": _limits()})


def engine_account_claims(key: str) -> dict[str, Any]:
    unlimited = _limits(disk=NO_LIMIT, streams=NO_LIMIT, consumers=NO_LIMIT)
    return _account("natchet", key, {"limits": unlimited})


def auth_account_claims(key: str, callout_user: str) -> dict[str, Any]:
    """The callout account: its users (but the callout service itself) are sent to the
    callout, which places them in their tenant's account."""
    authorization = {"auth_users": [callout_user], "allowed_accounts": ["*"]}
    return _account("natchet-auth", key, {"limits": _limits(), "authorization": authorization})


def log_account_claims(
    tenant: str, key: str, tenant_account: str, limits: TenantLimits
) -> dict[str, Any]:
    """The tenant's log account: JetStream within its quota, and one export per grant that
    only the tenant's own account may import (``token_req``)."""
    exports = [
        {
            "name": g.name,
            "subject": g.subject,
            "type": g.kind,
            "token_req": True,
            **(
                {"response_type": g.response, "response_threshold": RESPONSE_THRESHOLD_NS}
                if g.kind == "service"
                else {}
            ),
        }
        for g in tenant_grants(tenant)
    ]
    # The log, the task queues, liveness, timers and the snapshot bucket (``OBJ_snap-<t>``).
    jetstream = _limits(conn=NO_LIMIT, disk=limits.disk_bytes, streams=5, consumers=NO_LIMIT)
    jetstream["consumer"] = limits.max_consumers
    # Named by its key, not ``log-<tenant>``: the monitoring endpoint filters ``/jsz?acc=``
    # by key but reports the name, and KEDA's JetStream scaler asks for one and looks for
    # the other (``natchet tenant list`` shows the key as ``nats_account``).
    return _account(key, key, {"limits": jetstream, "exports": exports})


def activation_claims(importer: str, grant: Grant) -> dict[str, Any]:
    """The exporter's permission for ``importer`` to import ``grant`` (signed by the log
    account)."""
    return {
        "sub": importer,
        "name": grant.name,
        "nats": {"subject": grant.subject, "kind": grant.kind, "type": "activation", "version": 2},
    }


def tenant_account_claims(
    tenant: str,
    key: str,
    log_account: str,
    activations: dict[str, str],
    limits: TenantLimits,
) -> dict[str, Any]:
    """Where the tenant's users live: no JetStream, only imports from its log account.
    ``activations`` maps each grant's subject to its signed activation token."""
    imports = [
        {
            "name": g.name,
            "subject": g.subject,
            "account": log_account,
            "token": activations[g.subject],
            "type": g.kind,
        }
        for g in tenant_grants(tenant)
    ]
    nats = {"limits": _limits(conn=limits.max_connections), "imports": imports}
    return _account(f"tenant-{tenant}", key, nats)


def user_claims(
    user_key: str,
    name: str,
    permissions: dict[str, Any],
    *,
    expires_at: int | None = None,
    bearer: bool = False,
) -> dict[str, Any]:
    nats: dict[str, Any] = {
        **permissions,
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "type": "user",
        "version": 2,
    }
    if bearer:
        nats["bearer_token"] = True
    claims: dict[str, Any] = {"sub": user_key, "name": name, "nats": nats}
    if expires_at is not None:
        claims["exp"] = expires_at
    return claims


DENY_ALL = {"pub": {"deny": [">"]}, "sub": {"deny": [">"]}}
