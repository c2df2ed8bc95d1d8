"""A private event loop thread, so the client's sync API works from any thread."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from eventstore import Connection, close

T = TypeVar("T")


class Portal:
    """Runs coroutines on its own loop with its own NATS connection, opened on first use."""

    def __init__(self, connect: Callable[[], Awaitable[Connection]]) -> None:
        self._connect = connect
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: Connection | None = None
        self._connecting: asyncio.Lock | None = None
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

    async def nc(self) -> Connection:
        """The portal's one connection (runs on the portal loop; concurrent callers share;
        it reconnects by itself until the portal closes it)."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._nc is None:
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
        """Drain the connection, cancel what is left on the loop, and stop the thread."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._close_on_loop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if not loop.is_running():
            loop.close()

    async def _close_on_loop(self) -> None:
        conn, self._nc = self._nc, None
        if conn is not None:
            with contextlib.suppress(TimeoutError):
                await close(conn)
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        # Let the transports run their connection_lost callbacks, which close the sockets.
        for _ in range(3):
            await asyncio.sleep(0)
