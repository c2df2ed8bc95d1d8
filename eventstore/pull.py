"""Pulling tasks from a workflow's shared consumer, never more than the free slots.

A worker's pull requests ask for exactly the slots it has free. The server hands each
message to one outstanding request, so a busy worker never holds a task an idle one could
run. Accounting is exact: every requested message either arrives, or is returned by the
server in the ``Nats-Pending-Messages`` header of the request's closing status (408/409).

A worker with several workflows has one puller per workflow, all sharing its slots. A
request that waits on an empty queue holds its slots until it expires, so the slots are
allotted by demand (:meth:`Slots.allot`): a puller whose queue has no known backlog keeps
one slot asking (a probe), one whose queue has a backlog (each delivery says how many tasks
are left behind it) asks for up to that many, and free slots go round-robin between the
pullers that want some. When the slots are too few for a probe each, a probe that takes
the last free slot while another queue has a backlog does not wait (``no_wait``): it takes
a task if there is one, or hands the slot straight back, and the turn moves on.

A puller keeps asking until :meth:`TaskPuller.stop`: a failed request or subscription is
tried again after ``eventstore.RETRY``'s delay, never given up. Cancelling
:meth:`TaskPuller.run` ends its subscription too; :meth:`TaskPuller.stop` instead keeps it
until the outstanding requests expired, handing back (nak) whatever still arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from eventstore.backoff import RETRY
from eventstore.errors import TransportError
from eventstore.messages import Delivery
from eventstore.waits import wait_set

log = logging.getLogger(__name__)

STATUS = "Status"
PENDING_MESSAGES = "Nats-Pending-Messages"
MISSING_QUEUE_RETRY_S = 0.2
MISSING_QUEUE_WARN_S = 10.0


class Wanting(Protocol):
    """A puller, as its slots see it: what it has asked for, and would ask for more."""

    @property
    def outstanding(self) -> int: ...
    @property
    def unmet(self) -> int: ...
    @property
    def backlog(self) -> int: ...


class Slots:
    """``max_runs`` split into running, reserved (requested, not yet arrived) and free."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"max_runs must be at least 1, not {capacity}")
        self.capacity = capacity
        self.running = 0
        self.reserved = 0
        self.peak = 0
        self._listeners: list[asyncio.Event] = []
        self._pullers: list[Wanting] = []
        self._turn = 0  # the puller first in line for the next allotment

    def listen(self) -> asyncio.Event:
        """An event set whenever a slot may have come free."""
        event = asyncio.Event()
        self._listeners.append(event)
        return event

    def notify(self) -> None:
        for event in self._listeners:
            event.set()

    def join(self, puller: Wanting) -> None:
        self._pullers.append(puller)

    def allot(self, puller: Wanting) -> int:
        """How many slots ``puller`` may ask for now. Alone, all the free ones. Among
        several, the free slots are dealt one at a time to whichever puller that wants more
        holds fewest (what it asked for counts as held), ties going round-robin from the
        puller whose turn it is: ``puller`` may ask for what it was dealt."""
        free = max(0, self.free)
        if len(self._pullers) <= 1 or not free:
            return free
        n = len(self._pullers)
        order = [self._pullers[(self._turn + i) % n] for i in range(n)]
        held = [p.outstanding for p in order]
        wants = [p.outstanding + p.unmet for p in order]
        mine = next(i for i, p in enumerate(order) if p is puller)
        got = 0
        for _ in range(free):
            wanting = [i for i in range(n) if held[i] < wants[i]]
            if not wanting:
                break
            i = min(wanting, key=lambda i: held[i])  # the first of the fewest, in turn
            held[i] += 1
            got += i == mine
        if got:
            self._turn = (self._pullers.index(puller) + 1) % n
        return got

    def others_backlogged(self, puller: Wanting) -> bool:
        """Whether another puller has tasks waiting and wants slots for them."""
        return any(p.backlog and p.unmet for p in self._pullers if p is not puller)

    @property
    def free(self) -> int:
        return self.capacity - self.running - self.reserved

    def reserve(self, n: int) -> None:
        assert 0 <= n <= self.free
        self.reserved += n

    def unreserve(self, n: int) -> None:
        self.reserved = max(0, self.reserved - n)
        self.notify()

    def start(self) -> None:
        self.reserved = max(0, self.reserved - 1)
        self.running += 1
        self.peak = max(self.peak, self.running)

    def finish(self) -> None:
        self.running -= 1
        self.notify()


