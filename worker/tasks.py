"""Hatchet's v1 API: ``wf = hatchet.workflow(name=..., input_validator=Model)``, tasks
declared with ``@wf.task(parents=[...])``, ``@hatchet.task(...)`` for a workflow of one task,
and ``wf.run(input)`` / ``await wf.aio_run(input)``.

A v1 workflow registers the same wire definition (:func:`worker.declare.definition_of`) as
the v0 class it is equivalent to: a task is a step, named for its function (or ``name=``).
The object ``hatchet.workflow(...)`` returns is also the v0 class decorator, so
``@hatchet.workflow(on_events=[...])`` on a class with ``@hatchet.step`` methods works as
before. A task function is ``fn(input, ctx)``: ``input`` is the run's input validated into
the workflow's ``input_validator`` (:class:`~worker.models.EmptyModel` by default) before it
runs; input that does not fit fails the step at once, non-retryable, naming the field.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from eventstore import ConfigError
from schemas.messages import WorkflowDef
from worker import declare
from worker.concurrency import (
    ConcurrencyExpression,
    check_concurrency,
    check_step_concurrency,
)
from worker.context import Context
from worker.declare import Duration, StepSpec, WorkflowSpec, seconds
from worker.durable import require_async
from worker.errors import InvalidInputError, NonRetryableError
from worker.labels import DesiredWorkerLabel, StickyStrategy, check_desired, check_sticky
from worker.models import EmptyModel, dump_input, output_model, parse_input, parse_output
from worker.ratelimits import RateLimit, check_rate_limits


class WorkflowRunRef(Protocol):
    """What the admin client's ``run_workflow`` returns (``worker.client.WorkflowRunRef``)."""

    workflow_run_id: str

    def sync_result(self, timeout_s: float | None = None) -> dict[str, Any]: ...

    async def aio_result(self) -> dict[str, Any]: ...


class Admin(Protocol):
    def run_workflow(
        self, workflow_name: str, input: Any = None, options: Any = None
    ) -> WorkflowRunRef: ...

    async def aio_run_workflow(
        self, workflow_name: str, input: Any = None, options: Any = None
    ) -> WorkflowRunRef: ...


class Client(Protocol):
    """The client a workflow runs through (``worker.client.Hatchet``)."""

    @property
    def admin(self) -> Admin: ...


C = TypeVar("C", bound=type)
TaskFn = Callable[[Any, Context], Any]


class Task:
    """A task of a v1 workflow (what ``@wf.task(...)`` returns): pass it as another task's
    parent, or to ``ctx.task_output(task)`` / ``ctx.parent_output(task)`` for its output."""

    def __init__(self, workflow: Workflow, name: str, fn: TaskFn, spec: StepSpec) -> None:
        self.workflow = workflow
        self.name = name
        self.fn = fn
        self.spec = spec
        self.output_model = output_model(fn)

    def __repr__(self) -> str:
        return f"<Task {self.workflow.name}.{self.name}>"

    def runner(self) -> Callable[..., Any]:
        """The step as the worker calls it, ``step(instance, context)``: the run's input
        validated first (async for an async task, so it stays on the loop)."""
        fn = self.fn
        model = self.workflow.input_validator

        def parse(ctx: Context) -> BaseModel:
            try:
                return parse_input(model, ctx.workflow_input())
            except ValueError as exc:
                raise NonRetryableError(str(exc)) from None

        if inspect.iscoroutinefunction(fn):

            async def run_async(instance: object, ctx: Context) -> Any:
                return await fn(parse(ctx), ctx)

            return run_async

        def run_sync(instance: object, ctx: Context) -> Any:
            return fn(parse(ctx), ctx)

        return run_sync


