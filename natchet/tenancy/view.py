"""The engine's live fold of the system stream: who the tenants and tokens are, now."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS

from eventstore.system import ensure_system_stream, follow_system, system_last_seq
from schemas.tenancy import SystemMessage, TenancyState, TenantCreated, decode_system

log = logging.getLogger(__name__)

Listener = Callable[[SystemMessage], Awaitable[None]]


class TenancyView:
    """Folds ``natchet-system`` into a :class:`TenancyState` and keeps following it.

    ``listeners`` hear every message after it is folded (the engine starts new tenants,
    the callout service kicks revoked tokens' connections)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.state = TenancyState()
        self.seq = 0
        self.ready = asyncio.Event()
        self.listeners: list[Listener] = []
        self._advanced = asyncio.Condition()

    async def run(self) -> None:
        await ensure_system_stream(self.nc)
        start_end = await system_last_seq(self.nc)
        if start_end == 0:
            self.ready.set()
        async for rec in follow_system(self.nc):
            try:
                message = decode_system(rec.subject, rec.data)
            except (ValueError, TypeError) as exc:
                log.error("system stream #%d (%s) skipped: %s", rec.seq, rec.subject, exc)
            else:
                self.state.fold(message)
                for listener in self.listeners:
                    await listener(message)
            async with self._advanced:
                self.seq = rec.seq
                self._advanced.notify_all()
            if rec.seq >= start_end:
                self.ready.set()

    async def catch_up(self, timeout_s: float = 2.0) -> bool:
        """Wait until everything appended so far is folded; ``False`` if it took too long."""
        end = await system_last_seq(self.nc)
        deadline = time.monotonic() + timeout_s
        async with self._advanced:
            while self.seq < end:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                try:
                    await asyncio.wait_for(self._advanced.wait(), left)
                except TimeoutError:
                    return False
        return True

    def tenants(self) -> list[str]:
        return sorted(self.state.tenants)

    @staticmethod
    def is_new_tenant(message: SystemMessage) -> bool:
        return isinstance(message, TenantCreated)
