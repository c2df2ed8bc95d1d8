"""Pulling tasks from a workflow's shared consumer, never more than the free slots.

A worker's pull requests ask for exactly the slots it has free. The server hands each
message to one outstanding request, so a busy worker never holds a task an idle one could
run. Accounting is exact: every requested message either arrives, or is returned by the
server in the ``Nats-Pending-Messages`` header of the request's closing status (408/409).

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

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from eventstore.backoff import RETRY
from eventstore.errors import TransportError
from eventstore.messages import Delivery

log = logging.getLogger(__name__)

STATUS = "Status"
PENDING_MESSAGES = "Nats-Pending-Messages"
MISSING_QUEUE_RETRY_S = 0.2
MISSING_QUEUE_WARN_S = 10.0


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

    def listen(self) -> asyncio.Event:
        """An event set whenever a slot may have come free."""
        event = asyncio.Event()
        self._listeners.append(event)
        return event

    def notify(self) -> None:
        for event in self._listeners:
            event.set()

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
        share: int = 1,
        expires_s: float = 2.0,
    ) -> None:
        self.nc = nc
        self.slots = slots
        self.on_task = on_task
        self.share = share
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
                self.slots.unreserve(returned)
            self._wake.set()
            return
        self.outstanding = max(0, self.outstanding - 1)
        delivery = Delivery.of(msg)
        if self._stopping:
            self.slots.unreserve(1)
            with contextlib.suppress(TransportError):
                await delivery.nak()  # hand it straight back: this worker is shutting down
            return
        self.slots.start()
        self.on_task(delivery)

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
        body = {"batch": n, "expires": int(self.expires_s * 1e9)}
        self.slots.reserve(n)
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.expires_s)
        except asyncio.CancelledError:
            await self._close_inbox()
            raise

    async def _ask(self) -> None:
        """Request what the free slots allow; start over when requests were lost."""
        if self._sub is None:
            await self._open()
        want = min(self.slots.free, max(1, -(-self.slots.free // self.share)))
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
        """Stop asking; hand back whatever still arrives; close once requests expired."""
        self._stopping = True
        self._wake.set()
        deadline = time.monotonic() + self.expires_s + 0.5
        while self.outstanding and time.monotonic() < deadline and self.nc.is_connected:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), deadline - time.monotonic())
        await self._close_inbox()
        self.slots.unreserve(self.outstanding)
        self.outstanding = 0
