"""Finishing what must not stop halfway: an outcome's write and ack, a shutdown's clean-up.

``await settle(work)`` runs ``work`` to its end even when the awaiting task is cancelled
meanwhile (arq shields its ``finish_job`` the same way), and then raises the cancellation.
Unlike a bare ``asyncio.shield``, the caller does not return before ``work`` has: a shutdown
that waits for its tasks has waited for their last writes too. ``work`` must end on its own
(every write in the worker gives up once the worker is closing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

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
