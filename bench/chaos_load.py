"""Load for a chaos scenario, and what the harness watches while it runs.

* :func:`submit` starts runs at a steady rate, half by events published over NATS (with a
  ``Nats-Msg-Id``, so a retried publish is not a second event), half with
  ``admin.run_workflow`` (a client-chosen run id); every publish is retried until the
  server acknowledges it, through any outage.
* :class:`Tracker` follows ``assigned`` and ``result`` messages live (core NATS), so the
  harness can wait for "N deliveries taken" or "a worker is mid-step" before it strikes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bench.chaos_worker import EVENT_KEY, WORKFLOW
from dispatcher.decide import event_run_id
from eventstore import Append, NatchetError, append
from schemas import encode_json
from schemas.codec import DecodeError, decode_run_message
from schemas.messages import StepAssigned, StepResult
from schemas.subjects import Scope
from worker import Hatchet

log = logging.getLogger(__name__)

T = TypeVar("T")
CALL_TIMEOUT_S = 10.0


async def persist(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` until it succeeds: the server may be down for a while."""
    delay = 0.1
    while True:
        try:
            return await asyncio.wait_for(call(), CALL_TIMEOUT_S)
        except (NatchetError, nats.errors.Error, TimeoutError) as exc:
            log.info("%s failed (%s); retrying in %.1fs", what, exc or type(exc).__name__, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def submit(
    nc: NATS, hatchet: Hatchet, scope: Scope, runs: int, rate_per_s: float, out: set[str]
) -> None:
    """Start ``runs`` runs, ``rate_per_s`` a second; add each run id to ``out``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(runs):
        # Pacing shapes the load; it synchronizes nothing.
        await asyncio.sleep(max(0.0, start + n / rate_per_s - loop.time()))
        if n % 2 == 0:
            item = Append(scope.event(EVENT_KEY), encode_json({"n": n}), f"chaos-event-{n}")

            async def publish(item: Append = item) -> int:
                return await append(nc, item)

            seq = await persist(f"event {n}", publish)
            out.add(event_run_id(scope, seq, WORKFLOW))
        else:
            run_id = str(uuid.uuid4())

            async def start_run(n: int = n, run_id: str = run_id) -> None:
                await hatchet.admin.aio_run_workflow(WORKFLOW, {"n": n}, run_id=run_id)

            await persist(f"run {n}", start_run)
            out.add(run_id)


class Tracker:
    """Deliveries taken so far (by their ``assigned``, or by a result alone: a worker appends
    no ``assigned`` for a step done within its grace), and which deliveries each worker
    holds right now (known by their ``assigned``: a step still running after the grace)."""

    def __init__(self, nc: NATS, scope: Scope) -> None:
        self.nc = nc
        self.scope = scope
        self.taken: set[tuple[str, str, int, int]] = set()
        self.in_flight: dict[str, set[tuple[str, str, int, int]]] = defaultdict(set)
        self._owner: dict[tuple[str, str, int, int], str] = {}
        self._subs: list[object] = []

    async def start(self) -> None:
        for kind in ("assigned", "result"):
            subject = f"{self.scope.prefix}.runs.*.{kind}"
            self._subs.append(await self.nc.subscribe(subject, cb=self._on_msg))

    async def _on_msg(self, msg: Msg) -> None:
        kind = msg.subject.rsplit(".", 1)[-1]
        try:
            m = decode_run_message(kind, msg.data)
        except DecodeError:
            return
        if isinstance(m, StepAssigned):
            key = (m.run_id, m.step, m.attempt, m.delivery)
            self.taken.add(key)
            self._owner[key] = m.worker_name
            self.in_flight[m.worker_name].add(key)
        elif isinstance(m, StepResult):
            key = (m.run_id, m.step, m.attempt, m.delivery)
            self.taken.add(key)
            owner = self._owner.pop(key, None)
            if owner is not None:
                self.in_flight[owner].discard(key)

    async def until(self, check: Callable[[], T | None], timeout_s: float, what: str) -> T:
        """Poll ``check`` until it returns something truthy, or fail after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while not (value := check()):
            if loop.time() > end:
                raise TimeoutError(f"not within {timeout_s:g}s: {what}")
            await asyncio.sleep(0.02)
        return value

    async def taken_at_least(self, n: int, timeout_s: float = 120.0) -> None:
        await self.until(lambda: len(self.taken) >= n, timeout_s, f"{n} deliveries taken")

    async def busy_worker(
        self, names: Callable[[], list[str]], *, min_held: int = 1, timeout_s: float = 60.0
    ) -> str:
        """The live worker holding the most steps, once one holds ``min_held`` (mid-step);
        after half of ``timeout_s`` without one, the first that holds any step (a loaded
        machine, or the load's tail, may never show ``min_held`` at once)."""

        def busiest(least: int) -> Callable[[], str | None]:
            def check() -> str | None:
                held = [(len(self.in_flight[n]), n) for n in names()]
                most = max(held, default=(0, ""))
                return most[1] if most[0] >= least else None

            return check

        try:
            return await self.until(busiest(min_held), timeout_s / 2, "a busy worker")
        except TimeoutError:
            return await self.until(busiest(1), timeout_s / 2, "a worker mid-step")
