"""What a step receives: its run's input, its parents' outputs, and a log."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from schemas.messages import Task
from worker.declare import Duration
from worker.durable import Condition, SleepCondition, Suspend, UserEventCondition, Waits
from worker.labels import WorkerContext
from worker.models import parse_output

if TYPE_CHECKING:
    from worker.spawn import ChildRun, Spawner

STEP_LOG = logging.getLogger("worker.step")


class Context:
    """Hatchet's step context. Safe to use from sync steps (threads) and async steps."""

    def __init__(
        self,
        task: Task,
        delivery: int,
        log_sink: Callable[[str], None],
        spawner: Spawner | None = None,
        suspend: Suspend | None = None,
    ) -> None:
        self._task = task
        self._spawner = spawner
        self._waits = Waits(task, suspend)
        self._delivery = delivery
        self._log_sink = log_sink
        self._cancel = threading.Event()
        self.cancel_reason: str | None = None
        # The worker it runs on (``ctx.worker.upsert_labels``, ``ctx.worker.id()``).
        self.worker: WorkerContext | None = None

    def workflow_input(self) -> Any:
        return self._task.input

    def step_output(self, step: str) -> Any:
        try:
            return self._task.parent_outputs[step]
        except KeyError:
            parents = ", ".join(sorted(self._task.parent_outputs)) or "none"
            raise KeyError(
                f"step {self._task.step!r} has no parent {step!r} (its parents: {parents})"
            ) from None

    def task_output(self, task: object) -> Any:
        """Hatchet v1: the output of parent ``task`` (what ``@wf.task`` returned, or its
        name), as its Pydantic model when the task is annotated to return one."""
        name = task if isinstance(task, str) else getattr(task, "name", None)
        if not isinstance(name, str):
            raise TypeError(f"{task!r} is not a task: give what @wf.task returned, or its name")
        return parse_output(getattr(task, "output_model", None), self.step_output(name))

    def parent_output(self, task: object) -> Any:
        """The output of parent ``task``: :meth:`task_output`."""
        return self.task_output(task)

    def workflow_run_id(self) -> str:
        return self._task.run_id

    def step_run_errors(self) -> dict[str, str]:
        """In an on-failure step: the error of each step that failed, by step name."""
        return dict(self._task.step_errors)

    @property
    def step_name(self) -> str:
        return self._task.step

    @property
    def attempt(self) -> int:
        return self._task.attempt

    @property
    def delivery(self) -> int:
        return self._delivery

    def log(self, line: object) -> None:
        """Record a line on this step attempt (appended to the run's history, in order);
        the worker's own log shows it too, saying which run, step and attempt it is of."""
        text = str(line)
        self._log_sink(text)
        STEP_LOG.info("%s", text)

    @property
    def cancelled(self) -> bool:
        """True once the attempt is cancelled or timed out: a sync step should return."""
        return self._cancel.is_set()

    @property
    def exit_flag(self) -> bool:
        return self._cancel.is_set()

    def _set_cancelled(self, reason: str) -> None:
        if not self._cancel.is_set():
            self.cancel_reason = reason
        self._cancel.set()

    # -- child workflows (worker.spawn) ---------------------------------------------------

    def _spawns(self) -> Spawner:
        if self._spawner is None:
            raise RuntimeError("this context cannot spawn child runs (it is not a step's)")
        return self._spawner

    async def spawn_workflow(
        self, workflow_name: str, input: Any = None, key: object = None
    ) -> ChildRun:
        """Start a child run of ``workflow_name`` (in this run's namespace), linked to this
        run and step; ``await ref.aio_result()`` is its ``{step: output}``. ``key`` makes
        the spawn idempotent (default: the spawn's index in this step, 0, 1, ...): a retried
        step spawning again re-attaches to the child its earlier attempt started. A
        cancelled parent cancels its children; one that fails leaves them running."""
        return await self._spawns().spawn(workflow_name, input, key)

    async def aio_spawn_workflow(
        self, workflow_name: str, input: Any = None, key: object = None
    ) -> ChildRun:
        return await self.spawn_workflow(workflow_name, input, key)

    async def spawn_workflows(self, workflows: Iterable[Mapping[str, Any]]) -> list[ChildRun]:
        """Several children at once, each ``{"workflow_name": ..., "input": ..., "key":
        ...}`` (as Hatchet's ``WorkflowRunDict``), keyed in order as one spawn each."""
        specs = [(w["workflow_name"], w.get("input"), w.get("key")) for w in workflows]
        return await self._spawns().spawn_many(specs)

    async def aio_spawn_workflows(self, workflows: Iterable[Mapping[str, Any]]) -> list[ChildRun]:
        return await self.spawn_workflows(workflows)

    # -- durable waits (worker.durable) ---------------------------------------------------

    async def aio_wait_for(self, *conditions: Condition | str) -> dict[str, Any]:
        """Wait, without holding the worker's slot, until the first of ``conditions``
        (``SleepCondition``, ``UserEventCondition``, ``or_(...)``; a leading string, as
        Hatchet's signal key, is ignored). The step stops here and runs again from its
        start once woken, on any worker, each wait already woken returning at once: keep
        what it does before a wait idempotent. Returns which condition woke it (and the
        event's key, id and payload)."""
        return await self._waits.wait_for(*(c for c in conditions if not isinstance(c, str)))

    async def aio_sleep_for(self, duration: Duration) -> dict[str, Any]:
        """Sleep ``duration`` (seconds, a timedelta, ``"5m"``) without holding a slot; a
        restart does not start the sleep again."""
        return await self._waits.wait_for(SleepCondition(duration))

    async def sleep_for(self, duration: Duration) -> dict[str, Any]:
        return await self.aio_sleep_for(duration)

    async def aio_wait_for_event(self, key: str, expression: str | None = None) -> dict[str, Any]:
        """Wait, without holding a slot, for an event of key ``key`` (``*`` wildcards) in
        this run's namespace, appended after the wait, for which the CEL ``expression``
        over ``input`` (the payload), ``additional_metadata`` and ``event_key`` holds."""
        return await self._waits.wait_for(UserEventCondition(key, expression))

    async def wait_for_event(self, key: str, filter: str | None = None) -> dict[str, Any]:
        return await self.aio_wait_for_event(key, filter)
