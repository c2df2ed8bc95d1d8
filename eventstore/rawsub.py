"""Subscriptions whose messages skip nats-py's per-message work: what a reader of the whole
log subscribes with (:class:`eventstore.batches.RawBatches`, the rebuild's reader).

nats-py hands each message to its subscription through ``Client._process_msg``: its
headers parsed (``Client._process_headers``, a coroutine), a ``Msg`` built, put on the
subscription's queue, taken off by the subscription's task and passed to its callback,
another coroutine: ~5 us a message, a third of the reading of a rebuild (docs/benchmarks.md,
issue 10). A raw subscription is a subscription nats-py made and keeps (its sid, its
re-subscription on reconnect, its unsubscribe), whose messages the connection's parser
hands straight to a plain function as bytes: subject, reply, payload and the raw header
block; plain messages (no headers) are even cut off the wire by a shorter parser
(:mod:`eventstore.rawparse`). The connection's other subscriptions go through nats-py as
before.

This relies on private names of nats-py (``Client._process_msg``, which its parser calls
for every message, and the connection's parser ``Client._ps``, its buffer and state):
``tests/eventstore/test_rawread.py`` reads through them, so a nats-py that changes them
fails those tests, not silently.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

from nats.aio.client import Client as Connection
from nats.aio.subscription import Subscription

from eventstore import rawparse

# (subject, reply, payload, header block or None); called in the parser's loop: it must
# not raise, nor block.
RawHandler = Callable[[bytes, bytes, bytes, bytes | None], None]

_ROUTER = "_process_msg"  # the client's method every message goes through


_NOTHING: Iterator[Any] = iter(())  # exhausted: ``await`` on it returns at once


class _Done:
    """An awaitable that is done at once: what the parser awaits for a raw message. Its
    ``__await__`` hands out one exhausted iterator, not a new generator each time."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return _NOTHING  # type: ignore[return-value]


_DONE = _Done()


class _Router:
    """Stands in for a client's ``_process_msg``: a raw subscription's messages go to its
    handler, every other one to nats-py's own method."""

    def __init__(self, own: Callable[..., Any]) -> None:
        self.own = own
        self.routes: dict[int, RawHandler] = {}

    def __call__(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> Any:
        handler = self.routes.get(sid)
        if handler is None:
            return self.own(sid, subject, reply, data, headers)
        handler(subject, reply, data, headers)
        return _DONE


def _router(conn: Connection) -> _Router:
    router = conn.__dict__.get(_ROUTER)
    if not isinstance(router, _Router):
        router = _Router(getattr(conn, _ROUTER))
        setattr(conn, _ROUTER, router)
    return router


async def _ignore(msg: Any) -> None:  # nats-py's callback: never called
    return None


def supported(conn: Connection) -> bool:
    """Whether ``conn`` has the nats-py internals raw subscriptions use (its per-message
    method and a parser of nats-py's own class): a reader falls back to nats-py's ``Msg``
    path on a nats-py that changed them, rather than fail."""
    return callable(getattr(conn, _ROUTER, None)) and rawparse.supported(getattr(conn, "_ps", None))


async def subscribe_raw(conn: Connection, subject: str, handler: RawHandler) -> Subscription:
    """Subscribe ``handler`` to ``subject`` on ``conn`` (end it with :func:`unsubscribe_raw`)."""
    sub = await conn.subscribe(subject, cb=_ignore)
    router = _router(conn)
    router.routes[sub._id] = handler
    rawparse.install(conn._ps, router.routes)
    return sub


async def unsubscribe_raw(conn: Connection, sub: Subscription) -> None:
    """End a raw subscription; the last one gives the connection back its own method."""
    router = conn.__dict__.get(_ROUTER)
    if isinstance(router, _Router):
        router.routes.pop(sub._id, None)
        if not router.routes:
            delattr(conn, _ROUTER)
            rawparse.uninstall(conn._ps)
    await sub.unsubscribe()
