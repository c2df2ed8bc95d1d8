"""The worker's process entry point (``worker.start()``), and the only place the worker
handles signals or ends the process.

It runs the worker on a new event loop. The first SIGINT or SIGTERM shuts it down
gracefully (``Worker.shutdown``); once it has stopped, ``start()`` returns and the process
exits 0. A second signal ends the process at once with code 130: the steps still running
are lost, and their tasks come back to other workers after the consumer's ``ack_wait``.

Critical failures end the process with a non-zero code and one line on stderr (no
traceback), so a supervisor (systemd, Docker's ``restart:``, Kubernetes) starts it again
(:class:`worker.vitals.Exit`): NATS unreachable at start or lost past its bound (69), the
event loop blocked past its bound (70: at once, from the watchdog's thread, since the loop
cannot do anything), the engine refusing the worker's protocol (76, after a graceful
stop), bad settings (78). A lost NATS also ends the process at once: nothing can be
handed back without it, and the server gives the running tasks to other workers after
their ``ack_wait``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Protocol

from eventstore import (
    AuthRefusedError,
    ConfigError,
    ConnectError,
    NatchetError,
    logs,
    run_main,
    tracing,
)
from worker.errors import WorkerFatalError
from worker.vitals import Exit, Fatal

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_AT_ONCE = int(Exit.INTERRUPTED)


class Worker(Protocol):
    """What the entry point needs of a worker (``worker.runtime.Worker``)."""

    name: str
    on_fatal: Callable[[Fatal], None] | None

    async def run(self) -> None: ...

    async def shutdown(self) -> None: ...


def run_until_signalled(worker: Worker, grace_s: float) -> None:
    """Run ``worker`` until a signal, then shut it down; logs to stderr if nothing else
    configured logging."""
    worker.on_fatal = lambda fatal: _exit_now(worker.name, fatal)
    try:
        if not logging.getLogger().handlers:
            text = "%(asctime)s %(levelname)s %(message)s"
            logs.configure(logging.INFO, logs.log_format(), text)
        tracing.configure(f"natchet-worker {worker.name}")  # NATCHET_TRACING=otlp
        run_main(_serve(worker, grace_s))
    except WorkerFatalError as exc:
        _exit(worker.name, exc.code, exc.reason)
    except AuthRefusedError as exc:
        _exit(worker.name, Exit.NO_PERMISSION, str(exc))
    except ConnectError as exc:
        _exit(worker.name, Exit.NATS_LOST, str(exc))
    except ConfigError as exc:
        _exit(worker.name, Exit.CONFIG, str(exc))
    except NatchetError as exc:
        _exit(worker.name, Exit.FAILED, str(exc))


def _line(name: str, reason: str) -> str:
    first = next((part for part in reason.splitlines() if part.strip()), "failed")
    return f"natchet worker {name}: {first}"


def _exit(name: str, code: int, reason: str) -> None:
    """End the process with ``code`` and ``reason`` as one line on stderr."""
    sys.stderr.flush()
    print(_line(name, reason), file=sys.stderr, flush=True)
    raise SystemExit(code)


def _exit_now(name: str, fatal: Fatal) -> None:
    """From the watchdog's thread: the line, then the end of the process, whatever the
    event loop is doing."""
    try:
        sys.stderr.flush()
        print(_line(name, fatal.reason), file=sys.stderr, flush=True)
    finally:
        os._exit(int(fatal.code))


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
