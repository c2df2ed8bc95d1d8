"""How a run ended, read from its history in the log: what ``result()`` of a run started
by the client, and of a child run a step spawned, waits for."""

from __future__ import annotations

import asyncio
from typing import Any

from eventstore import Connection, Message, NatchetError, direct_history, subscribe
from eventstore.waits import wait_set
from schemas.codec import DecodeError, decode_run_message
from schemas.messages import RunCreated, RunFinished, RunRejected, RunStatus, StepFinished
from schemas.subjects import Scope

REREAD_S = 1.0  # a run's history is read again at least this often while it runs


class WorkflowRunError(NatchetError):
    """A run ended FAILED or CANCELLED, or was rejected; ``status`` and ``error`` say how."""

    def __init__(self, run_id: str, status: str, error: str | None) -> None:
        super().__init__(f"run {run_id} {status}: {error}")
        self.run_id = run_id
        self.status = status
        self.error = error


async def wait_for_run(nc: Connection, scope: Scope, run_id: str) -> dict[str, Any]:
    """``{step: output}`` once run ``run_id`` succeeded; :class:`WorkflowRunError` once it
    failed, was cancelled or was rejected.

    It folds the run's history from the log (a tenant may read its own log, not create
    consumers on it) until it ends. News on the run's subjects only says when to read
    again: a message of an atomic batch reaches subscribers when it is sent, but the log
    only once the batch is committed, so news alone can miss what the log has."""
    outputs: dict[str, Any] = {}
    news = asyncio.Event()

    async def hear(msg: Message) -> None:
        news.set()

    subject = scope.run_filter(run_id)
    sub = await subscribe(nc, subject, hear)
    next_seq = 1
    try:
        while True:
            news.clear()
            async for rec in direct_history(nc, scope.tenant, subject, start_seq=next_seq):
                next_seq = rec.seq + 1
                if _over(run_id, rec.subject, rec.data, outputs):
                    return outputs
            await wait_set(news, REREAD_S)
    finally:
        await sub.unsubscribe()


def _over(run_id: str, subject: str, data: bytes, outputs: dict[str, Any]) -> bool:
    """Fold one run message into ``outputs``; ``True`` once the run succeeded, and
    :class:`WorkflowRunError` once it failed or was rejected."""
    try:
        message = decode_run_message(subject.rsplit(".", 1)[-1], data)
    except DecodeError:
        return False
    match message:
        case RunCreated():  # a replay's kept steps: their outputs, carried over
            outputs.update(message.kept)
        case StepFinished(status=RunStatus.SUCCEEDED):
            outputs[message.step] = message.output
        case RunFinished(status=RunStatus.SUCCEEDED):
            outputs.update(
                (s.step, s.output) for s in message.steps if s.status is RunStatus.SUCCEEDED
            )
            return True
        case RunFinished():
            raise WorkflowRunError(run_id, message.status, message.error)
        case RunRejected():
            raise WorkflowRunError(run_id, "REJECTED", message.reason)
    return False
