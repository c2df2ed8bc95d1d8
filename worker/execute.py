"""Running one step attempt: assignment, the step itself, logs, keepalive, and the outcome.

Invariants:

- the result carries the attempt's assignment (worker, start); ``assigned`` is appended
  besides only for a step still running ``ASSIGN_GRACE_S`` after it started (so a run of
  fast steps costs one message fewer a step), or at once, before the step starts, when the
  task's schedule deadline is less than ``ASSIGN_AT_ONCE_S`` away (the dispatcher must
  hear that a worker holds the step before it fails it as never picked up); when both are
  appended, ``assigned`` comes first;
- an attempt's outcome is recorded, then its task settled: the result is appended to the
  run's history before the task is acked (or nak'd), never after;
- that final write and its ack run to their end even when a cancellation (the run ended, the
  shutdown's grace ran out) arrives meanwhile (:func:`worker.settle.settle`), so a step
  that finished is never run again for want of its result;
- while the attempt runs, the task's ack wait is renewed (``in_progress``) every third of
  it, through a shutdown's drain too;
- writes are retried with ``eventstore.RETRY`` until they are in the log, unless refused for
  good or the worker is closing (``closing`` set: it gives up, and the task comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import functools
import inspect
import logging
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from eventstore import (
    RETRY,
    Append,
    AppendRefusedError,
    Connection,
    Delivery,
    NatchetError,
    TransportError,
    append,
    logs,
    tracing,
)
from eventstore.waits import wait_set
from schemas import encode, encode_json
from schemas.durable import StepWaiting, WaitCondition
from schemas.messages import StepAssigned, StepLog, StepResult, Task
from schemas.structure import utcnow
from schemas.subjects import Scope
from worker import logs as step_logs
from worker import spawn
from worker.context import Context
from worker.durable import Suspended
from worker.errors import NonRetryableError
from worker.models import to_json
from worker.settle import settle
from worker.spawn import Spawner
from worker.threads import StepThread

log = logging.getLogger(__name__)

RUN_ENDED = "run ended"
SHUTDOWN = "worker shutting down"
TIMED_OUT = "timed out"
INTERRUPTED = "the step's thread was interrupted"

# A step still running this long after it started gets its ``assigned``; one done sooner
# leaves only its result, which carries the assignment.
ASSIGN_GRACE_S = 0.05
# A task whose schedule deadline is nearer than this (or past: a redelivery) gets its
# ``assigned`` before the step starts: the dispatcher's schedule timeout must not fire on a
# step a worker holds. A margin for the grace, the append and the hosts' clocks.
ASSIGN_AT_ONCE_S = 1.0
# How much of a failing step's traceback its result keeps (the end: where it raised).
TRACEBACK_CHARS = 8000


class _Due(enum.Enum):
    """What the log writer appends next, besides the step's lines."""

    ASSIGNED = "assigned"  # the grace ran out


