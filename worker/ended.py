"""Which runs ended lately, as this worker heard them: so that a task just queued need not
ask the log whether its run is over before its step starts.

Every worker hears every run's ``finished`` (to cancel the steps it runs of a run that
ended). Whoever has heard them without a break since before a task was queued knows whether
its run ended since: a run cannot end before its task is queued, and ends are remembered
for longer than a fresh task can be old. Otherwise (a redelivered task, an old one, a
reconnect since, the connection down now) the worker asks the log, one direct get
(``Intake._run_over``). Issue 9's profile: that direct get was ~10% of a worker's CPU and
one more round trip before every step.

Core NATS delivers at most once, so "without a break" means: connected, and no reconnect
since the listening began (messages published while away are not heard). The times
compared are the dispatcher's (``queued_at``) and this host's, which may differ:
``MARGIN_S`` allows for that. What a wrong guess costs is a step run for a run already over
(its result is ignored: the run's verdicts are in), never a step not run.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque

from eventstore import Connection

FRESH_S = 10.0  # a task queued longer ago than this is checked in the log
MARGIN_S = 1.0  # how far apart the clocks of the dispatcher's host and this one may be
KEEP_S = FRESH_S + 2 * MARGIN_S  # how long a run end heard is remembered


class RunEnds:
    """The run ends this worker heard lately, and since when it has heard them all."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._since: float | None = None  # listening without a break since (this host)
        self._reconnects = 0
        self._heard: dict[str, float] = {}  # run id -> when heard
        self._order: deque[tuple[float, str]] = deque()  # (when, run id), oldest first

    def listening(self) -> None:
        """The subscription to run ends is in place: from now on every end is heard."""
        self._since = time.time()
        self._reconnects = self._conn.stats["reconnects"]

    def heard(self, run_id: str) -> None:
        now = time.time()
        self._heard[run_id] = now
        self._order.append((now, run_id))
        while now - self._order[0][0] > KEEP_S:
            when, old = self._order.popleft()
            if self._heard.get(old) == when:
                del self._heard[old]

    def over(self, run_id: str, queued_at: str, delivered: int) -> bool | None:
        """Whether the task's run is over: True or False when this worker knows, None when
        the log must be asked."""
        if run_id in self._heard:
            return True
        if delivered != 1 or self._since is None or not self._conn.is_connected:
            return None
        if self._conn.stats["reconnects"] != self._reconnects:
            self.listening()  # ends published while it was away were not heard
            return None
        try:
            when = dt.datetime.fromisoformat(queued_at)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        queued = when.timestamp()
        if queued - MARGIN_S <= self._since or time.time() - queued > FRESH_S:
            return None
        return False
