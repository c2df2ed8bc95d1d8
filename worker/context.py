"""What a step receives: its run's input, its parents' outputs, and a log."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from schemas.messages import Task
from worker.models import parse_output

STEP_LOG = logging.getLogger("worker.step")


class Context:
    """Hatchet's step context. Safe to use from sync steps (threads) and async steps."""

    def __init__(self, task: Task, delivery: int, log_sink: Callable[[str], None]) -> None:
        self._task = task
        self._delivery = delivery
        self._log_sink = log_sink
        self._cancel = threading.Event()
        self.cancel_reason: str | None = None

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
