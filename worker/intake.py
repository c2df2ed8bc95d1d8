"""What a worker does with a task it was handed: run its step, or settle it without running.

A task is not run when it cannot be (malformed: terminated; an unknown step: terminated;
another version of the workflow: handed back for a worker that has it) or need not be (its
run is over, or it timed out in the queue: acked). Invariant: every delivery taken here is
settled (acked, nak'd or terminated) before :meth:`Intake.take` returns, or it comes back
after the consumer's ``ack_wait``; one cancelled before its step started goes straight back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Mapping

from eventstore import (
    Connection,
    Delivery,
    NatchetError,
    TransportError,
    direct_last,
    max_message_bytes,
)
from schemas.codec import DecodeError, decode_as
from schemas.messages import Task
from worker.declare import WorkflowSpec
from worker.ended import RunEnds
from worker.execute import Attempt
from worker.inflight import Holding
from worker.labels import WorkerContext
from worker.metrics import WorkerMetrics
from worker.settings import WorkerSettings
from worker.settle import settle

log = logging.getLogger(__name__)

VERSION_RETRY_S = 2.0


class Intake:
    def __init__(
        self,
        conn: Connection,
        settings: WorkerSettings,
        worker_id: str,
        workflows: Mapping[str, tuple[WorkflowSpec, object]],
        closing: asyncio.Event,
        ends: RunEnds | None = None,
        metrics: WorkerMetrics | None = None,
        worker_context: WorkerContext | None = None,
    ) -> None:
        self.conn = conn
        self.worker_context = worker_context
        self.metrics = metrics
        self.ends = ends
        self.settings = settings
        self.worker_id = worker_id
        self.workflows = workflows
        self.closing = closing
        self.completed = 0  # steps run to a result (succeeded or failed)
        self.handed_back = 0  # tasks given back unfinished, for other workers

    async def take(self, holding: Holding) -> None:
        """Run the delivery's step, unless it cannot or need not run here; settle it."""
        delivery = holding.delivery
        try:
            task = decode_as(Task, Task.KIND, delivery.data)
        except DecodeError as exc:
            log.error("dropping malformed task at seq %d: %s", delivery.seq, exc)
            await _settle(delivery, delivery.term())
            return
        spec, instance = self.workflows.get(task.workflow, (None, None))
        fn = spec.functions.get(task.step) if spec is not None else None
        if fn is None or spec is None:
            log.error("task for unknown step %s.%s", task.workflow, task.step)
            await _settle(delivery, delivery.term())
            return
        version = spec.definition.version
        if task.workflow_version and task.workflow_version != version:
            log.warning(
                "task %s.%s is for workflow version %s; this worker has %s: leaving it "
                "to a worker with that version",
                task.workflow,
                task.step,
                task.workflow_version,
                version,
            )
            await _settle(delivery, delivery.nak(VERSION_RETRY_S))
            return
        attempt = self._attempt(task, delivery)
        try:
            over = attempt.stale(dt.datetime.now(dt.UTC)) or await self._run_over(
                task, delivery.delivered
            )
        except asyncio.CancelledError:
            await _settle(delivery, delivery.nak())  # not started: straight back to the queue
            self.handed_back += 1
            raise
        if over:
            log.warning(
                "dropping task %s.%s of run %s: the run is over, or the step timed out in "
                "the queue",
                task.workflow,
                task.step,
                task.run_id,
            )
            await _settle(delivery, delivery.ack())
            return
        holding.attempt = attempt
        began = time.monotonic()
        if self.metrics is not None:
            self.metrics.step_started(task.workflow, task.step)
        try:
            await attempt.run(fn, instance)
        finally:
            self.completed += attempt.outcome == "result"
            self.handed_back += attempt.outcome == "handed back"
            if self.metrics is not None:
                self.metrics.step_ended(
                    task.workflow, task.step, _outcome(attempt), time.monotonic() - began
                )

    def _attempt(self, task: Task, delivery: Delivery) -> Attempt:
        s = self.settings
        attempt = Attempt(
            self.conn,
            s.scope,
            self.worker_id,
            s.name,
            task,
            delivery,
            keepalive_s=s.consumer.ack_wait_s / 3,
            max_msg_bytes=max_message_bytes(self.conn),
            closing=self.closing,
        )
        attempt.context.worker = self.worker_context
        return attempt

    async def _run_over(self, task: Task, delivered: int) -> bool:
        """Whether the run already finished (cancelled, say): as the run ends this worker
        heard say (``worker.ended``), or else one direct get of its ``finished`` subject.
        When unsure, run the step: at least once beats never."""
        known = (
            None if self.ends is None else self.ends.over(task.run_id, task.queued_at, delivered)
        )
        if known is not None:
            return known
        client = self.settings.client
        subject = client.scope.run(task.run_id, "finished")
        try:
            return await direct_last(self.conn, client.tenant, subject) is not None
        except NatchetError as exc:
            log.debug("could not check whether run %s is over: %s", task.run_id, exc)
            return False


def _outcome(attempt: Attempt) -> str:
    """The attempt's end as ``natchet_worker_steps_finished_total`` labels it."""
    if attempt.outcome == "result":
        return "succeeded" if attempt.ok else "failed"
    return (attempt.outcome or "unsettled").replace(" ", "_")


async def _settle(delivery: Delivery, act: Awaitable[None]) -> None:
    """Ack, nak or terminate, to the end; a NATS failure only delays it (redelivery)."""
    try:
        await settle(act)
    except TransportError as exc:
        log.warning("could not settle task #%d: %s", delivery.seq, exc)
