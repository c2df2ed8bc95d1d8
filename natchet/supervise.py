"""Keeping a long-running component alive: when it fails, say so and start it again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from eventstore import RESTART
from eventstore.waits import wait_set

log = logging.getLogger(__name__)

HEALTHY_S = 30.0  # a failure after this long running is a new failure: the backoff resets


async def supervise(what: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run ``run`` until it returns or ``stop`` is set, restarting it after a failure with
    ``eventstore.RESTART``'s backoff."""
    failures = 0
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # the supervisor's job is to outlive any one failure
            failures = 1 if loop.time() - started > HEALTHY_S else failures + 1
            log.exception("%s failed; restarting in %.1fs", what, RESTART.delay(failures))
        await wait_set(stop, RESTART.delay(failures))
