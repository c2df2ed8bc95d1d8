"""The one shape of every long-running component: ``run()``, ``shutdown()``, ``async with``.

A component subclasses :class:`Service` and writes ``_serve()``, which returns once
``self.stopping`` is set (or may simply be cancelled). Then:

- ``await service.run()`` serves until :meth:`Service.shutdown` (call it again after a
  failure: a supervisor restarts components that way);
- ``await service.shutdown()`` asks it to stop, waits until ``run()`` has returned (cancelling
  it after ``grace_s``), and may be called any number of times, from anywhere;
- ``async with service:`` runs it in a background task and shuts it down on exit.

Signal handlers and process exit are the entry points' business, never a service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from eventstore import logs

T = TypeVar("T")

log = logging.getLogger(__name__)


class Service:
    name = "service"
    grace_s = 10.0

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopped.set()
        self._runner: asyncio.Task[None] | None = None
        self._background: asyncio.Task[None] | None = None

    async def _serve(self) -> None:
        raise NotImplementedError

    def log_fields(self) -> dict[str, object]:
        """What every line it logs while serving carries (:mod:`eventstore.logs`)."""
        return {}

    @property
    def running(self) -> bool:
        return not self._stopped.is_set()

    async def run(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._stopped.clear()
        self._runner = asyncio.current_task()
        try:
            if not self.stopping.is_set():
                with logs.bound(**self.log_fields()):
                    await self._serve()
        finally:
            self._runner = None
            self._stopped.set()

    async def until_stopping(self, work: Awaitable[object]) -> None:
        """Await ``work`` until it ends or the service is asked to stop (then ``work`` is
        cancelled): for a ``_serve`` blocked in something that cannot check ``stopping``."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stop):
                pending.cancel()
            await asyncio.gather(task, stop, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            task.result()  # what the work failed with

    def start(self) -> asyncio.Task[None]:
        """Run in a background task (what ``async with`` does); a stopped service starts
        again."""
        if self._background is None or self._background.done():
            self.stopping.clear()
            self._background = asyncio.create_task(self.run(), name=self.name)
        return self._background

    async def shutdown(self) -> None:
        """Stop, and return once stopped. Idempotent."""
        self.stopping.set()
        if not self.running:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stopped.wait()), self.grace_s)
        runner = self._runner
        if self.running and runner is not None and runner is not asyncio.current_task():
            log.warning("%s: not stopped after %.1fs, cancelling", self.name, self.grace_s)
            runner.cancel()
            await self._stopped.wait()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
        background = self._background
        done = background is not None and background.done() and not background.cancelled()
        if et is None and done and background is not None:
            background.result()  # what the service died of, if it did


def run_main(main: Coroutine[Any, Any, T]) -> T:
    """An entry point's ``asyncio.run``, on uvloop where it is installed (Linux, macOS):
    the same asyncio API, with less time per message in the event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
