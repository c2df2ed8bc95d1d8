"""The requests that act on a run, shared by the CLI (``natchet runs cancel|replay``) and
the dashboard: each is one append to the run's subjects in the tenant's log, which the
engine decides (the log decides, never Postgres)."""

from __future__ import annotations

import uuid

from eventstore import Append
from schemas import RunCancelRequested, RunRequested, Scope, encode


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
