"""Running one step attempt: assignment, the step itself, logs, keepalive, and the result."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import inspect
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from eventstore import Append, AppendError, AppendRefusedError, append
from schemas import encode, encode_json
from schemas.messages import StepAssigned, StepLog, StepResult, Task
from schemas.subjects import Scope
from worker.context import Context
from worker.errors import NonRetryableError

log = logging.getLogger(__name__)

RUN_ENDED = "run ended"
SHUTDOWN = "worker shutting down"


class Attempt:
    """One delivery of one task to this worker."""

    def __init__(
        self,
        nc: NATS,
        scope: Scope,
        worker_id: str,
        worker_name: str,
        task: Task,
        msg: Msg,
        *,
        keepalive_s: float,
        max_msg_bytes: int,
    ) -> None:
        self.nc = nc
        self.scope = scope
        self.worker_id = worker_id
        self.worker_name = worker_name
        self.task = task
        self.msg = msg
        self.delivery = int(msg.metadata.num_delivered)
        self.keepalive_s = keepalive_s
        self.max_msg_bytes = max_msg_bytes
        self.key = f"{task.run_id}:{task.step}:{task.attempt}:{self.delivery}"
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def sink(line: str) -> None:
            loop.call_soon_threadsafe(self._lines.put_nowait, line)

        self.context = Context(task, self.delivery, sink)

    def stale(self, now: dt.datetime) -> bool:
        """The dispatcher already failed this step for not being picked up in time. Only a
        first delivery can be: a redelivered task was picked up before, in time."""
        deadline = self.task.schedule_deadline
        return (
            self.delivery == 1
            and deadline is not None
            and dt.datetime.fromisoformat(deadline) < now
        )

    async def run(self, fn: Callable[..., Any], instance: object, pool: Executor) -> None:
        t = self.task
        assigned = StepAssigned(
            run_id=t.run_id,
            step=t.step,
            attempt=t.attempt,
            delivery=self.delivery,
            worker_id=self.worker_id,
            worker_name=self.worker_name,
        )
        await self.append("assigned", encode(assigned), f"{self.key}:assigned")
        writer = asyncio.create_task(self._write_logs())
        keepalive = asyncio.create_task(self._keepalive())
        try:
            result = await self._execute(fn, instance, pool)
        except asyncio.CancelledError:
            reason = self.context.cancel_reason or SHUTDOWN
            self.context._set_cancelled(reason)
            await asyncio.shield(self._finish_cancelled(reason, writer, keepalive))
            raise
        keepalive.cancel()
        await self._close_logs(writer)
        await self._report(result)
        await self.msg.ack()

    async def _execute(
        self, fn: Callable[..., Any], instance: object, pool: Executor
    ) -> StepResult:
        t = self.task
        try:
            output = await self._call(fn, instance, pool)
            size = len(encode_json(output))
            if size > self.max_msg_bytes - 4096:
                raise NonRetryableError(
                    f"step output is too large ({size} bytes; the stream takes messages up "
                    f"to {self.max_msg_bytes} bytes)"
                )
            return self._result(ok=True, output=output)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing step is a result, not a worker crash
            self.context._set_cancelled("failed")
            return self._result(
                ok=False,
                error=describe(exc, t.timeout_s),
                non_retryable=isinstance(exc, NonRetryableError),
            )

    async def _call(self, fn: Callable[..., Any], instance: object, pool: Executor) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await asyncio.wait_for(fn(instance, self.context), self.task.timeout_s)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(pool, functools.partial(fn, instance, self.context))
        return await asyncio.wait_for(future, self.task.timeout_s)

    async def _finish_cancelled(
        self, reason: str, writer: asyncio.Task[None], keepalive: asyncio.Task[None]
    ) -> None:
        """Record how the attempt ended, then settle the task: a run that ended is done
        (ack); on shutdown the task goes back at once to another worker (nak)."""
        keepalive.cancel()
        await self._close_logs(writer)
        handed_back = reason == SHUTDOWN
        error = (
            "handed back: the worker shut down before finishing"
            if handed_back
            else "cancelled: the run ended while this step was running"
        )
        result = self._result(ok=False, error=error, handed_back=handed_back)
        with contextlib.suppress(AppendError, nats.errors.Error):
            await self.append("result", encode(result), f"{self.key}:result", retry=False)
        with contextlib.suppress(nats.errors.Error):
            await (self.msg.nak() if handed_back else self.msg.ack())

    def _result(
        self,
        *,
        ok: bool,
        output: Any = None,
        error: str | None = None,
        non_retryable: bool = False,
        handed_back: bool = False,
    ) -> StepResult:
        t = self.task
        return StepResult(
            run_id=t.run_id,
            step=t.step,
            attempt=t.attempt,
            delivery=self.delivery,
            worker_id=self.worker_id,
            ok=ok,
            output=output,
            error=error,
            non_retryable=non_retryable,
            handed_back=handed_back,
        )

    async def _report(self, result: StepResult) -> None:
        await self.append("result", encode(result), f"{self.key}:result")

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            with contextlib.suppress(nats.errors.Error):
                await self.msg.in_progress()

    async def _write_logs(self) -> None:
        n = 0
        t = self.task
        while (line := await self._lines.get()) is not None:
            n += 1
            entry = StepLog(
                run_id=t.run_id,
                step=t.step,
                attempt=t.attempt,
                delivery=self.delivery,
                line=line[:8192],
            )
            await self.append("log", encode(entry), f"{self.key}:log:{n}")

    async def _close_logs(self, writer: asyncio.Task[None]) -> None:
        self._lines.put_nowait(None)
        await writer

    async def append(self, kind: str, body: bytes, msg_id: str, *, retry: bool = True) -> None:
        """Append to the run's history until it is in the log: a result is never dropped for
        a NATS hiccup. A permanent refusal (too large) is raised, not retried."""
        subject = self.scope.run(self.task.run_id, kind)
        delay = 0.1
        while True:
            try:
                await append(self.nc, Append(subject, body, msg_id))
                return
            except AppendRefusedError as exc:
                if exc.permanent or not retry:
                    raise
                failure: AppendError = exc
            except AppendError as exc:
                if not retry:
                    raise
                failure = exc
            log.warning("append to %s failed (%s); retrying in %.1fs", subject, failure, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"TimeoutError: step timed out after {timeout_s:g}s"
    if isinstance(exc, TypeError) and str(exc).startswith("not JSON-serializable"):
        return f"step output is {exc}"
    return f"{type(exc).__name__}: {exc}"
