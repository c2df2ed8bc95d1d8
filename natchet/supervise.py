"""Keeping a long-running component alive: when it fails, say so and start it again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

RESTART_MIN_S = 0.5
RESTART_MAX_S = 10.0
HEALTHY_S = 30.0


async def supervise(what: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run ``run`` until it returns or ``stop`` is set, restarting it with backoff after a
    failure (the backoff resets once it has run fine for a while)."""
    delay = RESTART_MIN_S
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # the supervisor's job is to outlive any one failure
            if loop.time() - started > HEALTHY_S:
                delay = RESTART_MIN_S
            log.exception("%s failed; restarting in %.1fs", what, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, RESTART_MAX_S)
