"""The engine's live fold of the system stream: who the tenants and tokens are, now."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from eventstore import Connection, Record, Service
from eventstore.system import ensure_system_stream, follow_system, system_last_seq
from natchet.tenancy.state import TenancyState
from schemas.tenancy import SystemMessage, decode_system

log = logging.getLogger(__name__)

Listener = Callable[[SystemMessage], Awaitable[None]]


def fold_record(state: TenancyState, rec: Record) -> SystemMessage | None:
    """Validate one system record and fold it; a bad one is logged and skipped (``None``)."""
    try:
        message = decode_system(rec.subject, rec.data)
    except (ValueError, TypeError) as exc:
        log.error("system stream #%d (%s) skipped: %s", rec.seq, rec.subject, exc)
        return None
    state.fold(message)
    return message


class TenancyView(Service):
    """Folds ``natchet-system`` into a :class:`TenancyState` and keeps following it.

    Every record is validated before it is folded (``decode_system``): a malformed or
    hostile one is logged and skipped. ``listeners`` hear every folded message (the engine
    starts new tenants, the callout kicks revoked tokens' connections); a listener that
    fails is logged, and the fold goes on."""

    name = "tenancy view"

    def __init__(self, nc: Connection, *, replicas: int | None = None) -> None:
        super().__init__()
        self.nc = nc
        self.replicas = replicas  # of the system stream (None: leave it as it is)
        self.state = TenancyState()
        self.seq = 0
        self.ready = asyncio.Event()
        self.listeners: list[Listener] = []
        self._advanced = asyncio.Condition()

    async def _serve(self) -> None:
        """Fold from the first record; safe to run again after a failure (it starts over
        from a fresh state, and listeners hear every record again)."""
        await self.until_stopping(self._fold())

    async def _fold(self) -> None:
        self.state = TenancyState()
        self.seq = 0
        await ensure_system_stream(self.nc, self.replicas)
        start_end = await system_last_seq(self.nc)
        if start_end == 0:
            self.ready.set()
        async for rec in follow_system(self.nc):
            message = fold_record(self.state, rec)
            if message is not None:
                await self._tell(message)
            async with self._advanced:
                self.seq = rec.seq
                self._advanced.notify_all()
            if rec.seq >= start_end:
                self.ready.set()

    async def _tell(self, message: SystemMessage) -> None:
        for listener in self.listeners:
            try:
                await listener(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # one failing listener must not stop the fold for all
                log.exception("system stream: handling %s failed", type(message).__name__)

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
