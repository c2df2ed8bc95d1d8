"""Child workflows spawned from a step (issue 14): ``await ctx.aio_spawn_workflow(name,
input, key=...)``, or Hatchet v1's ``await child_wf.aio_run(input)`` inside a task.

A spawn appends ``runs.<child id>.requested`` with a CHILD trigger (the parent run, its step,
the key) and dedup id ``<child id>:requested``; the dispatcher checks the parent and creates
the child (``dispatcher.children``). The child's id derives from the tenant, namespace,
parent run, parent step and key (:func:`schemas.children.child_run_id`), not from the
attempt: a retried step that spawns again names the same children, so it re-attaches to
those its earlier attempt started (their results are awaited again, and are there at once
if they ended) instead of starting them twice. The key defaults to the spawn's index in the
attempt, ``"0"``, ``"1"``, ...: a step that spawns in a stable order needs no keys. (An
explicit key ``"1"`` and the second un-keyed spawn are the same child: give every spawn of
a step a key, or none.)

While a step attempt runs, its spawner is the current one (a context variable, which the
step's tasks and a sync step's thread inherit): ``hatchet.admin.aio_run_workflow`` and the
v1 ``wf.aio_run`` / ``wf.run`` then spawn a child of the step rather than a run of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from eventstore import Append, Connection, append
from schemas import encode, encode_json
from schemas.children import child_run_id
from schemas.messages import RunRequested, Task, Trigger, TriggerKind
from schemas.subjects import Scope
from worker.models import to_json
from worker.outcome import wait_for_run

T = TypeVar("T")
POLL_S = 0.2  # how often a sync step blocked on a child looks whether it was cancelled

_current: contextvars.ContextVar[Spawner | None] = contextvars.ContextVar(
    "natchet_spawner", default=None
)


def current() -> Spawner | None:
    """The spawner of the step attempt running here, if any."""
    return _current.get()


@contextlib.contextmanager
def spawning(spawner: Spawner) -> Iterator[None]:
    """Inside: runs started through the client are children of ``spawner``'s step."""
    token = _current.set(spawner)
    try:
        yield
    finally:
        _current.reset(token)


class ChildRun:
    """A child run a step spawned: ``await ref.aio_result()`` (or ``result()``) is its
    ``{step: output}`` once it succeeded, and raises :class:`~worker.WorkflowRunError`
    with its error once it failed, was cancelled or was rejected."""

    def __init__(self, spawner: Spawner, run_id: str, workflow: str, key: str) -> None:
        self._spawner = spawner
        self.workflow_run_id = run_id
        self.workflow = workflow
        self.key = key

    def __repr__(self) -> str:
        return f"<ChildRun {self.workflow} {self.workflow_run_id} key={self.key!r}>"

    async def aio_result(self) -> dict[str, Any]:
        s = self._spawner
        return await s.on_loop(wait_for_run(s.conn, s.scope, self.workflow_run_id))

    async def result(self) -> dict[str, Any]:
        """Hatchet v0's ``await ref.result()``."""
        return await self.aio_result()

    def sync_result(self, timeout_s: float | None = None) -> dict[str, Any]:
        """From a sync step: wait for the child (and stop waiting if the step is cancelled)."""
        s = self._spawner
        return s.blocking(wait_for_run(s.conn, s.scope, self.workflow_run_id), timeout_s)


class Spawner:
    """Spawns the children of one step attempt, on the worker's connection and loop."""

    def __init__(
        self,
        conn: Connection,
        scope: Scope,
        task: Task,
        loop: asyncio.AbstractEventLoop,
        cancelled: Callable[[], bool],
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.task = task
        self.loop = loop
        self._cancelled = cancelled
        self._spawned = 0
        self._lock = threading.Lock()
        self._loop_thread = threading.get_ident()  # made on the worker's loop

    def _key(self, key: object) -> str:
        """The spawn's key: given, or its index among the attempt's spawns."""
        with self._lock:
            index = self._spawned
            self._spawned += 1
        return str(index) if key is None else str(key)

    async def spawn(
        self,
        workflow: str,
        input: Any = None,
        key: object = None,
        metadata: dict[str, str] | None = None,
        priority: int | None = None,
    ) -> ChildRun:
        """Request the child run (once: the same key names the same child), carrying
        ``metadata`` (``additional_metadata``) and ``priority`` (None: its workflow's)."""
        return await self._request(workflow, input, self._key(key), metadata, priority)

    async def spawn_many(self, specs: list[tuple[str, Any, object]]) -> list[ChildRun]:
        """Request several children, keyed in order, their requests appended together."""
        keyed = [(w, i, self._key(k)) for w, i, k in specs]
        return list(await asyncio.gather(*(self._request(w, i, k) for w, i, k in keyed)))

    async def _request(
        self,
        workflow: str,
        input: Any,
        key: str,
        metadata: dict[str, str] | None = None,
        priority: int | None = None,
    ) -> ChildRun:
        t = self.task
        payload = to_json(input)
        encode_json(payload)  # fail here, clearly, on input JSON cannot carry
        run_id = child_run_id(self.scope, t.run_id, t.step, key)
        trigger = Trigger(TriggerKind.CHILD, run_id=t.run_id, step=t.step, key=key)
        req = RunRequested(
            run_id=run_id,
            workflow=workflow,
            input=payload,
            trigger=trigger,
            additional_metadata=metadata or {},
            priority=priority,
        )
        subject = self.scope.run(run_id, "requested")
        await self.on_loop(append(self.conn, Append(subject, encode(req), f"{run_id}:requested")))
        return ChildRun(self, run_id, workflow, key)

    async def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the worker's loop (where its connection lives), from any loop."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def blocking(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the worker's loop and wait, from a sync step's thread; give up
        when the step is cancelled (the run ended, it timed out) or after ``timeout_s``."""
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RuntimeError(
                "a child run cannot be waited for synchronously from an async step: await "
                "ctx.aio_spawn_workflow(...) / ref.aio_result() (or wf.aio_run(...)) instead"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        waited = 0.0
        while True:
            try:
                return future.result(POLL_S)
            except concurrent.futures.TimeoutError:
                waited += POLL_S
                if self._cancelled() or (timeout_s is not None and waited >= timeout_s):
                    future.cancel()
                    raise TimeoutError("stopped waiting for the child run") from None
