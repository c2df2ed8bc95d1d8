"""The dispatcher process for one tenant: rebuild state from the log, then decide on inputs
and on the passing of time.

Each decision is appended before it is folded and before its input is acked: state never
holds what the log does not, and a crash anywhere decides again, appending nothing twice
(dedup ids). A decision the log can never store (a message over the size limit) becomes the
run's recorded end (``dispatcher.step.fit``), so no single input stalls the tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from dispatcher.decide import Event, Output, decide, due
from dispatcher.state import State, fold
from dispatcher.step import fit, fold_all
from eventstore import (
    RETRY,
    Append,
    AppendError,
    Connection,
    Delivery,
    DuplicateBatchError,
    Inputs,
    LogFullError,
    NatchetError,
    Service,
    append,
    append_atomic,
    ensure_dispatcher_consumer,
    ensure_task_consumer,
    max_message_bytes,
    replay,
)
from eventstore.provision import DISPATCHER_CONSUMER
from schemas import DecodeError, Scope, SubjectError, WorkflowDef, parse, stream_name
from schemas.codec import decode_json, decode_subject

log = logging.getLogger(__name__)

TICK_S = 0.25

OnLogFull = Callable[[str, str], Awaitable[None]]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Dispatcher(Service):
    """Turns events, run requests, results and time into runs, queued steps and verdicts.

    A :class:`~eventstore.Service`: ``run()`` until ``shutdown()``, or ``async with``."""

    def __init__(
        self,
        nc: Connection,
        tenant: str,
        *,
        fetch_batch: int = 64,
        on_log_full: OnLogFull | None = None,
    ) -> None:
        super().__init__()
        self.name = f"dispatcher {tenant}"
        self.nc = nc
        self.tenant = tenant
        self.fetch_batch = fetch_batch
        self.on_log_full = on_log_full
        self.log_full = False
        self.state = State()
        self.ready = asyncio.Event()
        self._queues: set[tuple[Scope, str]] = set()
        self._max_bytes = max_message_bytes(nc)

    async def rebuild(self) -> int:
        """Fold the registry and every run's history, to the log's end as it is now; return
        how many messages were read."""
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

    async def _serve(self) -> None:
        """Rebuild from the log, then decide until :meth:`shutdown`. Safe to run again
        after a failure: state is always rebuilt from the log, never trusted from before."""
        inputs = Inputs(self.nc, stream_name(self.tenant), DISPATCHER_CONSUMER)
        try:
            self.state = State()
            await ensure_dispatcher_consumer(self.nc, self.tenant)
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
            self.ready.set()
            await self._decide_until_stopped(inputs)
        finally:
            await inputs.close()

    async def _decide_until_stopped(self, inputs: Inputs) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while not self.stopping.is_set():
            try:
                deliveries = await inputs.fetch(self.fetch_batch, TICK_S)
                failures = 0
            except NatchetError as exc:
                failures += 1
                log.warning(
                    "dispatcher %s: fetch failed (%s); retrying in %.1fs",
                    self.tenant,
                    exc,
                    RETRY.delay(failures),
                )
                await self._pause(RETRY.delay(failures))
                continue
            for delivery in deliveries:
                await self._handle(delivery)
            if loop.time() >= next_tick:  # due() scans every run in flight: not per batch
                await self._tick()
                next_tick = loop.time() + TICK_S

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _tick(self) -> None:
        for outputs in due(self.state, utc_now()):
            await self._apply(None, None, outputs)

    def _read(self, delivery: Delivery) -> tuple[Scope, object] | None:
        """(scope, input) for a message, or None when it is not something to decide on."""
        parsed = parse(delivery.subject)
        if parsed.area == "events":
            try:
                payload = decode_json(delivery.data)
            except DecodeError as exc:
                log.warning("event %s at seq %d rejected: %s", delivery.subject, delivery.seq, exc)
                return None
            return parsed.scope, Event(parsed.event_key, delivery.seq, payload)
        return parsed.scope, decode_subject(parsed, delivery.data)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            read = self._read(delivery)
        except (SubjectError, DecodeError) as exc:
            log.warning("ignoring unreadable %s at seq %d: %s", delivery.subject, delivery.seq, exc)
            read = None
        if read is not None:
            scope, message = read
            if isinstance(message, WorkflowDef):
                await self._ensure_queue(scope, message.name)
            await self._apply(scope, message, decide(self.state, scope, message, utc_now()))
        await delivery.ack()

    async def _ensure_queue(self, scope: Scope, workflow: str) -> None:
        """The workflow's queue group, created by the engine (tenants cannot create
        consumers): before any task of it is offered, and again after every restart."""
        if (scope, workflow) not in self._queues:
            await ensure_task_consumer(self.nc, scope, workflow)
            self._queues.add((scope, workflow))

    async def _apply(self, scope: Scope | None, message: object, outputs: list[Output]) -> None:
        """Keep the decision storable, append it, then fold the input and the decision."""
        outputs = fit(self.state, outputs, self._max_bytes, utc_now())
        await self._append(outputs)
        fold_all(self.state, scope, message, outputs)

    async def _append(self, outputs: list[Output]) -> None:
        """Append a decision atomically, retrying until it is in the log (order matters)."""
        if not outputs:
            return
        items = [Append(o.subject, o.body, o.msg_id) for o in outputs]
        failures = 0
        while True:
            try:
                await _append_exactly(self.nc, items)
                self.log_full = False
                return
            except AppendError as exc:
                if self.stopping.is_set():
                    raise
                failures += 1
                if isinstance(exc, LogFullError):
                    await self._full(exc)
                else:
                    log.warning(
                        "dispatcher %s: append failed (%s), retrying in %.1fs",
                        self.tenant,
                        exc,
                        RETRY.delay(failures),
                    )
                await self._pause(RETRY.delay(failures))

    async def _full(self, exc: LogFullError) -> None:
        """The log is full: say so once (and have it recorded); the input stays unacked and
        the decision is retried until there is room, so nothing is lost."""
        if self.log_full:
            return
        self.log_full = True
        log.error("dispatcher %s: %s; retrying until there is room", self.tenant, exc)
        if self.on_log_full is not None:
            await self.on_log_full(self.tenant, exc.description)


async def _append_exactly(nc: Connection, items: list[Append]) -> None:
    """Append a decision as one atomic batch. A batch is refused whole when any of its dedup
    ids is already in the log (part of this decision was made before, by another input):
    then each message is appended on its own, so the new ones land and the old ones are
    acknowledged as the duplicates they are. Either way every message is in the log once."""
    try:
        await append_atomic(nc, items)
    except DuplicateBatchError:
        for item in items:
            await append(nc, item)
