"""The requests that act on a run, shared by the CLI (``natchet runs cancel|replay``) and
the dashboard: each is one append to the run's subjects in the tenant's log, which the
engine decides (the log decides, never Postgres)."""

from __future__ import annotations

import asyncio
import uuid

from eventstore import Append, Connection, direct_last
from schemas import RunCancelRequested, RunCreated, RunRejected, RunRequested, Scope, encode
from schemas.codec import decode_run_message


def cancel_request(scope: Scope, run_id: str, reason: str | None) -> Append:
    """Ask the engine to cancel ``run_id`` of ``scope`` (deduplicated per run)."""
    body = encode(RunCancelRequested(run_id=run_id, reason=reason))
    return Append(scope.run(run_id, "cancel_requested"), body, f"{run_id}:cancel_requested")


def replay_request(scope: Scope, run_id: str, from_step: str | None) -> tuple[str, Append]:
    """A new run id, and the request that it replay ``run_id`` of ``scope`` (whole, or from
    ``from_step``, keeping the outputs upstream of it)."""
    new_id = str(uuid.uuid4())
    body = encode(RunRequested.of_replay(new_id, run_id, from_step))
    return new_id, Append(scope.run(new_id, "requested"), body, f"{new_id}:requested")


async def replay_answer(
    nc: Connection, scope: Scope, run_id: str, within_s: float
) -> RunCreated | RunRejected | None:
    """The engine's answer to the request of run ``run_id`` (created, or rejected with the
    reason), if it comes within ``within_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        for kind in ("created", "rejected"):
            record = await direct_last(nc, scope.tenant, scope.run(run_id, kind))
            if record is not None:
                message = decode_run_message(kind, record.data)
                assert isinstance(message, RunCreated | RunRejected)
                return message
        await asyncio.sleep(0.1)
    return None
