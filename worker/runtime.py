"""The worker runtime: register, pull tasks for free slots, run them, shut down cleanly.

A :class:`Worker` has the shape of every natchet service: ``await worker.run()`` (Hatchet's
name: ``async_start``) serves until ``await worker.shutdown()``, which returns once the
worker has stopped and may be called any number of times, from any task but run's own;
``async with worker:`` runs it in the background, entered once it takes work. Signals and
process exit belong to the entry point, ``worker.start()`` (:mod:`worker.entry`). A worker
runs once: after it stopped, make a new one.

Shutdown, in order: the heartbeat says ``STOPPING`` (and keeps beating); the pullers stop
asking for tasks and hand back what still arrives; running steps get ``grace_s`` to finish;
the rest are cancelled and hand their tasks back (a ``handed_back`` result, then a nak);
sync steps' threads are waited for; the last heartbeat says ``STOPPED``; the connection is
drained and closed. Cancelling ``run()`` skips the grace but does the rest, so nothing the
worker started outlives it; ``shutdown()`` does that itself when a graceful stop takes
``STOP_MARGIN_S`` longer than the grace.

While it serves, its vitals (:mod:`worker.vitals`) are ticked from the loop and judged by a
watchdog thread; ``/health`` and ``/metrics`` are served from another thread when enabled
(:mod:`worker.healthserver`). A refusal from the engine (a wire protocol it cannot serve)
stops the worker gracefully; NATS lost past its bound stops it at once; either way
``run()`` then raises :class:`~worker.errors.WorkerFatalError`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Self

from eventstore import (
    ConfigError,
    Connection,
    Message,
    Slots,
    TaskPuller,
    close,
    connect,
    directed_consumer_name,
    logs,
    subscribe,
    task_consumer_name,
)
from eventstore.connection import CONNECTION_LIMIT, is_auth_error
from schemas import WorkerRefused
from schemas.codec import DecodeError, decode_as
from schemas.labels import LabelValue
from schemas.subjects import tasks_stream_name
from worker import version
from worker.declare import WorkflowSpec, spec_of
from worker.ended import RunEnds
from worker.entry import run_until_signalled
from worker.errors import WorkerFatalError
from worker.healthserver import HealthServer
from worker.heartbeat import Heartbeat
from worker.inflight import InFlight
from worker.intake import Intake
from worker.labels import WorkerContext, check_labels, placed
from worker.metrics import WorkerMetrics
from worker.register import declare_crons, register
from worker.settings import WorkerSettings
from worker.settle import settle, waiting_in
from worker.vitals import TICK_S, Exit, Fatal, Vitals
from worker.watchdog import Watchdog

log = logging.getLogger(__name__)

# connect(name, on_error=...): the worker's connection, its errors told to on_error
Connect = Callable[..., Awaitable[Connection]]
# Refusals of the token in a row (nats-py retries every 0.5 s) before the worker gives up.
AUTH_REFUSALS = 3
STOP_MARGIN_S = 20.0  # past the grace: pullers' last requests, hand-backs, threads, closing
FLUSH_S = 5.0  # cancelled steps' last writes, before the worker gives up on them


class Worker:
    """``hatchet.worker(name, max_runs)``: runs the steps of the workflows registered on it.
    ``connect`` opens its NATS connection (given the connection's name); by default from
    ``settings.client``."""

    def __init__(
        self,
        settings: WorkerSettings,
        connect: Connect | None = None,
        labels: Mapping[str, LabelValue] | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.id = uuid.uuid4().hex[:12]
        # Its labels (issue 15): sent in every heartbeat, changed by ``ctx.worker``.
        self.worker_context = WorkerContext(self.id, check_labels(labels))
        self.max_runs = settings.max_runs
        self._connect = connect or self._connect_with_settings
        self.workflows: dict[str, tuple[WorkflowSpec, object]] = {}
        self.ready = asyncio.Event()  # registered and taking work
        self.stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopped.set()
        self._runner: asyncio.Task[None] | None = None
        self._background: asyncio.Task[None] | None = None
        self._slots: Slots | None = None
        self._intake: Intake | None = None
        self.vitals = Vitals(settings.health)
        self.metrics: WorkerMetrics | None = None
        self.health: HealthServer | None = None  # while serving, when enabled
        self.failure: Fatal | None = None  # the critical failure that stopped it
        # Called from the watchdog's thread on a critical failure (NATS lost, the loop
        # blocked, past their bounds). None: the worker cancels itself, and run() raises
        # WorkerFatalError. The entry point (start()) ends the process instead.
        self.on_fatal: Callable[[Fatal], None] | None = None
        self._auth_refusals = 0  # the server's refusals of the token since last connected

    async def _connect_with_settings(
        self, name: str, *, on_error: Callable[[Exception], Awaitable[None]] | None = None
    ) -> Connection:
        return await connect(self.settings.client.nats_options(name), on_error=on_error)

    async def _nats_error(self, exc: Exception) -> None:
        """What the connection reports once up. A server that refuses the token on every
        reconnect (revoked, expired) will go on refusing it: after a few in a row the worker
        ends, saying so (exit 77), rather than waiting out the bound for a lost NATS."""
        if not is_auth_error(exc) or CONNECTION_LIMIT in str(exc).lower():
            log.warning("worker %s: nats: %s", self.name, exc)
            return
        log.error("worker %s: nats: %s", self.name, exc)
        self._auth_refusals += 1
        if self._auth_refusals >= AUTH_REFUSALS:
            reason = (
                f"the NATS server refuses this worker's token ({exc}): it was revoked or has "
                "expired; give the worker a valid HATCHET_CLIENT_TOKEN"
            )
            self._fail(Fatal(Exit.NO_PERMISSION, reason))

    def register_workflow(self, workflow: object) -> None:
        spec = spec_of(workflow)
        name = spec.definition.name
        known = self.workflows.get(name)
        if known and known[0].definition.version != spec.definition.version:
            raise ConfigError(f"workflow {name} is already registered with another definition")
        self.workflows[name] = (spec, workflow)

    def register_workflows(self, workflows: Iterable[object]) -> None:
        for workflow in workflows:
            self.register_workflow(workflow)

    @property
    def slots(self) -> Slots:
        if self._slots is None:
            raise RuntimeError("the worker has not started")
        return self._slots

    @property
    def completed(self) -> int:
        """Steps this worker ran to a result (succeeded or failed)."""
        return self._intake.completed if self._intake is not None else 0

    @property
    def handed_back(self) -> int:
        """Tasks this worker gave back unfinished when it stopped, for other workers."""
        return self._intake.handed_back if self._intake is not None else 0

    @property
    def running(self) -> bool:
        return not self._stopped.is_set()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Run until SIGINT or SIGTERM, then shut down gracefully. A second signal exits."""
        run_until_signalled(self, self.settings.grace_s)

    async def async_start(self) -> None:
        """Hatchet's name for :meth:`run`."""
        await self.run()

    async def run(self) -> None:
        """Register the workflows, take work until :meth:`shutdown`, then stop."""
        if self._runner is not None:
            raise RuntimeError(f"worker {self.name} is running or has run: make a new one")
        runner = self._runner = asyncio.current_task()
        self._stopped.clear()
        try:
            if not self.stopping.is_set():
                scope = self.settings.client.scope
                fields = {"tenant": scope.tenant, "namespace": scope.namespace}
                with logs.bound(**fields, worker_id=self.id, worker=self.name):
                    await self._serve()
        except asyncio.CancelledError:
            if self.failure is None or runner is None:
                raise
            runner.uncancel()  # cancelled by _fail: the failure is the news
        finally:
            self._stopped.set()
        if self.failure is not None:
            raise WorkerFatalError(self.failure.reason, self.failure.code)

    async def shutdown(self) -> None:
        """Stop, and return once stopped (cancelling :meth:`run` if a graceful stop takes
        ``STOP_MARGIN_S`` past the grace). Idempotent."""
        self.stopping.set()
        if not self.running:
            return
        deadline = self.settings.grace_s + STOP_MARGIN_S
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped.wait()), deadline)
        except TimeoutError:
            log.warning(
                "worker %s: not stopped after %.0fs, cancelling; its tasks wait in: %s",
                self.name,
                deadline,
                "; ".join(waiting_in()) or "none",
            )
            if self._runner is not None:
                self._runner.cancel()
            await self._stopped.wait()

    async def __aenter__(self) -> Self:
        """Run in the background; entered once registered and taking work."""
        runner = self._background = asyncio.create_task(self.run(), name=f"worker:{self.name}")
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await self.shutdown()
            raise
        finally:
            ready.cancel()
        if not self.ready.is_set():
            runner.result()  # why it did not start
            raise RuntimeError(f"worker {self.name} stopped before it took work")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
        runner = self._background
        if et is None and runner is not None and runner.done() and not runner.cancelled():
            runner.result()  # what the worker died of, if it did

    # -- serving --------------------------------------------------------------------------

    async def _serve(self) -> None:
        if not self.workflows:
            raise ConfigError(f"worker {self.name} has no workflows: call register_workflow first")
        s = self.settings
        slots = self._slots = Slots(s.max_runs)
        metrics = self.metrics = self._new_metrics(slots)
        if s.health.enabled:
            self.health = HealthServer(
                self.vitals,
                metrics.exposition,
                self._about(),
                host=s.health.bind_address,
                port=s.health.port,
            )
        held: list[Connection] = []
        ticker = asyncio.create_task(self._tick(held), name=f"vitals:{self.name}")
        watchdog = Watchdog(self.vitals, self.name, self._fatal_from_thread())
        watchdog.start()
        if self.health is not None:
            self.health.start()
        try:
            conn = await self._connect(
                f"natchet-worker:{self.name}:{self.id}", on_error=self._nats_error
            )
            held.append(conn)
            self.vitals.tick(conn.is_connected)  # now, not at the next tick
            await self._serve_on(conn, slots, metrics)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            await asyncio.to_thread(watchdog.stop)
            if self.health is not None:
                await asyncio.to_thread(self.health.stop)
                self.health = None

    async def _serve_on(self, conn: Connection, slots: Slots, metrics: WorkerMetrics) -> None:
        s = self.settings
        closing = asyncio.Event()
        ends = RunEnds(conn)
        intake = self._intake = Intake(
            conn, s, self.id, self.workflows, closing, ends, metrics, self.worker_context
        )
        inflight = InFlight(slots, intake.take, f"{self.name}:{self.id}")
        steps = [
            f"{wf}:{step}" for wf, (spec, _) in self.workflows.items() for step in spec.functions
        ]
        labels = self.worker_context
        # Only a worker with a step the engine places (desired labels, a sticky workflow)
        # takes directed tasks: the others keep all their slots for their queue groups.
        directed = any(placed(spec.definition) for spec, _ in self.workflows.values())
        heartbeat = Heartbeat(
            conn,
            s.scope,
            self.id,
            self.name,
            steps,
            s.max_runs,
            lambda: slots.running,
            labels.labels,
            directed=directed,
        )
        labels.on_change(heartbeat.now, asyncio.get_running_loop())
        pulling: list[asyncio.Task[None]] = []
        refusals = await subscribe(conn, s.scope.worker_refused(self.id), self._on_refused)
        try:
            definitions = [spec.definition for spec, _ in self.workflows.values()]
            await register(conn, s, definitions, self.stopping)
            for name, (spec, _) in self.workflows.items():
                # Also with none: crons it declared before and no longer does go.
                await declare_crons(conn, s.scope, name, spec.crons)
            stream = tasks_stream_name(s.client.tenant)
            pullers = [
                TaskPuller(
                    conn,
                    stream,
                    task_consumer_name(s.scope, wf),
                    slots,
                    inflight.spawn,
                )
                for wf in self.workflows
            ]
            if directed:  # tasks the engine placed on this worker: the same slots
                pullers.append(
                    TaskPuller(
                        conn,
                        stream,
                        directed_consumer_name(s.scope, self.id),
                        slots,
                        inflight.spawn,
                    )
                )

            async def on_run_ended(msg: Message) -> None:
                ends.heard(msg.subject.split(".")[-2])
                await inflight.on_run_ended(msg)

            ended = await subscribe(conn, f"{s.scope.prefix}.runs.*.finished", on_run_ended)
            ends.listening()
            heartbeat.start()
            pulling = [asyncio.create_task(p.run(), name=f"pull:{p.next_subject}") for p in pullers]
            log.info(
                "worker %s (%s) started: %s, max_runs=%d, tenant %s namespace %s",
                self.name,
                self.id,
                ", ".join(self.workflows),
                s.max_runs,
                s.client.tenant,
                s.client.namespace,
            )
            self.ready.set()
            await self.stopping.wait()
            heartbeat.stopping()
            await self._drain(pullers, pulling, inflight)
            await ended.unsubscribe()
        finally:
            await refusals.unsubscribe()
            await settle(self._close(conn, pulling, inflight, heartbeat, closing))

    # -- vitals and critical failures ----------------------------------------------------

    def _new_metrics(self, slots: Slots) -> WorkerMetrics:
        c = self.settings.client
        return WorkerMetrics(
            tenant=c.tenant,
            namespace=c.namespace,
            worker=self.name,
            worker_id=self.id,
            sdk_version=version.sdk_version(),
            protocol=version.announced_protocol(),
            max_runs=self.max_runs,
            running=lambda: slots.running,
            vitals=self.vitals,
        )

    def _about(self) -> dict[str, object]:
        c = self.settings.client
        return {
            "worker": self.name,
            "worker_id": self.id,
            "tenant": c.tenant,
            "namespace": c.namespace,
            "sdk_version": version.sdk_version(),
            "protocol": version.announced_protocol(),
        }

    async def _tick(self, held: list[Connection]) -> None:
        """The loop's pulse for the watchdog, and whether NATS is connected (not yet
        connected counts as lost)."""
        while True:
            connected = bool(held) and held[0].is_connected
            self.vitals.tick(connected)
            if connected:
                self._auth_refusals = 0
            await asyncio.sleep(TICK_S)

    def _fatal_from_thread(self) -> Callable[[Fatal], None]:
        loop = asyncio.get_running_loop()

        def on_fatal(fatal: Fatal) -> None:
            if self.on_fatal is not None:
                self.on_fatal(fatal)
            elif fatal.code == Exit.LOOP_BLOCKED:
                # As a library, the process is the caller's: a loop that comes back serves on.
                log.error("worker %s: %s", self.name, fatal.reason)
            else:
                loop.call_soon_threadsafe(self._fail, fatal)

        return on_fatal

    def _fail(self, fatal: Fatal) -> None:
        """A critical failure: stop now, without the grace (NATS is gone, or the loop was
        stuck); :meth:`run` raises :class:`WorkerFatalError`."""
        if self.failure is not None or not self.running:
            return
        log.error("worker %s: %s", self.name, fatal.reason)
        self.failure = fatal
        self.stopping.set()
        if self._runner is not None:
            self._runner.cancel()

    async def _on_refused(self, msg: Message) -> None:
        """The engine refuses this worker: stop (gracefully), and fail with its reason."""
        try:
            refused = decode_as(WorkerRefused, WorkerRefused.KIND, msg.data)
        except DecodeError as exc:
            log.warning("worker %s: unreadable refusal from the engine: %s", self.name, exc)
            return
        if self.failure is not None:
            return
        log.error("worker %s: %s", self.name, refused.reason)
        self.vitals.refused = refused.reason
        self.failure = Fatal(Exit.REFUSED, refused.reason)
        self.stopping.set()

    async def _drain(
        self, pullers: list[TaskPuller], pulling: list[asyncio.Task[None]], inflight: InFlight
    ) -> None:
        """Stop taking work, let running steps finish until the grace period ends, hand the
        rest back so another worker takes it at once."""
        await asyncio.gather(*(p.stop() for p in pullers))
        for task in pulling:
            task.cancel()
        await asyncio.gather(*pulling, return_exceptions=True)
        if len(inflight):
            log.info(
                "worker %s: waiting up to %.0fs for %d running steps",
                self.name,
                self.settings.grace_s,
                len(inflight),
            )
            if await inflight.wait(self.settings.grace_s):
                inflight.cancel()
                await inflight.wait(FLUSH_S)

    async def _close(
        self,
        conn: Connection,
        pulling: list[asyncio.Task[None]],
        inflight: InFlight,
        heartbeat: Heartbeat,
        closing: asyncio.Event,
    ) -> None:
        """End whatever is left (after a drain, only sync steps' threads may be), say
        ``STOPPED``, close the connection."""
        for task in pulling:
            task.cancel()
        await asyncio.gather(*pulling, return_exceptions=True)
        inflight.cancel()
        if await inflight.wait(FLUSH_S):
            closing.set()  # their writes give up; the server redelivers after ack_wait
            await inflight.wait(None)
        closing.set()
        stuck = await inflight.threads_ended(FLUSH_S)
        if stuck:
            log.warning("worker %s: %d step threads have not returned", self.name, stuck)
        await heartbeat.stop()
        await close(conn)
        log.info(
            "worker %s stopped: %d steps finished, %d handed back to other workers",
            self.name,
            self.completed,
            self.handed_back,
        )
