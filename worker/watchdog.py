"""The watchdog: a thread that judges the worker's vitals from outside its event loop.

Every ``CHECK_S`` it reads :meth:`Vitals.check`; on a fatal verdict (NATS lost, or the loop
blocked, past their exit bounds) it calls ``on_fatal`` from its own thread (once, until
that verdict passes): the loop it would report to may be the thing that is stuck. The
worker's entry point (``worker.start()``) ends the process there; a worker run as a
library stops on a lost NATS and only logs a blocked loop (:class:`worker.runtime.Worker`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from worker.vitals import Fatal, Vitals

log = logging.getLogger(__name__)

CHECK_S = 0.25
WARN_EVERY_S = 5.0


class Watchdog:
    def __init__(self, vitals: Vitals, name: str, on_fatal: Callable[[Fatal], None]) -> None:
        self.vitals = vitals
        self.name = name
        self.on_fatal = on_fatal
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"watchdog:{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Idempotent; returns once the thread has ended."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        next_warning = waited = 0.0
        reported: set[int] = set()  # fatal verdicts told, until they pass
        while not self._stop.wait(CHECK_S):
            waited += CHECK_S
            verdict = self.vitals.check()
            fatal = verdict.fatal
            if fatal is not None and fatal.code not in reported:
                reported.add(fatal.code)
                self.on_fatal(fatal)  # the entry point's never returns
            elif fatal is None:
                reported.clear()
            if not verdict.problems:
                next_warning = 0.0
            elif waited >= next_warning:
                log.warning("worker %s unhealthy: %s", self.name, "; ".join(verdict.problems))
                next_warning = waited + WARN_EVERY_S
