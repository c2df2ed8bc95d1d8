"""Pipelined appends: many messages sent in order without waiting, their acks awaited
together. One file-stream append costs a round trip; hundreds in flight cost little more.

The server stores the messages of one connection in the order they were sent. When an
append fails, the ones after it may or may not be stored: a caller that needs "a prefix of
what I sent" treats any failure as "recover from the log" (the dispatcher restarts and
rebuilds; every message carries a dedup id, so sending again doubles nothing).

Acks come back on one wildcard inbox of the appender's own, each to the reply its append
named; an ack that is an error (a full log, a refused message) is kept as that append's
outcome. (nats-py's ``publish_async`` loses those: its reply handler raises instead of
failing the future, and the append then looks unanswered.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client as Connection
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from eventstore.append import Append, _check_ack, _headers, _seq, _too_large
from eventstore.errors import AppendError
from eventstore.sourcing import new_leader

NO_RESPONDERS = "503"


class Appender:
    """Sends appends on ``conn`` in order; :meth:`append_all` returns once every one of them
    is acknowledged, with their stream sequences."""

    def __init__(self, conn: Connection, *, timeout_s: float = 10.0) -> None:
        self.conn = conn
        self.timeout_s = timeout_s
        self._prefix = ""
        self._sub: Subscription | None = None
        self._pending: dict[str, asyncio.Future[Msg]] = {}
        self._ids = itertools.count()

    async def _open(self) -> None:
        self._prefix = self.conn.new_inbox()
        self._sub = await self.conn.subscribe(f"{self._prefix}.*", cb=self._answer)

    async def _answer(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject, None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def append_all(self, items: Sequence[Append]) -> list[int]:
        if self._sub is None:
            await self._open()
        loop = asyncio.get_running_loop()
        waiting: list[tuple[Append, asyncio.Future[Msg]]] = []
        elected = new_leader(self.conn)
        try:
            for item in items:
                reply = f"{self._prefix}.{next(self._ids)}"
                future: asyncio.Future[Msg] = loop.create_future()
                self._pending[reply] = future
                waiting.append((item, future))
                await self.conn.publish(
                    item.subject, item.body, reply=reply, headers=_headers(item) or None
                )
            return await asyncio.wait_for(self._acks_unless(waiting, elected), self.timeout_s)
        except nats.errors.MaxPayloadError:
            raise _too_large(self.conn, max(items, key=lambda i: len(i.body))) from None
        except nats.errors.Error as exc:
            raise AppendError(f"append failed: {exc}") from None
        except TimeoutError:
            raise AppendError(
                f"{len(items)} appends not all acknowledged within {self.timeout_s}s"
            ) from None
        finally:
            for _item, future in waiting:
                if not future.done():
                    future.cancel()
            self._pending = {k: f for k, f in self._pending.items() if not f.done()}

    async def append_each(self, items: Sequence[Append]) -> list[int | AppendError]:
        """Send ``items`` in order, as :meth:`append_all` does, but give each its own
        outcome: its stream sequence, or the :class:`AppendError` it met (too large, refused
        by the log, not acknowledged in time). One failure does not stop the others; the
        ones stored are stored in the order sent."""
        if self._sub is None:
            await self._open()
        loop = asyncio.get_running_loop()
        outcomes: list[int | AppendError | asyncio.Future[Msg]] = []
        try:
            for item in items:
                reply = f"{self._prefix}.{next(self._ids)}"
                future: asyncio.Future[Msg] = loop.create_future()
                try:
                    await self.conn.publish(
                        item.subject, item.body, reply=reply, headers=_headers(item) or None
                    )
                except nats.errors.MaxPayloadError:
                    outcomes.append(_too_large(self.conn, item))
                    continue
                except nats.errors.Error as exc:
                    outcomes.append(AppendError(f"append to {item.subject} failed: {exc}"))
                    continue
                self._pending[reply] = future
                outcomes.append(future)
            futures = [o for o in outcomes if isinstance(o, asyncio.Future)]
            if futures:
                await asyncio.wait(futures, timeout=self.timeout_s)
            return [self._outcome(item, o) for item, o in zip(items, outcomes, strict=True)]
        finally:
            for o in outcomes:
                if isinstance(o, asyncio.Future) and not o.done():
                    o.cancel()
            self._pending = {k: f for k, f in self._pending.items() if not f.done()}

    def _outcome(
        self, item: Append, outcome: int | AppendError | asyncio.Future[Msg]
    ) -> int | AppendError:
        if not isinstance(outcome, asyncio.Future):
            return outcome
        if not outcome.done() or outcome.cancelled():
            return AppendError(
                f"append to {item.subject} not acknowledged within {self.timeout_s}s"
            )
        msg = outcome.result()
        if (msg.headers or {}).get("Status") == NO_RESPONDERS:
            return AppendError(f"no stream captures {item.subject}")
        try:
            return _seq(_check_ack(msg.data, item.subject))
        except AppendError as exc:
            return exc

    async def _acks_unless(
        self, waiting: list[tuple[Append, asyncio.Future[Msg]]], elected: asyncio.Event
    ) -> list[int]:
        """The acks, unless the log elects a new leader first (a NATS cluster: appends sent
        while it had none are dropped unanswered; ``eventstore.sourcing``)."""
        acks = asyncio.ensure_future(self._acks(waiting))
        told = asyncio.ensure_future(elected.wait())
        try:
            await asyncio.wait({acks, told}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            acks.cancel()
            raise
        finally:
            told.cancel()
        if acks.done():
            return acks.result()
        acks.cancel()
        await asyncio.gather(acks, return_exceptions=True)
        raise AppendError(
            f"the log elected a new leader with {len(waiting)} appends in flight: "
            "some may be lost, recover from the log"
        )

    async def _acks(self, waiting: list[tuple[Append, asyncio.Future[Msg]]]) -> list[int]:
        seqs: list[int] = []
        for item, future in waiting:
            msg = await future
            if (msg.headers or {}).get("Status") == NO_RESPONDERS:
                raise AppendError(f"no stream captures {item.subject}")
            seqs.append(_seq(_check_ack(msg.data, item.subject)))
        return seqs

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):  # the connection may be gone
                await sub.unsubscribe()
