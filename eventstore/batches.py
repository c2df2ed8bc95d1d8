"""Fetching a pull consumer's messages in batches, with no task per message.

nats-py's ``fetch`` waits for every message of a batch with a task of its own (and a uuid
and a timer): ~20 µs a message, paid by every reader of the whole log, the dispatcher and
the projector, for every message (issue 9: 5 messages a run, each read by both). Here the
messages land in a list, by a callback on the reader's own inbox, and a fetch waits for the
answer to its request as a whole.

At most one request is outstanding, and each one ends in a way the reader sees: a
``no_wait`` request for a batch is answered at once with what there is and, if that is less
than asked, a status (404, or 408/409); only when there is nothing, a request for one
message waits up to ``wait_s`` (a 408 ends it if nothing came). So a fetch returns as soon
as messages are there, a batch is as full as the consumer allows, and nothing arrives for a
request the reader has given up on, but after a timeout the server did not answer in
(a lost connection): such a late message is handed out by the next fetch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Generic, TypeVar

import nats.errors
import orjson
from nats.aio.client import Client as Connection
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from eventstore.errors import TransportError
from eventstore.records import AckInfo, ack_info
from eventstore.waits import wait_set

STATUS = "Status"
DESCRIPTION = "Description"
# Statuses that end a pull request: nothing there (for ``no_wait``), expired, or the
# consumer or request gone. Any other status is an error.
ENDS = frozenset({"404", "408", "409"})
ANSWER_S = 5.0  # how long the server may take to answer a ``no_wait`` request
LATE_S = 1.0  # how long after its expiry a waiting request's 408 may arrive

T = TypeVar("T")


class PullBatches(Generic[T]):
    """Batches of the pull consumer ``consumer`` on ``stream``, over one inbox, as items of
    type ``T``: what the subclass's subscription puts on ``_queue`` (a message, or a status
    that ends a request), told apart by :meth:`_status` and read by :meth:`_info`."""

    def __init__(self, conn: Connection, stream: str, consumer: str) -> None:
        self.conn = conn
        self.stream = stream
        self.consumer = consumer
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._sub: Subscription | None = None
        self._queue: collections.deque[T] = collections.deque()
        self._arrived = asyncio.Event()
        self._more = True  # whether the consumer had more to hand out, last we heard

    @property
    def queued(self) -> int:
        """Messages delivered here and not fetched yet (late ones)."""
        return len(self._queue)

    async def _subscribe(self, inbox: str) -> Subscription:
        raise NotImplementedError

    def _status(self, item: T) -> tuple[str, str] | None:
        """The status ``item`` is (and its description), or ``None`` for a message."""
        raise NotImplementedError

    def _info(self, item: T) -> AckInfo:
        """Where a message sits (its ack subject)."""
        raise NotImplementedError

    async def _open(self) -> None:
        self._inbox = self.conn.new_inbox()
        try:
            self._sub = await self._subscribe(self._inbox)
        except nats.errors.Error as exc:
            raise TransportError(f"cannot read {self.consumer} on {self.stream}: {exc}") from None

    async def fetch(self, n: int, wait_s: float) -> list[T]:
        """Up to ``n`` messages, waiting up to ``wait_s`` for the first; ``[]`` if none.

        Each message says how many more the consumer had when it was sent (its ack
        subject): a request for more is sent only when there were more, so a reader that
        keeps up (one message in, one out) sends one request per message, not three."""
        if self._sub is None:
            await self._open()
        got: list[T] = []
        self._take(n, got)  # late ones, from a request given up on (and its status)
        more = len(got) < n and (self._more or bool(got))
        if more and not await self._ask({"batch": n - len(got), "no_wait": True}, got, n, ANSWER_S):
            return got
        if not got:
            wait_ns = max(int(wait_s * 1e9), 1_000_000)
            loop = asyncio.get_running_loop()
            until = loop.time() + wait_s
            if not await self._ask({"batch": 1, "expires": wait_ns}, got, 1, wait_s + LATE_S):
                return got
            if got and n > 1 and self._more:  # one came, and more are there: the batch
                await self._ask({"batch": n - 1, "no_wait": True}, got, n, ANSWER_S)
            elif not got and loop.time() < until:
                # Ended early with nothing (409: the consumer gone, say): wait out the time
                # asked for, so that a reader of a broken consumer does not spin.
                await asyncio.sleep(until - loop.time())
        return got

    async def _ask(self, request: dict[str, object], got: list[T], n: int, limit_s: float) -> bool:
        """Send a pull request and gather its answer into ``got`` until it holds ``n`` or a
        status ends the request; ``False`` if no answer came within ``limit_s``."""
        try:
            await self.conn.publish(self._next, orjson.dumps(request), reply=self._inbox)
        except nats.errors.Error as exc:
            raise TransportError(f"cannot read {self.consumer} on {self.stream}: {exc}") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while True:
            if self._take(n, got):
                self._more = False  # the request ended short: nothing more was there
                return True
            if len(got) >= n:
                # Redeliveries are not counted in ``pending``: after one, there may be more.
                last = self._info(got[-1])
                self._more = last.pending > 0 or last.delivered > 1
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._arrived.clear()
            if not await wait_set(self._arrived, left):
                return False

    def _take(self, n: int, got: list[T]) -> bool:
        """Move queued messages into ``got`` until it holds ``n``; ``True`` when a status
        that ends a request was taken."""
        queue = self._queue
        while queue and len(got) < n:
            item = queue.popleft()
            said = self._status(item)
            if said is None:
                got.append(item)
                continue
            status, description = said
            if status in ENDS:
                return True
            if status != "100":  # 100: a heartbeat
                raise TransportError(
                    f"reading {self.consumer} on {self.stream}: status {status}"
                    f" ({_said(status, description)})"
                )
        return False

    async def _unsubscribe(self, sub: Subscription) -> None:
        await sub.unsubscribe()

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        self._queue.clear()
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._unsubscribe(sub)


class Batches(PullBatches[Msg]):
    """Batches of nats-py messages."""

    async def _deliver(self, msg: Msg) -> None:
        self._queue.append(msg)
        self._arrived.set()

    async def _subscribe(self, inbox: str) -> Subscription:
        return await self.conn.subscribe(inbox, cb=self._deliver)

    def _status(self, item: Msg) -> tuple[str, str] | None:
        headers = item.headers
        status = headers.get(STATUS) if headers else None
        if status is None:
            return None
        assert headers is not None
        return status, headers.get(DESCRIPTION, "")

    def _info(self, item: Msg) -> AckInfo:
        return ack_info(item)


def _said(status: str, description: str) -> str:
    """What a status means, in one line."""
    if status == "503":
        return "no responders: the consumer or its stream does not exist"
    return (description.strip().splitlines() or ["no description"])[0]
