"""The ``Hatchet`` client: declare workflows, push events, start runs, make workers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
from pydantic import BaseModel

from eventstore import (
    Append,
    ConfigError,
    Connection,
    NatchetError,
    append,
    connect,
    publish_again,
    tracing,
)
from schemas import encode, encode_json
from schemas.messages import (
    RunCancelRequested,
    RunRequested,
)
from schemas.metadata import metadata_headers
from schemas.priority import HEADER as PRIORITY_HEADER
from schemas.subjects import NAME_RE, SubjectError
from worker import bulk, declare, spawn
from worker import logs as step_logs
from worker.concurrency import ConcurrencyExpression, check_step_concurrency
from worker.durable import require_async
from worker.labels import DesiredWorkerLabel, StickyStrategy, check_labels
from worker.options import metadata_option, priority_option
from worker.outcome import wait_for_run
from worker.portal import Portal
from worker.ratelimits import RateLimit, RateLimitsClient, check_rate_limits
from worker.runtime import Worker
from worker.settings import ClientSettings, WorkerSettings
from worker.spawn import ChildRun
from worker.tasks import Standalone, TaskFn, Workflow
from worker.triggers import CronClient, ScheduledClient

F = TypeVar("F", bound=Callable[..., Any])


@attrs.frozen
class PushedEvent:
    key: str
    event_id: str


class EventClient:
    def __init__(self, hatchet: Hatchet) -> None:
        self._h = hatchet

    async def _push(
        self, key: str, payload: Any, dedup_id: str | None, options: Any
    ) -> PushedEvent:
        scope = self._h.settings.scope
        try:
            subject = scope.event(key)
        except SubjectError as exc:
            raise NatchetError(str(exc)) from None
        meta = metadata_headers(metadata_option(options))
        priority = priority_option(options)
        if priority is not None:
            meta = (*meta, (PRIORITY_HEADER, str(priority)))
        nc = await self._h.portal.nc()
        attributes = {"natchet.tenant": scope.tenant, "natchet.event_key": key}
        with tracing.producing(f"natchet.event {key}", attributes) as headers:
            item = Append(subject, encode_json(payload), dedup_id, headers=(*headers, *meta))
            seq = await append(nc, item)
        return PushedEvent(key=key, event_id=str(seq))

    async def _bulk(self, events: Sequence[Any]) -> list[PushedEvent]:
        nc = await self._h.portal.nc()
        return await bulk.bulk_push(
            nc, self._h.settings.scope, events, lambda key, seq: PushedEvent(key, str(seq))
        )

    def bulk_push(self, events: Sequence[Any]) -> list[PushedEvent]:
        """Publish many events, pipelined, in order: each ``{"key": ..., "payload": ...,
        "additional_metadata": {...}}`` (or an object with those attributes); one
        ``PushedEvent`` per event, in order. Not all-or-nothing: a bad or refused event is
        left out, every other one is published, and ``BulkError`` names the ones left out
        by index (docs/triggers.md)."""
        return self._h.portal.call(self._bulk(events))

    async def aio_bulk_push(self, events: Sequence[Any]) -> list[PushedEvent]:
        return await self._h.portal.run(self._bulk(events))

    async def _replay(self, event_id: str) -> PushedEvent:
        nc = await self._h.portal.nc()
        key, seq = await publish_again(nc, self._h.settings.scope, event_id)
        return PushedEvent(key=key, event_id=str(seq))

    def replay(self, event_id: str) -> PushedEvent:
        """Publish event ``event_id`` of this namespace again (same key, same payload), as a
        new event that names the one it repeats: the workflows listening to its key now
        start new runs. The original and its runs are unchanged."""
        return self._h.portal.call(self._replay(event_id))

    async def aio_replay(self, event_id: str) -> PushedEvent:
        return await self._h.portal.run(self._replay(event_id))

    def push(
        self, key: str, payload: Any, options: Any = None, *, dedup_id: str | None = None
    ) -> PushedEvent:
        """Publish an event (JSON payload) on ``<tenant>.<namespace>.events.<key>``;
        ``options={"additional_metadata": {...}}`` rides along as ``Natchet-Meta-*``
        headers, and onto the runs it starts."""
        return self._h.portal.call(self._push(key, payload, dedup_id, options))

    async def aio_push(
        self, key: str, payload: Any, options: Any = None, *, dedup_id: str | None = None
    ) -> PushedEvent:
        return await self._h.portal.run(self._push(key, payload, dedup_id, options))


class WorkflowRunRef:
    """A started run. ``await ref.result()`` gives ``{step: output}`` once it succeeds."""

    def __init__(self, hatchet: Hatchet, run_id: str) -> None:
        self._h = hatchet
        self.workflow_run_id = run_id

    async def _wait(self) -> dict[str, Any]:
        return await wait_for_run(
            await self._h.portal.nc(), self._h.settings.scope, self.workflow_run_id
        )

    async def result(self) -> dict[str, Any]:
        return await self._h.portal.run(self._wait())

    async def aio_result(self) -> dict[str, Any]:
        """Hatchet v1's name for :meth:`result`."""
        return await self.result()

    def sync_result(self, timeout_s: float | None = None) -> dict[str, Any]:
        return self._h.portal.call(self._wait(), timeout_s)


