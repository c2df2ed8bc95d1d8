"""StepThread: a sync step in its own thread, interrupted only while the step runs."""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time

import pytest

from worker.threads import StepInterrupted, StepThread


async def test_a_step_that_swallows_exceptions_is_still_interrupted() -> None:
    caught: list[str] = []

    def stubborn() -> None:
        while True:
            try:
                time.sleep(0.02)
            except Exception:  # a step's habit: it does not stop a StepInterrupted
                caught.append("caught")

    thread = StepThread(stubborn, "stubborn")
    thread.start()
    assert await thread.stop() is True
    assert thread.ended.is_set() and caught == []
    with pytest.raises(StepInterrupted):
        thread.result()


async def test_a_step_that_returns_when_told_is_not_interrupted() -> None:
    told = threading.Event()
    thread = StepThread(lambda: told.wait(5) and "returned", "polite")
    thread.start()
    told.set()
    assert await thread.stop() is False
    assert thread.result() == "returned"


async def test_a_step_blocked_in_c_is_interrupted_when_it_returns_to_python() -> None:
    thread = StepThread(lambda: [time.sleep(0.3) for _ in range(100)], "sleeper")
    thread.start()
    started = time.monotonic()
    assert thread.interrupt() is True
    await asyncio.wait_for(thread.ended.wait(), 2)
    assert time.monotonic() - started < 1.0
    with pytest.raises(StepInterrupted):
        thread.result()


async def test_no_interrupt_after_the_step_returned() -> None:
    thread = StepThread(lambda: 42, "quick")
    thread.start()
    await asyncio.wait_for(thread.ended.wait(), 2)
    assert thread.interrupt() is False
    assert thread.result() == 42


async def test_interrupts_racing_the_step_s_return_never_escape_it() -> None:
    """An interrupt sent as the step returns is raised in the step or dropped, never
    later (pytest reports an exception escaping a thread as an error)."""

    def busy(seconds: float) -> str:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        return "returned"

    rng = random.Random(8)
    outcomes = {"returned": 0, "interrupted": 0}
    for i in range(150):
        thread = StepThread(functools.partial(busy, rng.uniform(0, 0.02)), f"busy-{i}")
        thread.start()
        time.sleep(rng.uniform(0, 0.02))  # blocks the loop: the race is the point
        thread.interrupt()
        await asyncio.wait_for(thread.ended.wait(), 2)
        try:
            thread.result()
            outcomes["returned"] += 1
        except StepInterrupted:
            outcomes["interrupted"] += 1
    assert outcomes["returned"] and outcomes["interrupted"], outcomes
