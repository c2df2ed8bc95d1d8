"""The tasks a worker holds, from the puller's hand-over until each is settled.

Invariants:

- every delivery the puller hands over is registered here at once, in the puller's callback,
  before anything is awaited: a shutdown sees every task the worker holds, one still being
  decoded or checked included;
- a delivery's slot is freed exactly once: when its task is done and, for a sync step, its
  thread has returned too, so ``max_runs`` bounds the steps really running;
- nothing registered here outlives the worker: it cancels what is left, then waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import attrs

from eventstore import Delivery, Message, Slots, TransportError
from schemas.codec import DecodeError, decode_run_message
from worker.execute import RUN_ENDED, Attempt
from worker.threads import StepThread

log = logging.getLogger(__name__)


@attrs.define
class Holding:
    """A delivery this worker holds, and its attempt once it has one."""

    delivery: Delivery
    started: bool = False  # the handler began (it settles the delivery from then on)
    attempt: Attempt | None = None


Handler = Callable[[Holding], Coroutine[Any, Any, None]]


class InFlight:
    def __init__(self, slots: Slots, handle: Handler, name: str) -> None:
        self.slots = slots
        self._handle = handle
        self._name = name
        self._tasks: dict[asyncio.Task[None], Holding] = {}
        self._threads: set[asyncio.Task[None]] = set()  # freeing a slot once a thread ends
        self._naks: set[asyncio.Task[None]] = set()  # handing back what was never started

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, delivery: Delivery) -> None:
        """Take over a delivery (the puller has counted it in ``slots.running``)."""
        holding = Holding(delivery)
        task = asyncio.create_task(self._start(holding), name=f"{self._name}:#{delivery.seq}")
        self._tasks[task] = holding
        task.add_done_callback(self._done)

    async def _start(self, holding: Holding) -> None:
        holding.started = True
        await self._handle(holding)

    def _done(self, task: asyncio.Task[None]) -> None:
        holding = self._tasks.pop(task)
        if not holding.started:  # cancelled before it ran: nobody settled it
            nak = asyncio.create_task(self._hand_back(holding.delivery))
            self._naks.add(nak)
            nak.add_done_callback(self._naks.discard)
        thread = holding.attempt.thread if holding.attempt is not None else None
        if thread is not None and not thread.ended.is_set():
            waiter = asyncio.create_task(self._free_when_ended(thread))
            self._threads.add(waiter)
            waiter.add_done_callback(self._threads.discard)
        else:
            self.slots.finish()
        if not task.cancelled() and task.exception() is not None:
            log.error("worker %s: attempt crashed", self._name, exc_info=task.exception())

    async def _hand_back(self, delivery: Delivery) -> None:
        try:
            await delivery.nak()
        except TransportError as exc:  # it comes back after the consumer's ack_wait
            log.warning("could not hand back task #%d: %s", delivery.seq, exc)

    async def _free_when_ended(self, thread: StepThread) -> None:
        try:
            await thread.ended.wait()
        finally:
            self.slots.finish()

    async def on_run_ended(self, msg: Message) -> None:
        """A run ended (cancelled, or failed elsewhere): cancel the steps of it running
        here; their attempts record why."""
        run_id = msg.subject.split(".")[-2]
        # One not started yet finds the run over before it starts.
        running = [
            (task, holding.attempt)
            for task, holding in self._tasks.items()
            if holding.attempt is not None and holding.attempt.task.run_id == run_id
        ]
        if not running:
            return  # every worker hears every run end: most hold nothing of it
        try:
            status = getattr(decode_run_message("finished", msg.data), "status", "?")
        except DecodeError:
            status = "?"
        for task, attempt in running:
            log.info("run %s ended %s: cancelling step %s", run_id, status, attempt.task.step)
            attempt.context._set_cancelled(RUN_ENDED)
            task.cancel()

    def cancel(self) -> int:
        """Cancel every task held (each hands its delivery back); how many there were."""
        for task in self._tasks:
            task.cancel()
        return len(self._tasks)

    async def wait(self, timeout_s: float | None) -> int:
        """Wait until every task held is settled, or ``timeout_s``; how many are left."""
        loop = asyncio.get_running_loop()
        end = None if timeout_s is None else loop.time() + timeout_s
        while self._tasks or self._naks:
            left = None if end is None else end - loop.time()
            if left is not None and left <= 0:
                break
            await asyncio.wait(self._tasks.keys() | self._naks, timeout=left)
        return len(self._tasks)

    async def threads_ended(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the threads of finished sync steps to return; how
        many have not (their slots are freed anyway: the worker is going)."""
        if self._threads:
            await asyncio.wait(set(self._threads), timeout=timeout_s)
        left = list(self._threads)
        for waiter in left:
            waiter.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        return len(left)
