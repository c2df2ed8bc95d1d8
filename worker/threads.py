"""Sync steps, each in a thread of its own that the worker can interrupt.

Stopping a sync step (its timeout, its run's end, a shutdown) goes in two moves: the step is
told first (``context.cancelled``) and given ``COOPERATE_S`` to return on its own; then
:class:`StepInterrupted` is raised in its thread (``PyThreadState_SetAsyncExc``, as Hatchet
does since its issue #1147). Python code sees it at its next instruction; code blocked in C
(a ``time.sleep``, a socket read) sees it when it returns to Python.

Invariants:

- at most one interrupt is sent per step, and never once the step's function has returned:
  the thread, under the same lock, marks itself returned and drops an interrupt sent but not
  yet raised, so the exception can never land in code that is not the step's;
- ``ended`` is set when the thread has nothing of the step left to run, and only then. The
  worker frees the step's slot at that moment, so ``max_runs`` bounds the steps really
  running, interrupted ones included.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import logging
import threading
from collections.abc import Callable
from typing import Any

from eventstore.waits import wait_set

log = logging.getLogger(__name__)

COOPERATE_S = 1.0  # told to stop, a step has this long to return before it is interrupted
INTERRUPTED_S = 1.0  # and then this long to unwind before its outcome is recorded anyway

_SetAsyncExc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)
_set_async_exc = _SetAsyncExc(("PyThreadState_SetAsyncExc", ctypes.pythonapi))
_NO_EXCEPTION = ctypes.py_object()  # NULL: clears an exception sent and not yet raised


class StepInterrupted(BaseException):
    """Raised inside a sync step's thread to stop it. A ``BaseException``, so that a step's
    ``except Exception`` does not swallow it."""


class StepThread:
    """``fn`` run once in a new daemon thread. Create and await it on the event loop."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self._fn = fn
        self._loop = asyncio.get_running_loop()
        # In a copy of the caller's context: the step's log lines say which run they concern.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._body,), name=name, daemon=True
        )
        self._lock = threading.Lock()
        self._returned = False
        self.interrupted = False
        self._outcome: tuple[bool, Any] = (False, None)
        self.ended = asyncio.Event()

    def start(self) -> None:
        self._thread.start()

    def _body(self) -> None:
        outcome: tuple[bool, Any]
        try:
            try:
                outcome = (True, self._fn())
            except BaseException as exc:  # carried to the event loop, raised there
                outcome = (False, exc)
            finally:
                with self._lock:
                    self._returned = True
                    if self.interrupted:
                        _set_async_exc(threading.get_ident(), _NO_EXCEPTION)
        except StepInterrupted as exc:  # it arrived after the step returned, before the lock
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            self._loop.call_soon_threadsafe(self._end, outcome)

    def _end(self, outcome: tuple[bool, Any]) -> None:
        self._outcome = outcome
        self.ended.set()

    def result(self) -> Any:
        """What the step returned, or raise what it raised (once :attr:`ended` is set)."""
        assert self.ended.is_set()
        ok, value = self._outcome
        if not ok:
            raise value
        return value

    def interrupt(self) -> bool:
        """Raise :class:`StepInterrupted` in the thread, unless the step already returned.
        Whether it was sent (now or before)."""
        with self._lock:
            if self._returned or self.interrupted:
                return self.interrupted
            ident = self._thread.ident
            assert ident is not None, "interrupting a step thread that never started"
            sent = _set_async_exc(ident, StepInterrupted)
            if sent > 1:  # cannot happen with a live thread's id; undo, as the C API asks
                _set_async_exc(ident, _NO_EXCEPTION)
            self.interrupted = sent == 1
            return self.interrupted

    async def stop(self) -> bool:
        """Once the step was told to stop: wait ``COOPERATE_S`` for it to return, else
        interrupt it and wait ``INTERRUPTED_S`` more. Whether it had to be interrupted."""
        if await self._ends_within(COOPERATE_S):
            return False
        if self.interrupt():
            log.info("step thread %s interrupted", self._thread.name)
        if not await self._ends_within(INTERRUPTED_S):
            log.warning(
                "step thread %s has not returned (blocked in C?); it keeps its slot until it does",
                self._thread.name,
            )
        return self.interrupted

    async def _ends_within(self, seconds: float) -> bool:
        return await wait_set(self.ended, seconds)