class AdminClient:
    def __init__(self, hatchet: Hatchet) -> None:
        self._h = hatchet

    async def _run(
        self, workflow: str, payload: Any, run_id: str | None, options: Any = None
    ) -> WorkflowRunRef:
        run_id = run_id or str(uuid.uuid4())
        metadata = metadata_option(options)
        req = RunRequested(
            run_id=run_id,
            workflow=workflow,
            input=payload,
            additional_metadata=metadata,
            priority=priority_option(options),
        )
        encode_json(payload)  # fail here, clearly, on input JSON cannot carry
        nc = await self._h.portal.nc()
        scope = self._h.settings.scope
        attributes = {"natchet.tenant": scope.tenant, "natchet.workflow": workflow}
        with tracing.producing(f"natchet.request {workflow}", attributes) as headers:
            subject = scope.run(run_id, "requested")
            await append(nc, Append(subject, encode(req), f"{run_id}:requested", headers=headers))
        return WorkflowRunRef(self._h, run_id)

    def run_workflow(
        self,
        workflow_name: str,
        input: Any = None,
        options: Any = None,
        *,
        run_id: str | None = None,
    ) -> WorkflowRunRef | ChildRun:
        """Start a run of ``workflow_name`` with ``input``; returns at once with a reference.
        ``options={"additional_metadata": {...}}``: key-value strings the run carries. Inside
        a step (and without ``run_id``), the run is a child of the step (``worker.spawn``)."""
        spawner = spawn.current()
        if spawner is not None and run_id is None:
            metadata, priority = metadata_option(options), priority_option(options)
            return spawner.blocking(spawner.spawn(workflow_name, input, None, metadata, priority))
        return self._h.portal.call(self._run(workflow_name, input, run_id, options))

    async def aio_run_workflow(
        self,
        workflow_name: str,
        input: Any = None,
        options: Any = None,
        *,
        run_id: str | None = None,
    ) -> WorkflowRunRef | ChildRun:
        spawner = spawn.current()
        if spawner is not None and run_id is None:
            metadata, priority = metadata_option(options), priority_option(options)
            return await spawner.spawn(workflow_name, input, None, metadata, priority)
        return await self._h.portal.run(self._run(workflow_name, input, run_id, options))

    async def _bulk(self, runs: Sequence[Any]) -> list[WorkflowRunRef]:
        nc = await self._h.portal.nc()
        scope = self._h.settings.scope
        return await bulk.run_workflows(
            nc, scope, runs, lambda run_id: WorkflowRunRef(self._h, run_id)
        )

    def run_workflows(self, runs: Sequence[Any]) -> list[WorkflowRunRef]:
        """Start many runs, pipelined, in order: each ``{"workflow_name": ..., "input": ...,
        "options": {"additional_metadata": {...}}}`` (or an object with those attributes);
        one reference per run, in order. Not all-or-nothing: a bad or refused item is left
        out, every other run is requested, and ``BulkError`` names the ones left out by
        index (docs/triggers.md)."""
        return self._h.portal.call(self._bulk(runs))

    async def aio_run_workflows(self, runs: Sequence[Any]) -> list[WorkflowRunRef]:
        return await self._h.portal.run(self._bulk(runs))

    async def _replay(self, run_id: str, from_step: str | None) -> WorkflowRunRef:
        if not NAME_RE.match(run_id):
            raise NatchetError(f"{run_id!r} is not a run id")
        new_id = str(uuid.uuid4())
        req = RunRequested.of_replay(new_id, run_id, from_step)
        nc = await self._h.portal.nc()
        subject = self._h.settings.scope.run(new_id, "requested")
        await append(nc, Append(subject, encode(req), f"{new_id}:requested"))
        return WorkflowRunRef(self._h, new_id)

    def replay(self, run_id: str, *, from_step: str | None = None) -> WorkflowRunRef:
        """Run ``run_id`` (ended, of this namespace) again as a new run linked to it, with
        its input and the workflow as registered now; ``from_step``: re-run that step and
        everything downstream of it, keeping the outputs of the steps before it. The
        original's history is unchanged. A replay the engine refuses (the run has not
        ended, the step is not in the workflow, ...) ends the new run FAILED with the
        reason, which ``result()`` raises."""
        return self._h.portal.call(self._replay(run_id, from_step))

    async def aio_replay(self, run_id: str, *, from_step: str | None = None) -> WorkflowRunRef:
        return await self._h.portal.run(self._replay(run_id, from_step))

    def replay_event(self, event_id: str) -> PushedEvent:
        """``hatchet.event.replay``: publish event ``event_id`` again to its triggers."""
        return self._h.event.replay(event_id)

    async def aio_replay_event(self, event_id: str) -> PushedEvent:
        return await self._h.event.aio_replay(event_id)

    async def _cancel(self, run_id: str, reason: str | None) -> None:
        nc = await self._h.portal.nc()
        subject = self._h.settings.scope.run(run_id, "cancel_requested")
        body = encode(RunCancelRequested(run_id=run_id, reason=reason))
        await append(nc, Append(subject, body, f"{run_id}:cancel_requested"))

    def cancel(self, run_id: str, reason: str | None = None) -> None:
        """Cancel a run: running async steps get CancelledError, sync steps see
        ``context.cancelled``; the run ends CANCELLED."""
        self._h.portal.call(self._cancel(run_id, reason))

    async def aio_cancel(self, run_id: str, reason: str | None = None) -> None:
        await self._h.portal.run(self._cancel(run_id, reason))