class TaskPuller:
    """Keeps pull requests outstanding for the free slots of one consumer."""

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        slots: Slots,
        on_task: Callable[[Delivery], None],
        *,
        expires_s: float = 2.0,
    ) -> None:
        self.nc = nc
        self.slots = slots
        self.on_task = on_task
        self.expires_s = expires_s
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.outstanding = 0
        self._sub: Subscription | None = None
        self._inbox = ""
        self._last_request = 0.0
        self._stopping = False
        self._wake = slots.listen()
        self._quiet_until = 0.0  # no queue group yet: do not ask again before this
        self._missing_since: float | None = None
        self.backlog = 0  # tasks known to wait in the queue (as of its last answer)
        self._probing = False  # a no_wait request is out (its 404 returns all outstanding)
        slots.join(self)

    @property
    def unmet(self) -> int:
        """Slots this puller would ask for beyond those it has: its queue's backlog, or
        one to wait for the next task with (a probe)."""
        if self._stopping:
            return 0
        return max(0, max(1, self.backlog) - self.outstanding)

    async def _close_inbox(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _open(self) -> None:
        await self._close_inbox()
        # Whatever was requested on the old inbox is forgotten: its messages (if any) come
        # back after ack_wait. Release the reservation now.
        self.slots.unreserve(self.outstanding)
        self.outstanding = 0
        self._probing = False
        if self._stopping:
            return  # a late status after stop(): nothing more is asked for
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        status = (msg.headers or {}).get(STATUS)
        if status:
            if status == "100":
                return  # idle heartbeat
            if status == "503":
                await self._no_queue()
                return
            if status == "404" and self._probing:
                self._probing = False  # the queue is empty: the slot goes back at once
                self.backlog = 0
                self.slots.unreserve(self.outstanding)
                self.outstanding = 0
                self._wake.set()
                return
            self._missing_since = None
            pending = (msg.headers or {}).get(PENDING_MESSAGES)
            if pending is None:
                log.warning(
                    "pull request ended with status %s (%s); re-requesting",
                    status,
                    (msg.headers or {}).get("Description", ""),
                )
                await self._open()
            else:
                returned = min(int(pending), self.outstanding)
                self.outstanding -= returned
                if returned:
                    self.backlog = 0  # the request waited and the queue had nothing more
                self.slots.unreserve(returned)
            self._wake.set()
            return
        self.outstanding = max(0, self.outstanding - 1)
        self._probing = False
        delivery = Delivery.of(msg)
        self.backlog = delivery.pending
        if self._stopping:
            self.slots.unreserve(1)
            with contextlib.suppress(TransportError):
                await delivery.nak()  # hand it straight back: this worker is shutting down
            return
        self.slots.start()
        self.on_task(delivery)
        if self.backlog and self.slots.free > 0:
            self._wake.set()  # a backlog behind it: ask for more while slots are free

    async def _no_queue(self) -> None:
        """No responders: the engine has not created this workflow's queue group yet (it
        does when it reads the registration). Ask again a little later, and say so once
        if it takes long."""
        now = time.monotonic()
        if self._missing_since is None:
            self._missing_since = now
        elif now - self._missing_since > MISSING_QUEUE_WARN_S:
            log.warning(
                "queue group %s does not exist yet: is the engine running (`natchet dev` or "
                "`natchet engine`)?",
                self.next_subject.rsplit(".", 1)[-1],
            )
            self._missing_since = now
        self._quiet_until = now + MISSING_QUEUE_RETRY_S
        await self._open()
        self._wake.set()

    async def _request(self, n: int) -> None:
        self.slots.reserve(n)
        body: dict[str, object] = {"batch": n, "expires": int(self.expires_s * 1e9)}
        if (
            not self.backlog
            and not self.outstanding
            and not self.slots.free
            and self.slots.others_backlogged(self)
        ):
            body = {"batch": n, "no_wait": True}  # answered at once: a task, or 404
            self._probing = True
        self.outstanding += n
        self._last_request = time.monotonic()
        await self.nc.publish(self.next_subject, orjson.dumps(body), reply=self._inbox)

    async def run(self) -> None:
        """Ask for tasks for the free slots until :meth:`stop`."""
        failures = 0
        try:
            while not self._stopping:
                self._wake.clear()
                quiet = self._quiet_until - time.monotonic()
                if quiet > 0:
                    await asyncio.sleep(min(quiet, MISSING_QUEUE_RETRY_S))
                    continue
                try:
                    await self._ask()
                    failures = 0
                except nats.errors.Error as exc:
                    failures += 1
                    delay = RETRY.delay(failures)
                    log.warning("pulling tasks failed (%s); trying again in %.1fs", exc, delay)
                    self._wake.clear()
                    self._quiet_until = time.monotonic() + delay
                    continue
                await wait_set(self._wake, self.expires_s)
        except asyncio.CancelledError:
            await self._close_inbox()
            raise

    async def _ask(self) -> None:
        """Request what the free slots allow; start over when requests were lost."""
        if self._sub is None:
            await self._open()
        want = self.slots.allot(self)
        if want > 0 and self.nc.is_connected:
            try:
                await self._request(want)
            except nats.errors.Error:
                self.slots.unreserve(want)
                self.outstanding -= want
                raise
        elif self.outstanding and time.monotonic() - self._last_request > self.expires_s + 2:
            # No closing status arrived (a reconnect loses requests): start over.
            await self._open()

    async def stop(self) -> None:
        """Stop asking, and end the requests still outstanding now rather than when they
        expire: the inbox is drained (its interest withdrawn, then a round trip), and the
        server gives no task to a waiting request whose reply subject has no interest. A
        task it sent before that arrives within the round trip and is handed back (nak).

        Across a cluster's routes (or a leaf node, within its 250 ms grace) the withdrawal
        reaches the consumer's leader a moment later: a task sent in that moment arrives
        after the inbox is gone, and comes back after the consumer's ack wait, not lost."""
        self._stopping = True
        self._wake.set()
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                if self.nc.is_connected:
                    await sub.drain()  # type: ignore[no-untyped-call]  # nats-py: untyped
                else:
                    await sub.unsubscribe()
        self.slots.unreserve(self.outstanding)
        self.outstanding = 0