class Attempt:
    """One delivery of one task to this worker."""

    def __init__(
        self,
        conn: Connection,
        scope: Scope,
        worker_id: str,
        worker_name: str,
        task: Task,
        delivery: Delivery,
        *,
        keepalive_s: float,
        max_msg_bytes: int,
        closing: asyncio.Event,
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.worker_id = worker_id
        self.worker_name = worker_name
        self.task = task
        self.delivery = delivery
        self.keepalive_s = keepalive_s
        self.max_msg_bytes = max_msg_bytes
        self.closing = closing
        # The attempt's delivery number: a durable step queued again after a wait counts on
        # from the deliveries before it (``Task.delivery_offset``).
        self.number = task.delivery_offset + delivery.delivered
        self.key = f"{task.run_id}:{task.step}:{task.attempt}:{self.number}"
        self.thread: StepThread | None = None  # a sync step's, once started
        self.outcome: str | None = None  # once settled: "result", "handed back" or "cancelled"
        self.ok: bool | None = None  # once the step returned (True) or raised (False)
        self.started_at = utcnow()  # set again when the step starts
        self.assigned = False  # ``assigned`` is being appended, or is in the log
        self.error: str | None = None  # why the step failed, once it did
        self._grace: asyncio.TimerHandle | None = None
        self._lines: asyncio.Queue[str | _Due | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def sink(line: str) -> None:
            loop.call_soon_threadsafe(self._lines.put_nowait, line)

        self._append_line = sink
        self.spawner = Spawner(conn, scope, task, loop, lambda: self.context.cancelled)
        self.context = Context(task, self.number, sink, self.spawner, self._suspend)

    def stale(self, now: dt.datetime) -> bool:
        """The dispatcher already failed this step for not being picked up in time. Only a
        first delivery can be: a redelivered task was picked up before, in time."""
        deadline = self.task.schedule_deadline
        return (
            self.delivery.delivered == 1
            and deadline is not None
            and dt.datetime.fromisoformat(deadline) < now
        )

    def assign_at_once(self, now: dt.datetime) -> bool:
        """Whether ``assigned`` goes to the log before the step starts rather than after the
        grace: the task's schedule deadline is less than ``ASSIGN_AT_ONCE_S`` away."""
        deadline = self.task.schedule_deadline
        return (
            deadline is not None
            and (dt.datetime.fromisoformat(deadline) - now).total_seconds() < ASSIGN_AT_ONCE_S
        )

    @property
    def interrupted(self) -> bool:
        return self.thread is not None and self.thread.interrupted

    async def run(self, fn: Callable[..., Any], instance: object) -> None:
        """Run the step, with every line logged meanwhile saying which run, step and
        attempt it concerns, and a captured logger's lines going to the step's log."""
        t = self.task
        with (
            logs.bound(run_id=t.run_id, step=t.step, attempt=t.attempt),
            step_logs.capturing(self._append_line),
            spawn.spawning(self.spawner),
            self._span() as span,
        ):
            try:
                await self._run(fn, instance)
            finally:
                # Also when cancelled once its result was written: a failed step's result
                # ends its run, and the worker cancels a step of a run that ended.
                if span is not None and self.error is not None:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR, self.error))

    @contextlib.contextmanager
    def _span(self) -> Iterator[Any]:
        """With tracing on, the attempt's span, a child of its step's (the task's headers):
        current while the step runs, so the step's own spans are its children."""
        tracer = tracing.tracer()
        if tracer is None:
            yield None
            return
        from opentelemetry.trace import SpanKind

        t = self.task
        attributes = {
            "natchet.tenant": self.scope.tenant,
            "natchet.namespace": self.scope.namespace,
            "natchet.run_id": t.run_id,
            "natchet.workflow": t.workflow,
            "natchet.step": t.step,
            "natchet.attempt": t.attempt,
            "natchet.delivery": self.number,
            "natchet.worker": self.worker_name,
        }
        parent = tracing.parent_of(self.delivery.headers)
        with tracer.start_as_current_span(
            f"natchet.attempt {t.step}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield span

    async def _run(self, fn: Callable[..., Any], instance: object) -> None:
        self.started_at = utcnow()
        writer: asyncio.Task[None] | None = None
        keepalive: asyncio.Task[None] | None = None
        try:
            if self.assign_at_once(dt.datetime.now(dt.UTC)):
                await settle(self._assign())
            writer = asyncio.create_task(self._write_logs())
            keepalive = asyncio.create_task(self._keepalive())
            if not self.assigned:
                # One timer, no task: a step done within the grace cancels it (_stop_grace).
                loop = asyncio.get_running_loop()
                self._grace = loop.call_later(ASSIGN_GRACE_S, self._lines.put_nowait, _Due.ASSIGNED)
            body = await self._execute(fn, instance)
        except asyncio.CancelledError:
            self._stop_grace()
            await settle(self._finish_cancelled(writer, keepalive))
            raise
        except Suspended:
            self._stop_grace()
            assert writer is not None and keepalive is not None
            await settle(self._finish(None, writer, keepalive))
            return
        self._stop_grace()
        assert writer is not None and keepalive is not None
        await settle(self._finish(body, writer, keepalive))

    def _stop_reason(self) -> str:
        """Why the attempt is being cancelled: told by whoever cancels, else a shutdown."""
        reason = self.context.cancel_reason or SHUTDOWN
        self.context._set_cancelled(reason)
        return reason

    async def _execute(self, fn: Callable[..., Any], instance: object) -> bytes:
        """Run the step; its result, encoded (measured once, appended as it is)."""
        t = self.task
        try:
            output = to_json(await self._call(fn, instance))
            encode_json(output)  # what JSON cannot carry fails here, clearly
            body = encode(self._result(ok=True, output=output))
            if len(body) > self.max_msg_bytes:
                raise NonRetryableError(
                    f"step output is too large ({len(body)} bytes with its result; the log "
                    f"takes messages up to {self.max_msg_bytes} bytes)"
                )
            self.ok = True
            return body
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing step is a result, not a worker crash
            self.ok = False
            self.context._set_cancelled("failed")
            error = describe(exc, t.timeout_s)
            if self.interrupted:
                error = f"{error} ({INTERRUPTED})"
            self.error = error
            return encode(
                self._result(
                    ok=False,
                    error=error,
                    non_retryable=isinstance(exc, NonRetryableError),
                    traceback=where(exc),
                )
            )

    async def _call(self, fn: Callable[..., Any], instance: object) -> Any:
        timeout_s = self.task.timeout_s
        if inspect.iscoroutinefunction(fn):
            return await asyncio.wait_for(fn(instance, self.context), timeout_s)
        name = f"step-{self.task.workflow}.{self.task.step}"
        thread = self.thread = StepThread(functools.partial(fn, instance, self.context), name)
        thread.start()
        try:
            await asyncio.wait_for(thread.ended.wait(), timeout_s)
        except TimeoutError:
            self.context._set_cancelled(TIMED_OUT)
            await settle(thread.stop())
            raise
        except asyncio.CancelledError:
            self._stop_reason()
            await settle(thread.stop())
            raise
        return thread.result()

    async def _finish(
        self, body: bytes | None, writer: asyncio.Task[None], keepalive: asyncio.Task[None]
    ) -> None:
        """Record the outcome (``body``: the encoded result), then ack: the step is done.
        Without a body the step waits (its ``waiting`` is in the log): the ack gives the task
        and the slot back, with no result; the dispatcher queues it again once woken."""
        keepalive.cancel()
        await self._close_logs(writer)
        if body is not None:
            await self.append("result", body, f"{self.key}:result")
        self.outcome = "result" if body is not None else "suspended"
        try:
            await self.delivery.ack()
        except TransportError as exc:  # it comes back: its result, or its wait, is in the log
            log.warning("could not ack %s: %s", self.key, exc)

    async def _finish_cancelled(
        self, writer: asyncio.Task[None] | None, keepalive: asyncio.Task[None] | None
    ) -> None:
        """Record how the attempt ended, then settle the task: a run that ended is done
        (ack); on shutdown the task goes back at once to another worker (nak)."""
        reason = self._stop_reason()
        if keepalive is not None:
            keepalive.cancel()
        if writer is not None:
            await self._close_logs(writer)
        handed_back = reason == SHUTDOWN
        error = (
            "handed back: the worker shut down before finishing"
            if handed_back
            else "cancelled: the run ended while this step was running"
        )
        if self.interrupted:
            error = f"{error} ({INTERRUPTED})"
        result = self._result(ok=False, error=error, handed_back=handed_back)
        with contextlib.suppress(NatchetError):
            await self.append("result", encode(result), f"{self.key}:result", retry=False)
        self.outcome = "handed back" if handed_back else "cancelled"
        with contextlib.suppress(TransportError):
            await (self.delivery.nak() if handed_back else self.delivery.ack())

    async def _suspend(self, index: int, conditions: tuple[WaitCondition, ...]) -> None:
        """The step reached wait ``index``, not woken yet: record it, then stop the step
        (:class:`worker.durable.Suspended`); the task is acked without a result."""
        t = self.task
        waiting = StepWaiting(
            run_id=t.run_id,
            step=t.step,
            attempt=t.attempt,
            delivery=self.number,
            index=index,
            conditions=conditions,
            worker_id=self.worker_id,
            worker_name=self.worker_name,
        )
        msg_id = f"{t.run_id}:{t.step}:{t.attempt}:wait:{index}"
        await self.append("waiting", encode(waiting), msg_id)
        raise Suspended(index)

    def _result(
        self,
        *,
        ok: bool,
        output: Any = None,
        error: str | None = None,
        non_retryable: bool = False,
        handed_back: bool = False,
        traceback: str | None = None,
    ) -> StepResult:
        t = self.task
        return StepResult(
            run_id=t.run_id,
            step=t.step,
            attempt=t.attempt,
            delivery=self.number,
            worker_id=self.worker_id,
            ok=ok,
            output=output,
            error=error,
            non_retryable=non_retryable,
            handed_back=handed_back,
            worker_name=self.worker_name,
            started_at=self.started_at,
            traceback=traceback,
        )

    async def _assign(self) -> None:
        """Append ``assigned`` (the same worker and start the result will carry), once."""
        if self.assigned:
            return
        self.assigned = True
        t = self.task
        assigned = StepAssigned(
            run_id=t.run_id,
            step=t.step,
            attempt=t.attempt,
            delivery=self.number,
            worker_id=self.worker_id,
            worker_name=self.worker_name,
            started_at=self.started_at,
        )
        await self.append("assigned", encode(assigned), f"{self.key}:assigned")

    def _stop_grace(self) -> None:
        """The step is over (called before its outcome is written): if its grace has not run
        out, no ``assigned`` is appended, the result carries the assignment. One that ran out
        is queued before the logs' end, so the writer appends it before the result."""
        if self._grace is not None:
            self._grace.cancel()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            with contextlib.suppress(TransportError):
                await self.delivery.in_progress()

    async def _write_logs(self) -> None:
        n = 0
        t = self.task
        while (line := await self._lines.get()) is not None:
            if line is _Due.ASSIGNED:
                with contextlib.suppress(NatchetError):  # given up: the result carries it
                    await self._assign()
                continue
            n += 1
            entry = StepLog(
                run_id=t.run_id,
                step=t.step,
                attempt=t.attempt,
                delivery=self.number,
                line=line[:8192],
            )
            with contextlib.suppress(NatchetError):  # given up: the worker is closing
                await self.append("log", encode(entry), f"{self.key}:log:{n}")

    async def _close_logs(self, writer: asyncio.Task[None]) -> None:
        self._lines.put_nowait(None)
        await writer

    async def append(self, kind: str, body: bytes, msg_id: str, *, retry: bool = True) -> None:
        """Append to the run's history until it is in the log: a result is never dropped for
        a NATS hiccup. A permanent refusal (too large) is raised, not retried; so is the
        last failure once the worker is closing."""
        subject = self.scope.run(self.task.run_id, kind)
        failures = 0
        while True:
            try:
                await append(self.conn, Append(subject, body, msg_id))
                return
            except NatchetError as exc:
                permanent = isinstance(exc, AppendRefusedError) and exc.permanent
                if permanent or not retry or self.closing.is_set():
                    raise
                failures += 1
                delay = RETRY.delay(failures)
                log.warning("append to %s failed (%s); retrying in %.1fs", subject, exc, delay)
            await wait_set(self.closing, delay)


def where(exc: BaseException) -> str | None:
    """The traceback of a step that raised, for the audit (its last ``TRACEBACK_CHARS``);
    none for a step timed out (the worker stopped it: there is nothing of the step's)."""
    if isinstance(exc, TimeoutError):
        return None
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= TRACEBACK_CHARS else "..." + text[-TRACEBACK_CHARS:]


def describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"TimeoutError: step timed out after {timeout_s:g}s"
    if isinstance(exc, TypeError) and str(exc).startswith("not JSON-serializable"):
        return f"step output is {exc}"
    return f"{type(exc).__name__}: {exc}"