@attrs.frozen
class ClientConfig:
    """Hatchet's ``ClientConfig``, for what is not read from ``HATCHET_CLIENT_*``:
    ``logger``, whose records (and its children's) logged inside a step go to the step's
    log, as ``context.log`` lines do (pass the root logger to capture them all)."""

    logger: logging.Logger | None = None


class Hatchet:
    """Reads ``HATCHET_CLIENT_*`` from the environment (or ``env``) on first use.
    ``debug=True`` (as in Hatchet's SDK) turns on natchet's debug logging; ``config``
    (:class:`ClientConfig`) names a logger to capture into step logs."""

    def __init__(
        self,
        *,
        settings: ClientSettings | None = None,
        env: Mapping[str, str] | None = None,
        debug: bool = False,
        config: ClientConfig | None = None,
    ) -> None:
        self._settings = settings
        self._env = env
        if debug:
            for name in ("worker", "eventstore"):
                logging.getLogger(name).setLevel(logging.DEBUG)
        if config is not None and config.logger is not None:
            step_logs.capture(config.logger)
        self.portal = Portal(lambda: self.connect("natchet-client"))
        self.event = EventClient(self)
        self.admin = AdminClient(self)
        self.cron = CronClient(self)
        self.scheduled = ScheduledClient(self)
        self.rate_limits = RateLimitsClient(self)

    @property
    def settings(self) -> ClientSettings:
        if self._settings is None:
            self._settings = ClientSettings.from_env(self._env)
        return self._settings

    async def connect(
        self, name: str, *, on_error: Callable[[Exception], Awaitable[None]] | None = None
    ) -> Connection:
        return await connect(self.settings.nats_options(name), on_error=on_error)

    def workflow(
        self,
        name: str | None = None,
        on_events: Sequence[str] = (),
        schedule_timeout: declare.Duration = "5m",
        input_validator: type[BaseModel] | None = None,
        event_filter: str | None = None,
        on_crons: Sequence[str] = (),
        concurrency: ConcurrencyExpression | None = None,
        sticky: StickyStrategy | None = None,
        default_priority: int | None = None,
    ) -> Workflow:
        """A workflow: v1, declare its tasks with ``@wf.task(...)``
        (:class:`~worker.tasks.Workflow`); v0, apply it to a class of ``@hatchet.step``
        methods (``name`` defaults to the class's). ``on_events``: event keys, or patterns
        with ``*`` (``order:*``); ``event_filter``: a CEL expression over ``input``,
        ``additional_metadata`` and ``event_key`` that an event must satisfy to start it;
        ``on_crons``: cron expressions (UTC) the workflow runs at, kept as crons named
        ``<workflow>-cron-<i>`` by its workers when they register it (docs/triggers.md);
        ``concurrency``: at most ``max_runs`` runs in flight per key; ``sticky``: keep a
        run's steps on the worker of its first step; ``default_priority``: 1 (low) to 3
        (high), the priority of a run not given one (docs/flow-control.md)."""
        return Workflow(
            self,
            name,
            on_events,
            schedule_timeout,
            input_validator,
            event_filter,
            on_crons,
            concurrency,
            sticky,
            default_priority,
        )

    def task(
        self,
        name: str | None = None,
        on_events: Sequence[str] = (),
        input_validator: type[BaseModel] | None = None,
        schedule_timeout: declare.Duration = "5m",
        execution_timeout: declare.Duration = 60,
        retries: int = 0,
        backoff_factor: float | None = None,
        backoff_max_seconds: float | None = None,
        event_filter: str | None = None,
        rate_limits: Sequence[RateLimit] | None = None,
        desired_worker_labels: Mapping[str, DesiredWorkerLabel] | None = None,
    ) -> Callable[[TaskFn], Standalone]:
        """``@hatchet.task(...)``: a workflow of one task, both named ``name`` (default: the
        function's); ``task.run(input)`` returns its output."""

        def mark(fn: TaskFn) -> Standalone:
            task_name = name or fn.__name__
            wf = Workflow(
                self, task_name, on_events, schedule_timeout, input_validator, event_filter
            )
            declared = wf.task(
                name=task_name,
                execution_timeout=execution_timeout,
                retries=retries,
                backoff_factor=backoff_factor,
                backoff_max_seconds=backoff_max_seconds,
                rate_limits=rate_limits,
                desired_worker_labels=desired_worker_labels,
            )(fn)
            return Standalone(wf, declared)

        return mark

    def durable_task(self, **options: Any) -> Callable[[TaskFn], Standalone]:
        """``@hatchet.durable_task(...)``: :meth:`task` (the same options) of an async
        function that may wait without holding a slot (``ctx.aio_sleep_for``,
        ``ctx.aio_wait_for_event``, ``ctx.aio_wait_for``; docs/durable.md)."""
        plain = self.task(**options)

        def mark(fn: TaskFn) -> Standalone:
            require_async(fn, f"durable task {options.get('name') or fn.__name__!r}")
            return plain(fn)

        return mark

    def step(
        self,
        parents: Sequence[str] = (),
        timeout: declare.Duration = 60,
        retries: int = 0,
        backoff_factor: float | None = None,
        backoff_max_seconds: float | None = None,
        rate_limits: Sequence[RateLimit] | None = None,
        desired_worker_labels: Mapping[str, DesiredWorkerLabel] | None = None,
        concurrency: ConcurrencyExpression | None = None,
    ) -> Callable[[F], F]:
        """A step of a v0 workflow class. ``rate_limits``: the limits a run of it takes
        units of; ``concurrency``: at most ``max_runs`` of its tasks in flight per key
        (docs/flow-control.md)."""
        return declare.step(
            parents=parents,
            timeout=timeout,
            retries=retries,
            backoff_factor=backoff_factor,
            backoff_max_seconds=backoff_max_seconds,
            rate_limits=check_rate_limits(rate_limits),
            desired_worker_labels=desired_worker_labels,
            concurrency=check_step_concurrency(concurrency, "@hatchet.step"),
        )

    def on_failure_step(self, timeout: declare.Duration = 60) -> Callable[[F], F]:
        """The step that runs when the run fails (``context.step_run_errors()``)."""
        return declare.on_failure_step(timeout=timeout)

    def on_success_step(self, timeout: declare.Duration = 60, retries: int = 0) -> Callable[[F], F]:
        """The step that runs once every other step succeeded, before the run is SUCCEEDED;
        its failure fails the run."""
        return declare.on_success_step(timeout=timeout, retries=retries)

    def worker(
        self,
        name: str,
        max_runs: int | None = None,
        *,
        slots: int | None = None,
        workflows: Sequence[object] = (),
        grace_seconds: float | None = None,
        labels: Mapping[str, str | int] | None = None,
    ) -> Worker:
        """A worker running at most ``max_runs`` steps at once (``slots``: Hatchet v1's name
        for it), with ``workflows`` registered on it. On SIGTERM it lets running steps
        finish for ``grace_seconds`` (default 30, or NATCHET_WORKER_GRACE_SECONDS).
        ``labels`` say what it is (``{"gpu": "a100", "memory": 64}``): steps that want
        labels are placed on workers that have them (docs/flow-control.md)."""
        labels = check_labels(labels)  # a bad label says so first
        if slots is not None and max_runs is not None and slots != max_runs:
            raise ConfigError(f"slots={slots} and max_runs={max_runs}: give one of them")
        settings = WorkerSettings.resolve(
            self.settings,
            name,
            max_runs=max_runs if slots is None else slots,
            grace_s=grace_seconds,
            env=self._env,
        )
        worker = Worker(settings, self.connect, labels)
        worker.register_workflows(workflows)
        return worker

    def close(self) -> None:
        self.portal.close()
