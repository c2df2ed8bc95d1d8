"""The dispatcher process for one tenant: rebuild state from the log, then decide on inputs
and on the passing of time."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from dispatcher.decide import Event, Output, decide, due
from dispatcher.state import State, fold
from eventstore import (
    Append,
    AppendError,
    DuplicateBatchError,
    LogFullError,
    append_atomic,
    ensure_dispatcher_consumer,
    ensure_task_consumer,
    replay,
)
from eventstore.provision import DISPATCHER_CONSUMER
from schemas import DecodeError, Scope, SubjectError, WorkflowDef, encode, parse, stream_name
from schemas.codec import decode_json, decode_subject

log = logging.getLogger(__name__)

RETRY_MAX_S = 5.0
TICK_S = 0.25

OnLogFull = Callable[[str, str], Awaitable[None]]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Dispatcher:
    """Turns events, run requests, results and time into runs, queued steps and verdicts."""

    def __init__(
        self,
        nc: NATS,
        tenant: str,
        *,
        fetch_batch: int = 64,
        on_log_full: OnLogFull | None = None,
    ) -> None:
        self.nc = nc
        self.tenant = tenant
        self.fetch_batch = fetch_batch
        self.on_log_full = on_log_full
        self.log_full = False
        self.state = State()
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self.decisions = 0
        self._queues: set[tuple[Scope, str]] = set()

    async def rebuild(self) -> int:
        """Fold the registry and every run's history; return how many messages were read."""
        count = 0
        subjects = [f"{self.tenant}.*.workflows.*", f"{self.tenant}.*.runs.>"]
        async for rec in replay(self.nc, self.tenant, subjects):
            count += 1
            try:
                parsed = parse(rec.subject)
                fold(self.state, parsed.scope, decode_subject(parsed, rec.data))
            except (SubjectError, DecodeError) as exc:
                log.warning("skipping unreadable %s at seq %d: %s", rec.subject, rec.seq, exc)
        return count

    async def run(self) -> None:
        """Rebuild from the log, then decide until :meth:`shutdown`. Safe to call again
        after a failure: state is always rebuilt from the log, never trusted from before."""
        self.state = State()
        js = self.nc.jetstream()
        await ensure_dispatcher_consumer(js, self.tenant)
        folded = await self.rebuild()
        log.info(
            "dispatcher %s: rebuilt from %d messages (%d runs in flight, %d workflows)",
            self.tenant,
            folded,
            len(self.state.runs),
            len(self.state.workflows),
        )
        self._queues.clear()
        for scope, workflow in list(self.state.workflows):
            await self._ensure_queue(scope, workflow)
        sub = await js.pull_subscribe_bind(DISPATCHER_CONSUMER, stream=stream_name(self.tenant))
        self.ready.set()
        failures = 0
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await sub.fetch(self.fetch_batch, timeout=TICK_S)
                    failures = 0
                except (TimeoutError, nats.errors.TimeoutError):
                    msgs = []  # nats-py raises either when no input arrived in time
                except nats.errors.Error as exc:
                    if self._stopping.is_set():
                        break
                    failures += 1
                    delay = min(0.1 * 2**failures, RETRY_MAX_S)
                    log.warning(
                        "dispatcher %s: fetch failed (%s); retrying in %.1fs",
                        self.tenant,
                        exc or type(exc).__name__,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                for msg in msgs:
                    await self._handle(msg)
                if loop.time() >= next_tick:  # due() scans every run in flight: not per batch
                    await self._tick()
                    next_tick = loop.time() + TICK_S
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _tick(self) -> None:
        for outputs in due(self.state, utc_now()):
            await self._apply(None, None, outputs)

    def _read(self, msg: Msg) -> tuple[Scope, object] | None:
        """(scope, input) for a message, or None when it is not something to decide on."""
        parsed = parse(msg.subject)
        if parsed.area == "events":
            try:
                payload = decode_json(msg.data)
            except DecodeError as exc:
                log.warning(
                    "event %s at seq %d rejected: %s",
                    msg.subject,
                    msg.metadata.sequence.stream,
                    exc,
                )
                return None
            return parsed.scope, Event(parsed.event_key, msg.metadata.sequence.stream, payload)
        return parsed.scope, decode_subject(parsed, msg.data)

    async def _handle(self, msg: Msg) -> None:
        try:
            read = self._read(msg)
        except (SubjectError, DecodeError) as exc:
            log.warning(
                "ignoring unreadable %s at seq %d: %s",
                msg.subject,
                msg.metadata.sequence.stream,
                exc,
            )
            read = None
        if read is not None:
            scope, message = read
            if isinstance(message, WorkflowDef):
                await self._ensure_queue(scope, message.name)
            await self._apply(scope, message, decide(self.state, scope, message, utc_now()))
        await msg.ack()

    async def _ensure_queue(self, scope: Scope, workflow: str) -> None:
        """The workflow's queue group, created by the engine (tenants cannot create
        consumers): before any task of it is offered, and again after every restart."""
        if (scope, workflow) not in self._queues:
            await ensure_task_consumer(self.nc.jetstream(), scope, workflow)
            self._queues.add((scope, workflow))

    async def _apply(self, scope: Scope | None, message: object, outputs: list[Output]) -> None:
        """Append a decision, then fold the input and the decision into state."""
        await self._append(outputs)
        if scope is not None:
            fold(self.state, scope, message)
        for out in outputs:
            fold(self.state, parse(out.subject).scope, out.message)
        self.decisions += bool(outputs)

    async def _append(self, outputs: list[Output]) -> None:
        """Append a decision atomically, retrying until it is in the log (order matters)."""
        if not outputs:
            return
        items = [Append(o.subject, encode(o.message), o.msg_id) for o in outputs]
        delay = 0.1
        while True:
            try:
                await append_atomic(self.nc, items)
                self.log_full = False
                return
            except DuplicateBatchError:
                return  # decided and appended before a restart
            except AppendError as exc:
                if self._stopping.is_set():
                    raise
                if isinstance(exc, LogFullError):
                    await self._full(exc)
                else:
                    log.warning(
                        "dispatcher %s: append failed (%s), retrying in %.1fs",
                        self.tenant,
                        exc,
                        delay,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _full(self, exc: LogFullError) -> None:
        """The log is full: say so once (and have it recorded); the input stays unacked and
        the decision is retried until there is room, so nothing is lost."""
        if self.log_full:
            return
        self.log_full = True
        log.error("dispatcher %s: %s; retrying until there is room", self.tenant, exc)
        if self.on_log_full is not None:
            await self.on_log_full(self.tenant, exc.description)

    async def shutdown(self) -> None:
        self._stopping.set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
