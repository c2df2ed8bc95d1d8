"""worker.settle: work that finishes whatever cancels its caller, and where a stuck
shutdown's tasks wait (named in the worker's "not stopped" warning)."""

from __future__ import annotations

import asyncio

import pytest

from worker.settle import settle, waiting_in


async def test_a_cancelled_caller_waits_for_the_work_then_is_cancelled() -> None:
    gate = asyncio.Event()
    done: list[str] = []

    async def work() -> None:
        await gate.wait()
        done.append("written")

    caller = asyncio.create_task(settle(work()))
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.sleep(0)
    assert not caller.done()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert done == ["written"]


async def test_waiting_in_names_each_tasks_chain_of_awaits() -> None:
    gate = asyncio.Event()
    held = asyncio.create_task(settle(gate.wait()), name="held")
    elsewhere = asyncio.create_task(gate.wait(), name="elsewhere")  # not the worker's code
    await asyncio.sleep(0)
    (line,) = [w for w in waiting_in() if w.startswith("held:")]
    assert line.startswith("held: settle:"), line
    assert not [w for w in waiting_in() if w.startswith("elsewhere:")]
    gate.set()
    await asyncio.gather(held, elsewhere)
    assert not [w for w in waiting_in() if w.startswith("held:")]
