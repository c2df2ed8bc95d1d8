"""Waiting for an event with a deadline, without losing a cancellation.

``asyncio.wait_for(event.wait(), t)`` on Python 3.11 returns normally when the task is
cancelled just as the event is set: the cancellation is lost (CPython gh-86296, fixed in
3.12 by building ``wait_for`` on ``asyncio.timeout``). A loop that waits that way and is
stopped by "set the event, then cancel the task" can go on forever: a worker's heartbeat
did (``Heartbeat.stopping`` sets its event, ``stop`` cancels its loop a moment later), and
the worker never stopped. ``asyncio.timeout`` keeps the cancellation on every version.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Whether ``event`` is set within ``timeout_s`` seconds (None: no deadline)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
