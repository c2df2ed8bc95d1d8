"""Registering a worker's workflows: appending their definitions to the tenant's log.

The engine creates a workflow's queue group when it reads the registration. While the
tenant's log is not there yet (the engine sets a tenant up when it starts or creates it),
registration waits and tries again with ``eventstore.RETRY``; it gives up only on a refusal
that cannot change (no permission, a definition too large) or when the worker is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence

from eventstore import (
    RETRY,
    Append,
    AppendError,
    AppendRefusedError,
    ConfigError,
    Connection,
    PermissionDeniedError,
    TransportError,
    append,
)
from eventstore.triggers import create_cron, delete_cron, list_crons
from eventstore.waits import wait_set
from schemas import encode
from schemas.messages import WorkflowDef
from schemas.subjects import Scope
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

WARN_EVERY = 10  # failures between two warnings, after the first


async def register(
    conn: Connection,
    settings: WorkerSettings,
    workflows: Sequence[WorkflowDef],
    stopping: asyncio.Event,
) -> None:
    """Append every definition; raise ``ConfigError`` if ``stopping`` is set first."""
    ns = settings.client.namespace
    for wf in workflows:
        # The dedup id names the namespace: alice and bob may register the same workflow.
        item = Append(
            settings.scope.workflow(wf.name), encode(wf), f"workflow:{ns}:{wf.name}:{wf.version}"
        )
        await _append_until_stored(conn, item, settings.name, stopping)


def declared_cron_name(workflow: str, index: int) -> str:
    """The name of a workflow's ``index``-th ``on_crons`` cron (within 64 characters)."""
    suffix = f"-cron-{index}"
    return workflow[: 64 - len(suffix)] + suffix


async def declare_crons(
    conn: Connection, scope: Scope, workflow: str, crons: Sequence[str]
) -> None:
    """Keep the crons a workflow declares (``on_crons``) as its crons in the log: create
    those missing or changed, delete those it no longer declares. Ids are deterministic,
    so workers registering at once store each cron once."""
    existing = {c.name: c for c in await list_crons(conn, scope)}
    for index, expression in enumerate(crons):
        name = declared_cron_name(workflow, index)
        have = existing.get(name)
        if have is not None and have.expression == expression and have.workflow == workflow:
            continue
        ident = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{scope.prefix}/{name}/{expression}"))
        await create_cron(
            conn, scope, workflow, name, expression, known_workflow=False, cron_id=ident
        )
    for index in range(len(crons), len(crons) + 64):
        name = declared_cron_name(workflow, index)
        if name not in existing:
            break
        await delete_cron(conn, scope, name)


async def _append_until_stored(
    conn: Connection, item: Append, worker: str, stopping: asyncio.Event
) -> None:
    failures = 0
    while not stopping.is_set():
        try:
            await append(conn, item)
            return
        except (AppendError, TransportError) as exc:
            if isinstance(exc, PermissionDeniedError) or (
                isinstance(exc, AppendRefusedError) and exc.permanent
            ):
                raise
            failures += 1
            if failures % WARN_EVERY == 1:
                log.warning(
                    "worker %s: cannot register (%s): is the engine running (`natchet dev` "
                    "or `natchet engine`)? retrying",
                    worker,
                    exc,
                )
        await wait_set(stopping, RETRY.delay(failures))
    raise ConfigError(f"worker {worker} stopped before it could register")
