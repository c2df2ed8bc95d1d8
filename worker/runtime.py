"""The worker runtime: pull tasks for free slots, run steps, report results."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import signal
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from eventstore import (
    Append,
    AppendError,
    ConfigError,
    TaskConsumerSettings,
    append,
    ensure_task_consumer,
)
from schemas import encode, encode_json, stream_name
from schemas.codec import DecodeError, decode_as
from schemas.messages import StepAssigned, StepLog, StepResult, Task
from worker.context import Context
from worker.declare import WorkflowSpec, spec_of
from worker.pull import Slots, TaskPuller

if TYPE_CHECKING:
    from worker.client import Hatchet

log = logging.getLogger(__name__)

DEFAULT_CONSUMER = TaskConsumerSettings()


class Worker:
    """``hatchet.worker(name, max_runs)``: runs the steps of the workflows registered on it."""

    def __init__(
        self,
        hatchet: Hatchet,
        name: str,
        *,
        max_runs: int = 100,
        grace_s: float = 30.0,
        consumer: TaskConsumerSettings = DEFAULT_CONSUMER,
    ) -> None:
        self.hatchet = hatchet
        self.name = name
        self.id = uuid.uuid4().hex[:12]
        self.max_runs = max_runs
        self.grace_s = grace_s
        self.consumer = consumer
        self.workflows: dict[str, tuple[WorkflowSpec, object]] = {}
        self.completed = 0
        self._slots: Slots | None = None
        self._nc: NATS | None = None
        self._pullers: list[TaskPuller] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool = ThreadPoolExecutor(max_workers=max_runs, thread_name_prefix=f"step-{name}")
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()

    def register_workflow(self, workflow: object) -> None:
        spec = spec_of(workflow)
        name = spec.definition.name
        known = self.workflows.get(name)
        if known and known[0].definition.version != spec.definition.version:
            raise ConfigError(f"workflow {name} is already registered with another definition")
        self.workflows[name] = (spec, workflow)

    @property
    def slots(self) -> Slots:
        if self._slots is None:
            raise RuntimeError("the worker has not started")
        return self._slots

    def start(self) -> None:
        """Run until SIGINT or SIGTERM, then shut down gracefully. A second signal exits."""
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        asyncio.run(self._main())

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)

        def on_signal(sig: signal.Signals) -> None:
            if self._stop.is_set():
                log.warning("worker %s: second %s, exiting now", self.name, sig.name)
                os._exit(1)
            log.info(
                "worker %s: %s, shutting down (grace %.0fs)", self.name, sig.name, self.grace_s
            )
            self._stop.set()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await self.async_start()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def async_start(self) -> None:
        """Register the workflows, take work until :meth:`shutdown`, then drain."""
        if not self.workflows:
            raise ConfigError(f"worker {self.name} has no workflows: call register_workflow first")
        self._stop = asyncio.Event()
        self._slots = Slots(self.max_runs)
        settings = self.hatchet.settings
        self._nc = nc = await self.hatchet.connect(f"natchet-worker:{self.name}:{self.id}")
        try:
            js = nc.jetstream()
            stream = stream_name(settings.tenant)
            await self._wait_for_stream(stream)
            for spec, instance in self.workflows.values():
                wf = spec.definition
                consumer = await ensure_task_consumer(js, settings.scope, wf.name, self.consumer)
                subject = settings.scope.workflow(wf.name)
                # The dedup id names the namespace: alice and bob may register the same workflow.
                msg_id = f"workflow:{settings.namespace}:{wf.name}:{wf.version}"
                await append(nc, Append(subject, encode(wf), msg_id))
                run = functools.partial(self._spawn, spec, instance)
                self._pullers.append(
                    TaskPuller(nc, stream, consumer, self._slots, run, share=len(self.workflows))
                )
            pulling = [asyncio.create_task(p.run()) for p in self._pullers]
            log.info(
                "worker %s (%s) started: %s, max_runs=%d, tenant %s namespace %s",
                self.name,
                self.id,
                ", ".join(self.workflows),
                self.max_runs,
                settings.tenant,
                settings.namespace,
            )
            self.ready.set()
            await self._stop.wait()
            await self._drain(pulling)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(nats.errors.Error):
                await nc.drain()

    async def _wait_for_stream(self, stream: str) -> None:
        js = self._nc.jetstream() if self._nc else None
        assert js is not None
        while True:
            try:
                await js.stream_info(stream)
                return
            except nats.js.errors.NotFoundError:
                log.warning(
                    "stream %s does not exist yet: is the engine running (`natchet dev` or "
                    "`natchet engine`)? retrying",
                    stream,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 2.0)
            if self._stop.is_set():
                raise ConfigError(f"stream {stream} does not exist")

    async def _drain(self, pulling: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*(p.stop() for p in self._pullers))
        for task in pulling:
            task.cancel()
        await asyncio.gather(*pulling, return_exceptions=True)
        if self._tasks:
            log.info(
                "worker %s: waiting up to %.0fs for %d running steps",
                self.name,
                self.grace_s,
                len(self._tasks),
            )
            _done, pending = await asyncio.wait(self._tasks, timeout=self.grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        log.info("worker %s stopped after %d steps", self.name, self.completed)

    async def shutdown(self) -> None:
        self._stop.set()

    def _spawn(self, spec: WorkflowSpec, instance: object, msg: Msg) -> None:
        task = asyncio.create_task(self._execute(spec, instance, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, spec: WorkflowSpec, instance: object, msg: Msg) -> None:
        try:
            try:
                task = decode_as(Task, Task.KIND, msg.data)
            except DecodeError as exc:
                log.error(
                    "dropping malformed task at seq %d: %s", msg.metadata.sequence.stream, exc
                )
                await msg.term()
                return
            fn = spec.functions.get(task.step)
            if fn is None:
                await msg.term()
                log.error("task for unknown step %s.%s", task.workflow, task.step)
                return
            await self._attempt(task, fn, instance, msg)
        except asyncio.CancelledError:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()  # hand it back at once: another worker takes it
            raise
        finally:
            self.slots.finish()

    async def _attempt(
        self, task: Task, fn: Callable[..., Any], instance: object, msg: Msg
    ) -> None:
        assert self._nc is not None
        scope = self.hatchet.settings.scope
        delivery = int(msg.metadata.num_delivered)
        key = f"{task.run_id}:{task.step}:{task.attempt}:{delivery}"
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def sink(line: str) -> None:
            loop.call_soon_threadsafe(lines.put_nowait, line)

        ctx = Context(task, delivery, sink)
        assigned = StepAssigned(
            run_id=task.run_id,
            step=task.step,
            attempt=task.attempt,
            delivery=delivery,
            worker_id=self.id,
            worker_name=self.name,
        )
        await self._append(scope.run(task.run_id, "assigned"), encode(assigned), f"{key}:assigned")
        writer = asyncio.create_task(self._write_logs(task, delivery, lines))
        keepalive = asyncio.create_task(self._keepalive(msg))
        try:
            output = await self._call(fn, instance, ctx, task.timeout_s)
            encode_json(output)
            result = StepResult(
                run_id=task.run_id,
                step=task.step,
                attempt=task.attempt,
                delivery=delivery,
                worker_id=self.id,
                ok=True,
                output=output,
            )
        except asyncio.CancelledError:
            ctx._set_cancelled()
            raise
        except Exception as exc:  # a failing step is a result, not a worker crash
            ctx._set_cancelled()
            result = StepResult(
                run_id=task.run_id,
                step=task.step,
                attempt=task.attempt,
                delivery=delivery,
                worker_id=self.id,
                ok=False,
                error=describe(exc, task.timeout_s),
            )
        finally:
            keepalive.cancel()
            lines.put_nowait(None)
            await writer
        await self._append(scope.run(task.run_id, "result"), encode(result), f"{key}:result")
        await msg.ack()
        self.completed += 1

    async def _call(
        self, fn: Callable[..., Any], instance: object, ctx: Context, timeout_s: float
    ) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await asyncio.wait_for(fn(instance, ctx), timeout_s)
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(
            loop.run_in_executor(self._pool, functools.partial(fn, instance, ctx)), timeout_s
        )

    async def _keepalive(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.consumer.ack_wait_s / 3)
            with contextlib.suppress(nats.errors.Error):
                await msg.in_progress()

    async def _write_logs(
        self, task: Task, delivery: int, lines: asyncio.Queue[str | None]
    ) -> None:
        scope = self.hatchet.settings.scope
        n = 0
        while (line := await lines.get()) is not None:
            n += 1
            entry = StepLog(
                run_id=task.run_id,
                step=task.step,
                attempt=task.attempt,
                delivery=delivery,
                line=line,
            )
            msg_id = f"{task.run_id}:{task.step}:{task.attempt}:{delivery}:log:{n}"
            await self._append(scope.run(task.run_id, "log"), encode(entry), msg_id)

    async def _append(self, subject: str, body: bytes, msg_id: str) -> None:
        """Append until it is in the log: a result is never dropped for a NATS hiccup."""
        assert self._nc is not None
        delay = 0.1
        while True:
            try:
                await append(self._nc, Append(subject, body, msg_id))
                return
            except AppendError as exc:
                log.warning("append to %s failed (%s); retrying in %.1fs", subject, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"TimeoutError: step timed out after {timeout_s:g}s"
    if isinstance(exc, TypeError) and str(exc).startswith("not JSON-serializable"):
        return f"step output is {exc}"
    return f"{type(exc).__name__}: {exc}"
