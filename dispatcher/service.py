"""The dispatcher process for one tenant: rebuild state from the log, then decide on inputs
and on the passing of time.

It works in batches: it fetches up to ``fetch_batch`` messages of the log, decides each
input among them (folding its decision at once, so the next input sees it), sends every
output of the batch in order without waiting (``eventstore.Appender``), awaits their acks
together, and only then acks the messages of the batch. An append that fails leaves the log
holding some prefix of what was sent: the dispatcher then stops, and the supervisor starts
it again from the log, where inputs not acked come back and ``complete`` finishes decisions
the failure cut short (outputs are ordered so that every prefix can be finished, and carry
dedup ids, so nothing lands twice).
A decision the log can never store (a message over the size limit) becomes the run's
recorded end (``dispatcher.step.fit``), so no single input stalls the tenant.

It starts from its latest snapshot and folds only the log after it, and snapshots again now
and then (``dispatcher.checkpoint``, ``dispatcher.snapshot``): restart time does not grow
with history, and finished runs leave memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from dispatcher.checkpoint import Checkpoints, SnapshotPolicy
from dispatcher.decide import Event, Output, complete, due
from dispatcher.firing import Fire, TimerOp, complete_triggers, pending_timers, timer_ops
from dispatcher.folding import fold
from dispatcher.hearing import Hearing
from dispatcher.moved import moves
from dispatcher.owning import decides
from dispatcher.partition import WHOLE, Partition
from dispatcher.replay import Original, Replay, original_of, replayable_id
from dispatcher.state import State
from dispatcher.step import decide_on, settle
from dispatcher.tally import Observer, Tally, age_s, held, observe, outcomes
from dispatcher.traces import RunTraces
from eventstore import (
    RETRY,
    Append,
    Appender,
    AppendError,
    AppendRefusedError,
    Connection,
    Delivery,
    Inputs,
    LogFullError,
    NatchetError,
    Patterns,
    PermissionDeniedError,
    Service,
    SnapshotStore,
    direct_history,
    direct_last,
    dispatcher_filters,
    ensure_dispatcher_consumer,
    ensure_task_consumer,
    last_seq,
    max_message_bytes,
    replay,
    tracing,
)
from eventstore.provision import FIRES_CONSUMER, ensure_fires_consumer
from eventstore.timers import Timers
from eventstore.waits import wait_set
from schemas import (
    DecodeError,
    RunRequested,
    Scope,
    SubjectError,
    WorkflowDef,
    parse,
    stream_name,
)
from schemas.codec import decode_as, decode_json, decode_subject
from schemas.filters import filter_error
from schemas.messages import TimerFired
from schemas.metadata import metadata_of_headers
from schemas.priority import HEADER as PRIORITY_HEADER
from schemas.priority import header_priority
from schemas.subjects import schedules_stream_name

log = logging.getLogger(__name__)

TICK_S = 0.25

# A run that ever existed has one of these in the log.
_EXISTED = ("created", "rejected")

# What the dispatcher appends that changes its state when folded (and the static rate
# limits clients set: folded, nothing to decide).
_OUTPUTS = """
{t}.*.runs.*.created {t}.*.runs.*.rejected {t}.*.runs.*.queued {t}.*.runs.*.retry_scheduled
{t}.*.runs.*.step_finished {t}.*.runs.*.finished {t}.*.runs.*.woken {t}.*.runs.*.held
{t}.*.tasks.>
{t}.*.crons.*.armed {t}.*.crons.*.fired {t}.*.crons.*.rejected
{t}.*.schedules.*.fired {t}.*.schedules.*.rejected
{t}.*.ratelimits.*
"""

DEFAULT_SNAPSHOTS = SnapshotPolicy()

OnLogFull = Callable[[str, str], Awaitable[None]]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def append_failure(exc: AppendError) -> str:
    """A fixed word for why an append failed (a metric label: a few values only)."""
    if isinstance(exc, LogFullError):
        return "log_full"
    if isinstance(exc, AppendRefusedError):
        return "refused"
    if isinstance(exc, PermissionDeniedError):
        return "permission_denied"
    return "unacknowledged"


class Dispatcher(Service):
    """Turns events, run requests, results and time into runs, queued steps and verdicts.

    A :class:`~eventstore.Service`: ``run()`` until ``shutdown()``, or ``async with``."""

    def __init__(
        self,
        nc: Connection,
        tenant: str,
        *,
        partition: Partition = WHOLE,
        fetch_batch: int = 64,
        on_log_full: OnLogFull | None = None,
        snapshots: SnapshotPolicy = DEFAULT_SNAPSHOTS,
        observer: Observer | None = None,
    ) -> None:
        super().__init__()
        self.partition = partition
        self.nc = nc
        self.tenant = tenant
        # How it names itself in logs: the tenant, and its partition when there are several.
        self.label = tenant if partition.whole else f"{tenant} partition {partition.index}"
        self.name = f"dispatcher {self.label}"
        self.fetch_batch = fetch_batch
        self.on_log_full = on_log_full
        self.log_full = False
        self.state = State()
        self.state.partition = partition
        self.ready = asyncio.Event()
        self._queues: set[tuple[Scope, str]] = set()
        self._max_bytes = max_message_bytes(nc)
        self._appender: Appender | None = None
        # The consumer reads the whole log; these are the subjects decided on.
        self._inputs = Patterns(dispatcher_filters(tenant))
        # ... and these the others that change state: what this dispatcher appends. It
        # folds them as it appends them; delivered, they are folded only if another
        # dispatcher (one before it) stored them, so that state holds every message acked.
        self._outputs = Patterns(_OUTPUTS.format(t=tenant).split())
        self._stored: set[int] = set()  # sequences of outputs stored, not yet delivered back
        # Inputs of this batch whose decision another partition reports (``observer``): it
        # decides on them, or they are every partition's (events, registrations).
        self._others: set[int] = set()
        self.snapshots = snapshots
        self._checkpoints = Checkpoints(SnapshotStore(nc, tenant, partition.snapshot), snapshots)
        # What the decisions not yet stored did (``dispatcher.tally``), told to ``observer``
        # once the log holds them.
        self.observer = observer
        tracer = tracing.tracer()
        self._traces = RunTraces(tracer, tenant) if tracer is not None else None
        self._tally = Tally()
        # Crons and scheduled runs: their timers (``eventstore.timers``), what to do to them
        # once the decisions of the batch are stored, and fires read but not yet decided.
        self._timers = Timers(nc, tenant)
        self._timer_ops: list[TimerOp] = []
        self._fires: list[Delivery] = []
        # Live workers, from their heartbeats (an outside input, like time: not from the
        # log, kept across restarts of the service, never snapshotted): ``dispatcher.hearing``.
        self.hearing = Hearing(nc, tenant)
        self.workers = self.hearing.workers
        self.state.workers = self.workers
        self.state.capacity = self.workers.capacity  # priority's window (dispatcher.flowgates)
        self.heard = self.hearing.heard  # the worker gate's ``on_beat``

    async def rebuild(self, start_seq: int = 1, until_seq: int | None = None) -> int:
        """Fold the registry, every run's history and every task offered, from ``start_seq``
        to ``until_seq`` (default: the log's end as it is now); return how many messages
        were read."""
        count = 0
        t = self.tenant
        subjects = [
            f"{t}.*.workflows.*",
            f"{t}.*.runs.>",
            f"{t}.*.tasks.>",
            f"{t}.*.crons.>",
            f"{t}.*.schedules.>",
            f"{t}.*.ratelimits.*",
        ]
        async for rec in replay(
            self.nc, self.tenant, subjects, start_seq=start_seq, until_seq=until_seq
        ):
            count += 1
            self._fold_stored(rec.subject, rec.data, rec.seq)
        return count

    def log_fields(self) -> dict[str, object]:
        if self.partition.whole:
            return {"tenant": self.tenant}
        return {"tenant": self.tenant, "partition": self.partition.index}

    async def _serve(self) -> None:
        """Restore (the latest snapshot and the log after it, or the whole log), then decide
        until :meth:`shutdown`. Safe to run again after a failure: state is always restored
        from what is stored, never trusted from before."""
        coordinator = self.partition.coordinator
        inputs = Inputs(self.nc, stream_name(self.tenant), self.partition.consumer)
        fires = Inputs(self.nc, schedules_stream_name(self.tenant), FIRES_CONSUMER)
        puller: asyncio.Task[None] | None = None
        self._checkpoints = checkpoints = Checkpoints(self._checkpoints.store, self.snapshots)
        self._stored.clear()
        self._others.clear()
        self._timer_ops, self._fires = [], []
        self._tally = Tally()  # what a failed run decided and never stored is not counted
        try:
            await ensure_dispatcher_consumer(self.nc, self.tenant, name=self.partition.consumer)
            if coordinator:  # crons' and scheduled runs' timers are partition 0's
                await ensure_fires_consumer(self.nc, self.tenant)
            floor = await inputs.ack_floor()
            await self._restore(floor)
            await self.hearing.hear_kept_beats()
            self._queues.clear()
            for scope, workflow in list(self.state.workflows):
                await self._ensure_queue(scope, workflow)
            unfinished = complete(self.state, utc_now())
            if unfinished:
                log.info(
                    "dispatcher %s: finishing %d decisions cut short", self.label, len(unfinished)
                )
                await self._store(
                    [self._carry(None, self._settle(None, None, d)) for d in unfinished]
                )
            # Runs waiting for their concurrency key that a decision cut short left waiting.
            await self._store([self._carry(None, self._settle(None, None, []))])
            if coordinator:
                await self._rearm()
                puller = asyncio.create_task(self._pull_fires(fires))
            checkpoints.take(self.state, floor, asyncio.get_running_loop().time())
            self.ready.set()
            await self._decide_until_stopped(inputs)
            # Stopped between batches, everything stored and acked: a last snapshot, so the
            # next start folds nothing it could have been spared.
            await self._checkpoint(inputs, final=True)
        finally:
            if puller is not None:
                puller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await puller
            if coordinator:
                await fires.close()
            await inputs.close()
            if self._appender is not None:
                await self._appender.close()
                self._appender = None
            await checkpoints.close()

    async def _restore(self, floor: int) -> None:
        """State from the latest snapshot and the log after it, or from the whole log."""
        checkpoints = self._checkpoints
        snapshot = await checkpoints.restore()
        if snapshot is not None and snapshot.forgot_through > floor:
            # The consumer starts before runs the snapshot forgot (it was recreated): their
            # events would come back, and only the whole log knows they were decided.
            log.warning(
                "dispatcher %s: the snapshot forgot runs that ended up to %d, but the consumer "
                "is acked only to %d; rebuilding from the start",
                self.label,
                snapshot.forgot_through,
                floor,
            )
            snapshot, checkpoints.forgot_through = None, 0
        self.state = State() if snapshot is None else snapshot.state
        self.state.partition = self.partition
        self.state.workers = self.workers  # an outside input: the one registry, kept
        self.state.capacity = self.workers.capacity  # priority's window (dispatcher.flowgates)
        start = 1 if snapshot is None else snapshot.seq + 1
        end = await last_seq(self.nc, self.tenant)
        folded = await self.rebuild(start, end)
        checkpoints.rebuilt(self.state, end)
        log.info(
            "dispatcher %s: %s, then folded %d messages to %d (%d runs in flight, %d workflows)",
            self.label,
            "from the start" if snapshot is None else f"from the snapshot at {snapshot.seq}",
            folded,
            end,
            len(self.state.runs),
            len(self.state.workflows),
        )

    async def _checkpoint(self, inputs: Inputs, *, final: bool = False) -> None:
        """Between batches: snapshot, and forget what the ack floor allows. ``final``: after
        the snapshot being stored, if one is (else this one is skipped)."""
        if final:
            await self._checkpoints.close()
        try:
            floor = await inputs.ack_floor()
        except NatchetError as exc:
            log.warning("dispatcher %s: no snapshot now: %s", self.label, exc)
            return
        self._stored = {s for s in self._stored if s > self._checkpoints.delivered}
        self._checkpoints.take(self.state, floor, asyncio.get_running_loop().time())

    async def _decide_until_stopped(self, inputs: Inputs) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        look_for_moves = True  # state rebuilt: a worker may have gone meanwhile
        while not self.stopping.is_set():
            try:
                deliveries = await inputs.fetch(self.fetch_batch, TICK_S)
                failures = 0
            except NatchetError as exc:
                failures += 1
                log.warning(
                    "dispatcher %s: fetch failed (%s); retrying in %.1fs",
                    self.label,
                    exc,
                    RETRY.delay(failures),
                )
                await self._pause(RETRY.delay(failures))
                continue
            logged = await self._logged_requests(deliveries)
            decisions = [await self._decide_on(d, logged) for d in deliveries]
            fired, self._fires = self._fires, []
            decisions += [self._decide_fire(f) for f in fired]
            tick = loop.time() >= next_tick  # timers fire to the tick, not per batch
            if tick:
                departed = self.hearing.look(self.state.holds, utc_now())
                if (departed or look_for_moves) and self.workers.settled(utc_now()):
                    look_for_moves = False  # tasks placed on a worker that went: moved
                    decisions += [
                        self._carry(None, self._settle(None, None, d))
                        for d in moves(self.state, utc_now())
                    ]
            # Held tasks whose recheck came first (``due`` decides on every run at once,
            # and a release changes the run it offers a task of). Not only at a tick: a
            # result that made room (``holds.dirty``) lets the next held task go with this
            # batch, or a full window would pass on at most its capacity per tick.
            if self.state.holds.due(utc_now()):
                decisions.append(self._carry(None, self._settle(None, None, [])))
            if tick:
                decisions += [
                    self._carry(None, self._settle(None, None, d))
                    for d in due(self.state, utc_now())
                ]
                next_tick = loop.time() + TICK_S
            await self._store(decisions)
            await self._apply_timers()
            for fire in fired:
                await fire.ack()
                await self._timers.forget(fire.seq)
            if self.observer is not None:
                now = utc_now()
                ages = (
                    age_s(d.time, now)
                    for d in deliveries
                    if d.subject in self._inputs and d.seq not in self._others
                )
                self.observer.decided(self.tenant, [a for a in ages if a is not None])
            self._others.clear()
            for delivery in deliveries:
                await delivery.ack()
            self._checkpoints.delivered_to([d.seq for d in deliveries])
            if self._checkpoints.due(loop.time()):
                await self._checkpoint(inputs)

    async def _rearm(self) -> None:
        """After a restart: arm the next tick of crons left without one (a decision cut
        short), then make sure every timer the state expects is set (or has fired and
        waits to be read), setting those missing. Idempotent."""
        armed = complete_triggers(self.state, utc_now())
        if armed:
            await self._store([self._carry(None, self._settle(None, None, d)) for d in armed])
        await self._apply_timers()
        count = 0
        for op in pending_timers(self.state):
            assert op.fire_at is not None
            if not await self._timers.present(op.scope, op.kind, op.name, op.fire_at):
                await self._timers.arm(op.scope, op.kind, op.name, op.id, op.fire_at)
                count += 1
        if count:
            log.info("dispatcher %s: set %d timers again", self.label, count)

    async def _pull_fires(self, fires: Inputs) -> None:
        """Read the timers' fires as they come; the decide loop takes them each batch."""
        failures = 0
        while not self.stopping.is_set():
            try:
                got = await fires.fetch(64, 1.0)
                failures = 0
            except NatchetError as exc:
                failures += 1
                log.warning("dispatcher %s: reading fires failed (%s)", self.label, exc)
                await self._pause(RETRY.delay(failures))
                continue
            self._fires.extend(got)

    def _decide_fire(self, delivery: Delivery) -> list[Output]:
        """The decision on a timer's fire (``<t>.<ns>.fires.<kind>.<name>``)."""
        try:
            parts = delivery.subject.split(".")
            scope = Scope(parts[0], parts[1])
            body = decode_as(TimerFired, TimerFired.KIND, delivery.data)
            if parts[2:] != ["fires", body.kind, body.name] or scope.tenant != self.tenant:
                raise DecodeError(f"a fire on {delivery.subject} names {body.kind} {body.name}")
        except (SubjectError, DecodeError, IndexError) as exc:
            log.warning("ignoring fire %s at seq %d: %s", delivery.subject, delivery.seq, exc)
            return []
        fire = Fire(body.kind, body.name, body.id, body.fire_at)
        now = utc_now()
        outputs = self._settle(scope, fire, decide_on(self.state, scope, fire, now))
        return self._carry(delivery.headers, outputs)

    async def _apply_timers(self) -> None:
        """Set and clear the timers the decisions stored so far call for."""
        ops, self._timer_ops = self._timer_ops, []
        for op in ops:
            if op.fire_at is None:
                await self._timers.disarm(op.scope, op.kind, op.name)
            else:
                await self._timers.arm(op.scope, op.kind, op.name, op.id, op.fire_at)

    async def _pause(self, seconds: float) -> None:
        await wait_set(self.stopping, seconds)

    def _read(self, delivery: Delivery) -> tuple[Scope, object] | None:
        """(scope, input) for a message, or None when it is not something to decide on."""
        parsed = parse(delivery.subject)
        if parsed.area == "events":
            try:
                payload = decode_json(delivery.data)
            except DecodeError as exc:
                log.warning("event %s at seq %d rejected: %s", delivery.subject, delivery.seq, exc)
                return None
            metadata = metadata_of_headers(delivery.headers)
            raw = None if delivery.headers is None else delivery.headers.get(PRIORITY_HEADER)
            priority, bad = header_priority(raw)
            event = Event(parsed.event_key, delivery.seq, payload, metadata, priority, bad)
            return parsed.scope, event
        return parsed.scope, decode_subject(parsed, delivery.data)

    async def _decide_on(self, delivery: Delivery, logged: set[str]) -> list[Output]:
        """The decision on one input, already folded into state (not yet stored). Any other
        message that changes state is folded, unless this dispatcher stored it."""
        if delivery.seq in self._stored:  # most of the log: this dispatcher's own outputs
            self._stored.discard(delivery.seq)
            return []
        if delivery.subject not in self._inputs:
            if delivery.subject in self._outputs:
                self._fold_stored(delivery.subject, delivery.data, delivery.seq)
            return []
        try:
            read = self._read(delivery)
        except (SubjectError, DecodeError) as exc:
            log.warning("ignoring unreadable %s at seq %d: %s", delivery.subject, delivery.seq, exc)
            return []
        if read is None:
            return []
        scope, message = read
        if isinstance(message, WorkflowDef):
            refused = filter_error(message.event_filter)
            if refused is not None:
                log.warning(
                    "registration of workflow %s (version %s) in %s at seq %d ignored: %s",
                    message.name, message.version, scope.prefix, delivery.seq, refused,
                )  # fmt: skip
            await self._ensure_queue(scope, message.name)
        if isinstance(message, RunRequested) and message.run_id in logged:
            return []  # a run that ended long ago (and was forgotten) is not started again
        if (
            isinstance(message, RunRequested)
            and message.replay_of is not None
            and not self.state.known(message.run_id)
        ):
            original = await self._original(scope, message.replay_of, delivery.seq)
            message = Replay(message, original)
        if not decides(self.state, scope, delivery.subject, message):
            # Another partition decides on it; its decision comes through the log.
            self._fold_stored(delivery.subject, delivery.data, delivery.seq)
            self._others.add(delivery.seq)
            return []
        if isinstance(message, (Event, WorkflowDef)) and not self.partition.coordinator:
            self._others.add(delivery.seq)  # every partition decides it; partition 0 reports
        decided = decide_on(self.state, scope, message, utc_now())
        outputs = self._settle(scope, message, decided, delivery.seq)
        return self._carry(delivery.headers, outputs)

    async def _original(self, scope: Scope, run_id: str, until_seq: int) -> Original | None:
        """The run a replay names, folded from its history in the log before the request
        (so deciding the request again, after a crash, reads the same). Batched direct
        gets: an ordered consumer cost ~260 ms a replay, waiting out its last fetch."""
        if not replayable_id(run_id):
            return None
        messages: list[object] = []
        history = direct_history(self.nc, self.tenant, scope.run_filter(run_id))
        async with contextlib.aclosing(history):  # its subscription ends with the break
            async for rec in history:
                if rec.seq >= until_seq:
                    break
                try:
                    messages.append(decode_subject(parse(rec.subject), rec.data))
                except (SubjectError, DecodeError) as exc:
                    log.warning("replay of %s: skipping seq %d: %s", run_id, rec.seq, exc)
        return original_of(run_id, messages)

    def _fold_stored(self, subject: str, data: bytes, seq: int) -> None:
        """Fold one logged message (read at a rebuild, or delivered); skip an unreadable one."""
        try:
            parsed = parse(subject)
            fold(self.state, parsed.scope, decode_subject(parsed, data), seq)
        except (SubjectError, DecodeError) as exc:
            log.warning("skipping unreadable %s at seq %d: %s", subject, seq, exc)

    async def _logged_requests(self, deliveries: list[Delivery]) -> set[str]:
        """Run ids requested in ``deliveries`` that the state does not know but the log
        does (created or rejected): runs that ended and were forgotten. Asked only once the
        dispatcher has forgotten something, all at once."""
        if not self._checkpoints.forgot_through:
            return set()
        asked: dict[str, Scope] = {}
        for d in deliveries:
            if d.subject.endswith(".requested") and d.subject in self._inputs:
                try:
                    parsed = parse(d.subject)
                except SubjectError:
                    continue
                if not self.state.known(parsed.run_id):
                    asked[parsed.run_id] = parsed.scope
        if not asked:
            return set()
        subjects = [(r, s.run(r, kind)) for r, s in asked.items() for kind in _EXISTED]
        found = await asyncio.gather(*(direct_last(self.nc, self.tenant, s) for _r, s in subjects))
        return {run_id for (run_id, _s), rec in zip(subjects, found, strict=True) if rec}

    async def _ensure_queue(self, scope: Scope, workflow: str) -> None:
        """The workflow's queue group, created by the engine (tenants cannot create
        consumers): before any task of it is offered, and again after every restart."""
        if (scope, workflow) not in self._queues:
            await ensure_task_consumer(self.nc, scope, workflow)
            self._queues.add((scope, workflow))

    def _settle(
        self, scope: Scope | None, message: object, outputs: list[Output], seq: int = 0
    ) -> list[Output]:
        """Keep a decision storable and fold it (with its input) into state
        (``dispatcher.step.settle``), tallying what it does first, for the observer."""
        watched = self.observer is not None

        def fitted(decision: list[Output]) -> None:
            self._tally.add(observe(self.state, message, decision))

        outputs = settle(
            self.state, scope, message, outputs, self._max_bytes, utc_now(), seq,
            self._seen if watched else None, fitted if watched else None,
        )  # fmt: skip
        if watched:
            self._tally.add(held(self.state, outputs))
        self._timer_ops += timer_ops(self.state, scope, message, outputs)
        return outputs

    def _seen(self, added: list[Output], withdrawn: list[Output]) -> None:
        """Tally what flow control adds to a decision, before it is folded, and take back
        the tasks of it it withdraws."""
        self._tally.add(outcomes(self.state, added, withdrawn=withdrawn))

    def _decided_on_time(self, outputs: list[Output]) -> list[Output]:
        """A decision of time (a retry due, a timeout), or one finished after a restart."""
        return self._carry(None, self._settle(None, None, outputs))

    def _carry(self, headers: dict[str, str] | None, outputs: list[Output]) -> list[Output]:
        """With tracing on, the outputs with their spans' context in their headers."""
        return outputs if self._traces is None else self._traces.carry(headers, outputs)

    async def _store(self, decisions: list[list[Output]]) -> None:
        """Append every output of ``decisions`` in order, awaiting all acks together. A
        failure stops the dispatcher (the supervisor rebuilds it from the log, which holds
        some prefix of what was sent): state already holds these decisions."""
        items = [
            Append(o.subject, o.body, o.msg_id, headers=o.headers) for d in decisions for o in d
        ]
        tally, self._tally = self._tally, Tally()
        if not items:
            self._report(tally)
            return
        if self._appender is None:
            self._appender = Appender(self.nc)
        try:
            seqs = await self._appender.append_all(items)
        except LogFullError as exc:
            self._append_failed(exc)
            await self._full(exc)
            raise
        except AppendError as exc:
            self._append_failed(exc)
            raise
        self._report(tally)
        self.log_full = False
        self._stored.update(seqs)
        self._checkpoints.folded(seqs)

    def _report(self, tally: Tally) -> None:
        if self.observer is not None and tally:
            self.observer.stored(self.tenant, tally)

    def _append_failed(self, exc: AppendError) -> None:
        if self.observer is not None:
            self.observer.append_failed(self.tenant, append_failure(exc))

    async def _full(self, exc: LogFullError) -> None:
        """The log is full: say so once (and have it recorded). The dispatcher then stops
        and is started again (with backoff) from the log: inputs stay unacked until there is
        room, so nothing is lost."""
        if self.log_full:
            return
        self.log_full = True
        log.error("dispatcher %s: %s; retrying until there is room", self.label, exc)
        if self.on_log_full is not None:
            await self.on_log_full(self.tenant, exc.description)
