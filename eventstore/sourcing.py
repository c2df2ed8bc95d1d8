"""Tasks flowing again soon after the log's leader dies (a NATS cluster, docs/scaling.md).

A tenant's task queues (``tasks-<t>``) are a work-queue stream *sourced* from its log: the
server that leads the task queues reads the log through a consumer it creates on the log's
leader. When that leader dies, the consumer dies with it, and the task queues notice only
on their next 10-second health check of the source (nats-server's
``sourceHealthCheckInterval``): measured, tasks stopped reaching workers for 12 s after a
kill -9 of the log's leader, 6 s of them after the log had a new leader.

:class:`SourcingNudge` listens for the advisory the server publishes when the log elects a
leader and asks the task queues' leader to step down: the new leader sets its sourcing up
at once, from where the stream's replicated state says it was (nothing skipped, nothing
sourced twice). Measured the same way: 0.7 s after the log's election instead of 6 s.
The new leader's first try can fail (when the cluster's meta leader died too), and the
server then backs off for long (seen: 40 s): so for 30 s after an election it steps the
task queues down again, every 3 s at most, while their source stays behind and silent.

It also tells appenders on the same connection (:func:`new_leader`): an append sent while
the log had no leader is dropped unanswered, and the dispatcher's :class:`~eventstore.
pipeline.Appender` would wait out its 10 s timeout before the dispatcher recovers from the
log; told, it fails at once and the dispatcher recovers as soon as the log can be read.

A tenant's dispatch split into partitions (issue 16) has one dispatcher per partition,
perhaps in different engines, each appending on its engine's connection: every one needs
telling, and one step-down per election is enough. So a nudge may only listen
(``step_down=False``: partitions other than 0), and two nudges on one connection (an engine
holding partition 0 and another) tell its appenders once per advisory, not twice (a second
telling would fail appends sent after the first, for nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

import nats.errors
from nats.aio.client import Client as Connection
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from eventstore.lifecycle import Service
from schemas.subjects import stream_name, tasks_stream_name

log = logging.getLogger(__name__)

LEADER_ELECTED = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."
STEP_DOWN = "$JS.API.STREAM.LEADER.STEPDOWN."
STEP_DOWN_TIMEOUT_S = 2.0
WATCH_S = 30.0  # how long after an election the task queues' sourcing is watched
RETRY_S = 3.0  # at most one step-down this often
STALLED_NS = 2_000_000_000  # a source behind and silent this long has stalled

_elected: weakref.WeakKeyDictionary[Connection, asyncio.Event] = weakref.WeakKeyDictionary()
# The last advisory told on each connection (each subscription gets its own copy).
_told: weakref.WeakKeyDictionary[Connection, bytes] = weakref.WeakKeyDictionary()


def new_leader(conn: Connection) -> asyncio.Event:
    """Set when a :class:`SourcingNudge` on ``conn`` next hears of a new leader of its log
    (take it before sending; a fresh event follows each election)."""
    return _elected.setdefault(conn, asyncio.Event())


class SourcingNudge(Service):
    """For one tenant, on a connection to its log's account: a new leader of the log makes
    the task queues' leader step down, so their sourcing starts again at once (unless
    ``step_down`` is false: then it only tells the connection's appenders)."""

    name = "sourcing nudge"

    def __init__(self, conn: Connection, tenant: str, *, step_down: bool = True) -> None:
        super().__init__()
        self.conn = conn
        self.step_down = step_down
        self.log = stream_name(tenant)
        self.tasks = tasks_stream_name(tenant)
        self.nudges = 0  # step-downs the task queues' leader accepted
        self._wake = asyncio.Event()

    async def _serve(self) -> None:
        sub: Subscription = await self.conn.subscribe(LEADER_ELECTED + self.log, cb=self._elected)
        try:
            await self.until_stopping(self._watch())
        finally:
            # A closing connection takes the subscription with it.
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _elected(self, msg: Msg) -> None:
        if _told.get(self.conn) != msg.data:  # another nudge here has not told it yet
            _told[self.conn] = msg.data
            new_leader(self.conn).set()
            _elected[self.conn] = asyncio.Event()
        if self.step_down:
            self._wake.set()

    async def _watch(self) -> None:
        """After each election of the log: step the task queues' leader down, then, for
        ``WATCH_S``, again (every ``RETRY_S`` at most) while their source stays stalled. A
        new leader's first try may fail (seen: the cluster's meta leader had died too), and
        the server then waits out a long backoff before it sources again (40 s)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._step_down()
            end = loop.time() + WATCH_S
            while loop.time() < end and not self._wake.is_set():
                await asyncio.sleep(RETRY_S)  # the source's progress is polled, not pushed
                if await self._stalled():
                    await self._step_down()

    async def _stalled(self) -> bool:
        """The task queues' source is behind the log and has said nothing for a while."""
        try:
            info = await self.conn.jetstream().stream_info(self.tasks)
        except (nats.errors.Error, TimeoutError):
            return False  # no answer: no leader to step down either
        for source in info.sources or ():
            behind = (source.lag or 0) > 0
            quiet = source.active is None or source.active < 0 or source.active > STALLED_NS
            if source.error or (behind and quiet):
                return True
        return False

    async def _step_down(self) -> None:
        try:
            reply = await self.conn.request(
                STEP_DOWN + self.tasks, b"", timeout=STEP_DOWN_TIMEOUT_S
            )
        except (nats.errors.Error, TimeoutError) as exc:
            # Without a leader (it died with the log's), the task queues elect one, which
            # sets its sourcing up anyway.
            why = exc or type(exc).__name__
            log.info("%s has a new leader; %s not stepped down: %s", self.log, self.tasks, why)
            return
        if b'"success":true' in reply.data:
            self.nudges += 1
            log.info(
                "%s has a new leader: %s stepped down to source it again", self.log, self.tasks
            )
        else:
            log.info(
                "%s has a new leader; %s did not step down: %s",
                self.log,
                self.tasks,
                reply.data[:200],
            )
