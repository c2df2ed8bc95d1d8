"""The engine's door for workers: it refuses a worker whose wire protocol it cannot serve.

A worker announces its SDK release and protocol in every heartbeat
(``<t>.<ns>.workers.<id>``, :mod:`schemas.protocol`). The gate listens to them (core NATS,
beside the liveness stream that keeps them) and answers a worker it cannot serve on
``<t>.<ns>.workers.<id>.refused`` with a :class:`~schemas.WorkerRefused` naming the
protocols it accepts; the worker stops and exits non-zero with that line. The answer is
not stored anywhere: it goes again at each heartbeat until the worker has gone, so a worker
that subscribed late still hears it. A worker it accepts hears nothing (an older engine,
without a gate, says nothing either: silence never stops a worker).

The beats of workers it accepts go on to ``on_beat`` (the dispatcher's registry of live
workers, :mod:`dispatcher.workers`), so the engine listens to heartbeats once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from eventstore import (
    Connection,
    Message,
    NatchetError,
    Service,
    Subscription,
    publish,
    subscribe,
)
from schemas import (
    DecodeError,
    Scope,
    SubjectError,
    WorkerHeartbeat,
    WorkerRefused,
    encode,
    parse,
)
from schemas.codec import decode_as
from schemas.protocol import accepted, accepts, refusal
from schemas.subjects import live_subjects

log = logging.getLogger(__name__)

REMEMBERED = 10_000  # refused workers remembered, so each is logged once


class WorkerGate(Service):
    """Refuses, per tenant, workers speaking a protocol the engine cannot serve."""

    def __init__(
        self,
        nc: Connection,
        tenant: str,
        *,
        engine_version: str = "",
        on_beat: Callable[[Scope, WorkerHeartbeat], object] | None = None,
    ) -> None:
        super().__init__()
        self.on_beat = on_beat
        self.name = f"worker gate {tenant}"
        self.nc = nc
        self.tenant = tenant
        self.engine_version = engine_version
        self.refused: dict[str, str] = {}  # worker id -> reason, logged once each

    async def _serve(self) -> None:
        sub: Subscription = await subscribe(self.nc, live_subjects(self.tenant), self._on_beat)
        try:
            await self.stopping.wait()
        finally:
            await sub.unsubscribe()

    async def _on_beat(self, msg: Message) -> None:
        try:
            parsed = parse(msg.subject)
            beat = decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, msg.data)
        except (SubjectError, DecodeError) as exc:
            log.debug(
                "worker gate %s: unreadable heartbeat on %s: %s", self.tenant, msg.subject, exc
            )
            return
        if beat.worker_id != parsed.rest[0]:
            return
        if accepts(beat.protocol):
            if self.on_beat is not None:
                self.on_beat(parsed.scope, beat)
            return
        reason = refusal(beat.protocol, beat.sdk_version)
        if beat.worker_id not in self.refused:
            if len(self.refused) >= REMEMBERED:
                self.refused.clear()  # only for logging once: forgetting costs a log line
            log.warning(
                "worker gate %s: refusing worker %s (%s) in %s: %s",
                self.tenant,
                beat.name,
                beat.worker_id,
                parsed.scope.namespace,
                reason,
            )
            self.refused[beat.worker_id] = reason
        answer = WorkerRefused(
            worker_id=beat.worker_id,
            reason=reason,
            protocol=beat.protocol,
            accepted=tuple(accepted()),
            engine_version=self.engine_version,
        )
        try:
            await publish(self.nc, parsed.scope.worker_refused(beat.worker_id), encode(answer))
        except NatchetError as exc:
            log.warning("worker gate %s: could not refuse %s: %s", self.tenant, beat.worker_id, exc)
