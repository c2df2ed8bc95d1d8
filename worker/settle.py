"""Finishing what must not stop halfway: an outcome's write and ack, a shutdown's clean-up.

``await settle(work)`` runs ``work`` to its end even when the awaiting task is cancelled
meanwhile (arq shields its ``finish_job`` the same way), and then raises the cancellation.
Unlike a bare ``asyncio.shield``, the caller does not return before ``work`` has: a shutdown
that waits for its tasks has waited for their last writes too. ``work`` must end on its own
(every write in the worker gives up once the worker is closing).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


async def settle(work: Awaitable[T]) -> T:
    """``work``'s result, once it has ended; a cancellation meanwhile is raised after it."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise  # the work itself was cancelled
            cancelled = True
            continue
        break
    if cancelled:
        raise asyncio.CancelledError
    return result


def awaiting(task: asyncio.Task[Any]) -> str:
    """Where ``task`` is suspended, outermost first (``function:line > ...``)."""
    where: list[str] = []
    step: object = task.get_coro()
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "gi_frame", None)
        if frame is not None:
            where.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        step = getattr(step, "cr_await", None) or getattr(step, "gi_yieldfrom", None)
    return " > ".join(where)


def waiting_in(packages: tuple[str, ...] = ("worker", "eventstore")) -> list[str]:
    """Where each pending task started by these packages' code waits: what a shutdown that
    does not end is waiting for (the task's name, then :func:`awaiting`)."""
    roots = tuple(str(Path(__file__).resolve().parents[1] / p) + os.sep for p in packages)
    found = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        code = getattr(coro, "cr_code", None)
        if code is not None and code.co_filename.startswith(roots):
            found.append(f"{task.get_name()}: {awaiting(task)}")
    return sorted(found)
