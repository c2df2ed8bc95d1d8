"""The leases' watcher is cancelled for good when the engine stops, even when a
cancellation is lost (``asyncio.wait_for`` before Python 3.12 can swallow one arriving as
its inner future completes; an engine stopped just after it started then never stopped)."""

from __future__ import annotations

import asyncio

from natchet.leases import cancel_and_wait


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # as a wait_for whose future completed with the cancel
        await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert swallowed.is_set() and task.cancelled()


async def test_a_task_that_already_ended_is_left_as_it_is() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    await cancel_and_wait(task)
    assert task.done() and not task.cancelled()
