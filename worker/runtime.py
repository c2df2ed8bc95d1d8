"""The worker runtime: register, pull tasks for free slots, run them, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from eventstore import (
    Append,
    AppendError,
    AppendRefusedError,
    ConfigError,
    NatchetError,
    PermissionDeniedError,
    TaskConsumerSettings,
    append,
    direct_last,
    task_consumer_name,
)
from schemas import WorkerStatus, encode
from schemas.codec import DecodeError, decode_as, decode_run_message
from schemas.messages import Task
from schemas.subjects import tasks_stream_name
from worker.declare import WorkflowSpec, spec_of
from worker.execute import RUN_ENDED, Attempt
from worker.heartbeat import Heartbeat
from worker.pull import Slots, TaskPuller

if TYPE_CHECKING:
    from worker.client import Hatchet

log = logging.getLogger(__name__)

DEFAULT_CONSUMER = TaskConsumerSettings()
VERSION_RETRY_S = 2.0


def default_grace_s() -> float:
    return float(os.environ.get("NATCHET_WORKER_GRACE_SECONDS", "30"))


class Worker:
    """``hatchet.worker(name, max_runs)``: runs the steps of the workflows registered on it."""

    def __init__(
        self,
        hatchet: Hatchet,
        name: str,
        *,
        max_runs: int = 100,
        grace_s: float | None = None,
        consumer: TaskConsumerSettings = DEFAULT_CONSUMER,
    ) -> None:
        self.hatchet = hatchet
        self.name = name
        self.id = uuid.uuid4().hex[:12]
        self.max_runs = max_runs
        self.grace_s = default_grace_s() if grace_s is None else grace_s
        self.consumer = consumer
        self.workflows: dict[str, tuple[WorkflowSpec, object]] = {}
        self.completed = 0
        self.handed_back = 0
        self._slots: Slots | None = None
        self._nc: NATS | None = None
        self._max_msg_bytes = 1024 * 1024
        self._pullers: list[TaskPuller] = []
        self._running: dict[asyncio.Task[None], Attempt] = {}
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
                os._exit(130)
            log.info(
                "worker %s: %s, shutting down (grace %.0fs; again to exit now)",
                self.name,
                sig.name,
                self.grace_s,
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
        scope = settings.scope
        self._nc = nc = await self.hatchet.connect(f"natchet-worker:{self.name}:{self.id}")
        self._max_msg_bytes = nc.max_payload
        heartbeat: Heartbeat | None = None
        try:
            stream = tasks_stream_name(settings.tenant)
            for spec, instance in self.workflows.values():
                wf = spec.definition
                # The engine creates the workflow's queue group when it reads this.
                # The dedup id names the namespace: alice and bob may register the same workflow.
                msg_id = f"workflow:{settings.namespace}:{wf.name}:{wf.version}"
                await self._register(Append(scope.workflow(wf.name), encode(wf), msg_id))
                run = functools.partial(self._spawn, spec, instance)
                consumer = task_consumer_name(scope, wf.name)
                self._pullers.append(
                    TaskPuller(nc, stream, consumer, self._slots, run, share=len(self.workflows))
                )
            ended = await nc.subscribe(f"{scope.prefix}.runs.*.finished", cb=self._on_run_ended)
            actions = [
                f"{wf}:{s}" for wf, (spec, _) in self.workflows.items() for s in spec.functions
            ]
            heartbeat = Heartbeat(
                nc, scope, self.id, self.name, actions, self.max_runs, lambda: len(self._running)
            )
            heartbeat.start()
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
            await heartbeat.stop(WorkerStatus.STOPPING)
            await self._drain(pulling)
            with contextlib.suppress(nats.errors.Error):
                await ended.unsubscribe()
            await heartbeat.stop(WorkerStatus.STOPPED)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(nats.errors.Error):
                await nc.drain()

    async def _register(self, item: Append) -> None:
        """Append a workflow registration, waiting (and saying so) while the tenant's log is
        not there yet: the engine sets a tenant up when it starts or creates it."""
        assert self._nc is not None
        while True:
            try:
                await append(self._nc, item)
                return
            except AppendError as exc:
                if isinstance(exc, PermissionDeniedError) or (
                    isinstance(exc, AppendRefusedError) and exc.permanent
                ):
                    raise
                log.warning(
                    "worker %s: cannot register (%s): is the engine running (`natchet dev` or "
                    "`natchet engine`)? retrying",
                    self.name,
                    exc,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 2.0)
            if self._stop.is_set():
                raise ConfigError(f"worker {self.name} stopped before it could register")

    async def _drain(self, pulling: list[asyncio.Task[None]]) -> None:
        """Stop taking work, let running steps finish until the grace period ends, hand the
        rest back so another worker takes it at once."""
        await asyncio.gather(*(p.stop() for p in self._pullers))
        for task in pulling:
            task.cancel()
        await asyncio.gather(*pulling, return_exceptions=True)
        running = list(self._running)
        if running:
            log.info(
                "worker %s: waiting up to %.0fs for %d running steps",
                self.name,
                self.grace_s,
                len(running),
            )
            _done, pending = await asyncio.wait(running, timeout=self.grace_s)
            self.handed_back += len(pending)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        log.info(
            "worker %s stopped: %d steps finished, %d handed back to other workers",
            self.name,
            self.completed,
            self.handed_back,
        )

    async def shutdown(self) -> None:
        self._stop.set()

    async def _on_run_ended(self, msg: Msg) -> None:
        """A run this worker is running a step of ended (cancelled, or failed elsewhere)."""
        run_id = msg.subject.split(".")[-2]
        for task, attempt in list(self._running.items()):
            if attempt.task.run_id == run_id:
                with contextlib.suppress(DecodeError):
                    status = decode_run_message("finished", msg.data).status  # type: ignore[union-attr]
                    log.info(
                        "run %s ended %s: cancelling step %s", run_id, status, attempt.task.step
                    )
                attempt.context._set_cancelled(RUN_ENDED)
                task.cancel()

    async def _run_over(self, task: Task) -> bool:
        """Whether the run already finished (cancelled, say): one direct get of its
        ``finished`` subject. When unsure, run the step: at least once beats never."""
        assert self._nc is not None
        settings = self.hatchet.settings
        subject = settings.scope.run(task.run_id, "finished")
        try:
            return await direct_last(self._nc, settings.tenant, subject) is not None
        except (NatchetError, nats.errors.Error, TimeoutError) as exc:
            log.debug("could not check whether run %s is over: %s", task.run_id, exc)
            return False

    def _spawn(self, spec: WorkflowSpec, instance: object, msg: Msg) -> None:
        task = asyncio.create_task(self._execute(spec, instance, msg))
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self.slots.finish()
        if not task.cancelled() and task.exception() is not None:
            log.error("worker %s: attempt crashed", self.name, exc_info=task.exception())

    async def _execute(self, spec: WorkflowSpec, instance: object, msg: Msg) -> None:
        assert self._nc is not None
        try:
            task = decode_as(Task, Task.KIND, msg.data)
        except DecodeError as exc:
            log.error("dropping malformed task at seq %d: %s", msg.metadata.sequence.stream, exc)
            await msg.term()
            return
        fn = spec.functions.get(task.step)
        if task.workflow_version and task.workflow_version != spec.definition.version:
            log.warning(
                "task %s.%s is for workflow version %s; this worker has %s: leaving it "
                "to a worker with that version",
                task.workflow,
                task.step,
                task.workflow_version,
                spec.definition.version,
            )
            await msg.nak(delay=VERSION_RETRY_S)
            return
        if fn is None:
            log.error("task for unknown step %s.%s", task.workflow, task.step)
            await msg.term()
            return
        attempt = Attempt(
            self._nc,
            self.hatchet.settings.scope,
            self.id,
            self.name,
            task,
            msg,
            keepalive_s=self.consumer.ack_wait_s / 3,
            max_msg_bytes=self._max_msg_bytes,
        )
        if attempt.stale(dt.datetime.now(dt.UTC)) or await self._run_over(task):
            log.warning(
                "dropping task %s.%s of run %s: the run is over, or the step timed out in "
                "the queue",
                task.workflow,
                task.step,
                task.run_id,
            )
            await msg.ack()
            return
        current = asyncio.current_task()
        assert current is not None
        self._running[current] = attempt
        await attempt.run(fn, instance, self._pool)
        self.completed += 1
