"""eventstore.waits.wait_set: a deadline on an event that never loses a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from eventstore.waits import wait_set


async def test_set_in_time_is_true_and_a_deadline_passed_is_false() -> None:
    event = asyncio.Event()
    assert not await wait_set(event, 0.01)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_set(event, None)
    assert await wait_set(event, 0)  # already set


async def test_a_cancel_that_comes_as_the_event_is_set_still_cancels() -> None:
    """The heartbeat's stop: the event set, then the waiting loop cancelled in the same
    turn of the loop. asyncio.wait_for on Python 3.11 returned normally here, and a loop
    around it went on forever."""
    event = asyncio.Event()
    turns: list[int] = []

    async def loop() -> None:
        while True:
            event.clear()
            turns.append(1)
            await wait_set(event, 30)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert turns == [1]