class Workflow:
    """``hatchet.workflow(name=..., on_events=[...], input_validator=Model)``: declare tasks
    on it with ``@wf.task(...)``, register it with ``hatchet.worker(..., workflows=[wf])``,
    start it with ``wf.run(input)``. Applied to a class, it is the v0 decorator."""

    def __init__(
        self,
        hatchet: Client,
        name: str | None,
        on_events: Sequence[str] = (),
        schedule_timeout: Duration = "5m",
        input_validator: type[BaseModel] | None = None,
        event_filter: str | None = None,
        on_crons: Sequence[str] = (),
        concurrency: ConcurrencyExpression | None = None,
        sticky: StickyStrategy | None = None,
        default_priority: int | None = None,
    ) -> None:
        self._hatchet = hatchet
        self.concurrency = check_concurrency(concurrency)
        self.sticky = check_sticky(sticky)
        self.default_priority = declare.check_priority(default_priority)
        self.crons = declare.check_crons(on_crons)
        self._name = name
        self._on_events = on_events
        self._schedule_timeout = schedule_timeout
        self.events = declare.check_events(on_events)
        self.event_filter = declare.check_event_filter(event_filter, self.events)
        self.schedule_timeout_s = seconds(schedule_timeout, "schedule_timeout")
        if name is not None:
            declare.check_workflow_name(name)
        if input_validator is not None and not (
            inspect.isclass(input_validator) and issubclass(input_validator, BaseModel)
        ):
            raise ConfigError(
                f"input_validator must be a Pydantic model class, not {input_validator!r}"
            )
        self.input_validator: type[BaseModel] = input_validator or EmptyModel
        self.tasks: dict[str, Task] = {}
        self._spec: WorkflowSpec | None = None

    @property
    def name(self) -> str:
        if self._name is None:
            raise ConfigError("a v1 workflow needs a name: hatchet.workflow(name=...)")
        return self._name

    def __repr__(self) -> str:
        return f"<Workflow {self._name}>"

    # -- v0: a class decorator --------------------------------------------------------------

    def __call__(self, cls: C) -> C:
        """``@hatchet.workflow(...)`` on a class with ``@hatchet.step`` methods (v0)."""
        if self.tasks:
            raise ConfigError(f"workflow {self._name} has v1 tasks: it cannot decorate a class")
        if self.input_validator is not EmptyModel:
            raise ConfigError(
                f"input_validator is for v1 tasks (@wf.task); the steps of class "
                f"{cls.__name__} read context.workflow_input()"
            )
        mark = declare.workflow(
            name=self._name,
            on_events=self._on_events,
            schedule_timeout=self._schedule_timeout,
            event_filter=self.event_filter,
            on_crons=self.crons,
            concurrency=self.concurrency,
            sticky=self.sticky,
            default_priority=self.default_priority,
        )
        return mark(cls)

    # -- v1: tasks ------------------------------------------------------------------------

    def task(
        self,
        name: str | None = None,
        parents: Sequence[Task | str] = (),
        execution_timeout: Duration = 60,
        retries: int = 0,
        backoff_factor: float | None = None,
        backoff_max_seconds: float | None = None,
        rate_limits: Sequence[RateLimit] | None = None,
        desired_worker_labels: Mapping[str, DesiredWorkerLabel] | None = None,
        concurrency: ConcurrencyExpression | None = None,
    ) -> Callable[[TaskFn], Task]:
        """A task of this workflow, run once its ``parents`` (tasks of it) succeeded;
        ``rate_limits``: the limits a run of it takes units of; ``desired_worker_labels``:
        the labels of the workers it may run on, or prefers; ``concurrency``: at most
        ``max_runs`` of its tasks in flight per key (docs/flow-control.md)."""
        self.name  # noqa: B018 -- a v1 workflow has a name: say so at the first task, not at registration
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, not {retries}")
        timeout_s = seconds(execution_timeout, "execution_timeout")
        limits = check_rate_limits(rate_limits)
        desired = check_desired(desired_worker_labels, f"workflow {self.name}")

        def mark(fn: TaskFn) -> Task:
            task_name = name or fn.__name__
            spec = StepSpec(
                parents=tuple(self._parent_name(task_name, p) for p in parents),
                timeout_s=timeout_s,
                retries=retries,
                backoff_factor=backoff_factor,
                backoff_max_s=backoff_max_seconds,
                rate_limits=limits,
                desired_worker_labels=desired,
                concurrency=check_step_concurrency(concurrency, task_name),
            )
            return self._add(task_name, fn, spec)

        return mark

    def durable_task(
        self,
        name: str | None = None,
        parents: Sequence[Task | str] = (),
        execution_timeout: Duration = 60,
        retries: int = 0,
        backoff_factor: float | None = None,
        backoff_max_seconds: float | None = None,
        rate_limits: Sequence[RateLimit] | None = None,
        desired_worker_labels: Mapping[str, DesiredWorkerLabel] | None = None,
    ) -> Callable[[TaskFn], Task]:
        """A task that may wait without holding a slot (``ctx.aio_sleep_for``,
        ``ctx.aio_wait_for_event``, ``ctx.aio_wait_for``; docs/durable.md): an async
        function, run again from its start once woken. ``execution_timeout`` bounds each
        run between waits, not the waits."""
        plain = self.task(
            name,
            parents,
            execution_timeout,
            retries,
            backoff_factor,
            backoff_max_seconds,
            rate_limits,
            desired_worker_labels,
        )

        def mark(fn: TaskFn) -> Task:
            require_async(fn, f"workflow {self.name}: durable task {name or fn.__name__!r}")
            return plain(fn)

        return mark

    def on_failure_task(
        self, name: str | None = None, execution_timeout: Duration = 60
    ) -> Callable[[TaskFn], Task]:
        """The task that runs when the run fails; ``ctx.step_run_errors()`` says why."""
        self.name  # noqa: B018
        timeout_s = seconds(execution_timeout, "execution_timeout")

        def mark(fn: TaskFn) -> Task:
            spec = StepSpec((), timeout_s, 0, None, None, on_failure=True)
            return self._add(name or fn.__name__, fn, spec)

        return mark

    def on_success_task(
        self, name: str | None = None, execution_timeout: Duration = 60, retries: int = 0
    ) -> Callable[[TaskFn], Task]:
        """The task that runs once every other task succeeded, before the run is SUCCEEDED;
        its failure fails the run. ``ctx.task_output(task)`` reads any task's output."""
        self.name  # noqa: B018
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, not {retries}")
        timeout_s = seconds(execution_timeout, "execution_timeout")

        def mark(fn: TaskFn) -> Task:
            spec = StepSpec((), timeout_s, retries, None, None, on_success=True)
            return self._add(name or fn.__name__, fn, spec)

        return mark

    def _parent_name(self, task_name: str, parent: Task | str) -> str:
        if isinstance(parent, str):
            return parent
        if not isinstance(parent, Task):
            raise ConfigError(
                f"workflow {self.name}: task {task_name!r} has parent {parent!r}, "
                "which is not a task (give the object @wf.task returned, or its name)"
            )
        if parent.workflow is not self:
            raise ConfigError(
                f"workflow {self.name}: task {task_name!r} has parent {parent.name!r}, "
                f"a task of workflow {parent.workflow.name}, not of this one"
            )
        return parent.name

    def _add(self, task_name: str, fn: TaskFn, spec: StepSpec) -> Task:
        if not callable(fn):
            raise ConfigError(f"@{self.name}.task() decorates a function, not {fn!r}")
        if task_name in self.tasks:
            raise ConfigError(f"workflow {self.name} already has a task named {task_name!r}")
        task = Task(self, task_name, fn, spec)
        self.tasks[task_name] = task
        self._spec = None
        return task

    @property
    def _natchet_workflow(self) -> WorkflowSpec:
        """What a worker registers (``declare.spec_of``); the DAG is checked here."""
        if self._spec is None:
            if not self.tasks:
                raise ConfigError(
                    f"workflow {self.name} has no tasks: declare them with @wf.task()"
                )
            specs = {n: t.spec for n, t in self.tasks.items()}
            definition = declare.definition_of(
                self.name,
                specs,
                self.events,
                self.schedule_timeout_s,
                self.event_filter,
                self.concurrency,
                self.sticky,
                self.default_priority,
            )
            functions = {n: t.runner() for n, t in self.tasks.items()}
            self._spec = WorkflowSpec(definition, functions, self.crons)
        return self._spec

    @property
    def definition(self) -> WorkflowDef:
        """The wire definition (``WorkflowDef``) a worker registers for this workflow."""
        return self._natchet_workflow.definition

    # -- runs -----------------------------------------------------------------------------

    def _input(self, input: Any) -> Any:
        """The input as sent: validated client-side, before anything is sent, as Hatchet does."""
        try:
            return dump_input(self.input_validator, input)
        except ValueError as exc:
            raise InvalidInputError(f"workflow {self.name}: {exc}") from None

    def run_no_wait(self, input: Any = None, options: Any = None) -> WorkflowRunRef:
        """Start a run; returns at once with its reference (``await ref.aio_result()``).
        ``options``: ``{"additional_metadata": {...}, "priority": 1..3}`` (or Hatchet's
        ``TriggerWorkflowOptions``)."""
        return self._hatchet.admin.run_workflow(self.name, self._input(input), options)

    async def aio_run_no_wait(self, input: Any = None, options: Any = None) -> WorkflowRunRef:
        return await self._hatchet.admin.aio_run_workflow(self.name, self._input(input), options)

    def run(self, input: Any = None, options: Any = None) -> dict[str, Any]:
        """Run it and wait: ``{task name: output}``; raises ``WorkflowRunError`` if it fails."""
        return self.run_no_wait(input, options).sync_result()

    async def aio_run(self, input: Any = None, options: Any = None) -> dict[str, Any]:
        return await (await self.aio_run_no_wait(input, options)).aio_result()


