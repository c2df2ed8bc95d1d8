"""A private event loop thread, so the client's sync API works from any thread."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import nats.errors
from nats.aio.client import Client as NATS

T = TypeVar("T")


class Portal:
    """Runs coroutines on its own loop with its own NATS connection, opened on first use."""

    def __init__(self, connect: Callable[[], Awaitable[NATS]]) -> None:
        self._connect = connect
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: NATS | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name="natchet-client", daemon=True
                )
                self._thread.start()
                self._loop = loop
                atexit.register(self.close)
            return self._loop

    async def nc(self) -> NATS:
        if self._nc is None or self._nc.is_closed:
            self._nc = await self._connect()
        return self._nc

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the portal and wait for it (from a thread that is not the portal)."""
        return self.submit(coro).result(timeout_s)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the portal from any event loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._nc is not None and not self._nc.is_closed:
            nc = self._nc
            with contextlib.suppress(nats.errors.Error, TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(nc.drain(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
