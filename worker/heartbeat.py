"""Worker liveness: a heartbeat on ``<t>.<ns>.workers.<id>`` every few seconds, with a
message TTL so the log does not keep them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.aio.client import Client as NATS

from eventstore import Append, AppendError, append
from schemas import WorkerHeartbeat, WorkerStatus, encode, utcnow
from schemas.subjects import Scope

log = logging.getLogger(__name__)

INTERVAL_S = 2.0
TTL_S = 300


class Heartbeat:
    def __init__(
        self,
        nc: NATS,
        scope: Scope,
        worker_id: str,
        name: str,
        actions: list[str],
        slots: int,
        running: Callable[[], int],
    ) -> None:
        self.nc = nc
        self.subject = scope.worker(worker_id)
        self.worker_id = worker_id
        self.name = name
        self.actions = tuple(actions)
        self.slots = slots
        self.running = running
        self.started_at = utcnow()
        self.status = WorkerStatus.ACTIVE
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        message = WorkerHeartbeat(
            worker_id=self.worker_id,
            name=self.name,
            actions=self.actions,
            slots=self.slots,
            running=self.running(),
            status=self.status,
            started_at=self.started_at,
        )
        try:
            await append(self.nc, Append(self.subject, encode(message), ttl_s=TTL_S), timeout_s=2)
        except AppendError as exc:
            log.warning("worker %s: heartbeat failed: %s", self.name, exc)

    async def _loop(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(INTERVAL_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self, status: WorkerStatus = WorkerStatus.STOPPED) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.status = status
        await self.beat()
