"""Registering a worker's workflows: appending their definitions to the tenant's log.

The engine creates a workflow's queue group when it reads the registration. While the
tenant's log is not there yet (the engine sets a tenant up when it starts or creates it),
registration waits and tries again with ``eventstore.RETRY``; it gives up only on a refusal
that cannot change (no permission, a definition too large) or when the worker is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from schemas import encode
from schemas.messages import WorkflowDef
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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), RETRY.delay(failures))
    raise ConfigError(f"worker {worker} stopped before it could register")