class TaskRunRef:
    """A started run of a standalone task: ``ref.result()`` (or ``await ref.aio_result()``)
    is the task's output once the run succeeded."""

    def __init__(self, ref: WorkflowRunRef, task: str, model: type[BaseModel] | None) -> None:
        self._ref = ref
        self._task = task
        self._model = model
        self.workflow_run_id = ref.workflow_run_id

    def result(self) -> Any:
        return parse_output(self._model, self._ref.sync_result()[self._task])

    async def aio_result(self) -> Any:
        return parse_output(self._model, (await self._ref.aio_result())[self._task])


class Standalone:
    """``@hatchet.task(...)``: a workflow of one task, named for it; ``run`` returns the
    task's output (as its model, when the function is annotated to return one)."""

    def __init__(self, workflow: Workflow, task: Task) -> None:
        self.workflow = workflow
        self.task = task
        self.name = task.name

    def __repr__(self) -> str:
        return f"<Standalone {self.name}>"

    @property
    def _natchet_workflow(self) -> WorkflowSpec:
        return self.workflow._natchet_workflow

    @property
    def definition(self) -> WorkflowDef:
        return self.workflow.definition

    @property
    def input_validator(self) -> type[BaseModel]:
        return self.workflow.input_validator

    def run_no_wait(self, input: Any = None, options: Any = None) -> TaskRunRef:
        ref = self.workflow.run_no_wait(input, options)
        return TaskRunRef(ref, self.name, self.task.output_model)

    async def aio_run_no_wait(self, input: Any = None, options: Any = None) -> TaskRunRef:
        ref = await self.workflow.aio_run_no_wait(input, options)
        return TaskRunRef(ref, self.name, self.task.output_model)

    def run(self, input: Any = None, options: Any = None) -> Any:
        return self.run_no_wait(input, options).result()

    async def aio_run(self, input: Any = None, options: Any = None) -> Any:
        return await (await self.aio_run_no_wait(input, options)).aio_result()
