"""The worker's process entry point (``worker.start()``), and the only place the worker
handles signals or ends the process.

It runs the worker on a new event loop. The first SIGINT or SIGTERM shuts it down
gracefully (``Worker.shutdown``); once it has stopped, ``start()`` returns and the process
exits 0. A second signal ends the process at once with code 130: the steps still running
are lost, and their tasks come back to other workers after the consumer's ``ack_wait``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Protocol

from eventstore import logs, run_main

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_AT_ONCE = 130


class Worker(Protocol):
    """What the entry point needs of a worker (``worker.runtime.Worker``)."""

    name: str

    async def run(self) -> None: ...

    async def shutdown(self) -> None: ...


def run_until_signalled(worker: Worker, grace_s: float) -> None:
    """Run ``worker`` until a signal, then shut it down; logs to stderr if nothing else
    configured logging."""
    if not logging.getLogger().handlers:
        logs.configure(logging.INFO, logs.log_format(), "%(asctime)s %(levelname)s %(message)s")
    run_main(_serve(worker, grace_s))


async def _serve(worker: Worker, grace_s: float) -> None:
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(sig: signal.Signals) -> None:
        if stopping:
            log.warning("worker %s: second %s, exiting now", worker.name, sig.name)
            sys.stderr.flush()
            os._exit(EXIT_AT_ONCE)
        log.info(
            "worker %s: %s, shutting down (grace %.0fs; again to exit now)",
            worker.name,
            sig.name,
            grace_s,
        )
        stopping.append(asyncio.create_task(worker.shutdown()))

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await worker.run()
        await asyncio.gather(*stopping)
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
