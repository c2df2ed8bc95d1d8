"""The projector service: folds a tenant's stream into Postgres, batch by batch, forever.

Each batch and the new checkpoint commit in one transaction. On any Postgres or NATS
error the projector logs a warning, waits (capped exponential backoff), reconnects and
resumes from the checkpoint stored in Postgres: nothing is lost, and since applying is
idempotent, nothing is doubled either.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

import eventstore
import schemas
from eventstore import Backoff, Connection, Record, Service, Tail
from eventstore.waits import wait_set
from projector.apply import apply_records
from projector.migrations import DEFAULT_SCHEMA, migrate, set_search_path

log = logging.getLogger(__name__)


async def read_checkpoint(
    conn: psycopg.AsyncConnection[Any], tenant: str, schema: str = DEFAULT_SCHEMA
) -> int:
    """The last stream sequence applied to ``schema`` for ``tenant`` (0: none yet)."""
    async with conn.transaction():
        await set_search_path(conn, schema)
        cur = await conn.execute(
            "SELECT last_seq FROM projector_checkpoints WHERE stream = %s",
            (schemas.stream_name(tenant),),
        )
        row = await cur.fetchone()
    return 0 if row is None else int(row[0])


class Projector(Service):
    """Tails ``<tenant>.>`` into the read model in ``schema`` of the database at ``dsn``."""

    def __init__(
        self,
        nc: Connection,
        dsn: str,
        tenant: str,
        *,
        batch_size: int = 500,
        schema: str = DEFAULT_SCHEMA,
        gather_s: float = 0.02,
        idle_poll_s: float = 0.25,
        linger_s: float = 0.02,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        connect_timeout_s: int = 5,
    ) -> None:
        super().__init__()
        self.name = f"projector {tenant}"
        self.nc = nc
        self.dsn = dsn
        self.tenant = schemas.subjects.check_tenant(tenant)
        self.batch_size = batch_size
        self.schema = schema
        self.gather_s = gather_s
        self.idle_poll_s = idle_poll_s
        # A batch costs about as much as ~100 records (bench/projector_apply.py --batch 50:
        # 190 us a record; 500: 58 us): under load, wait a little to fill it.
        self.linger_s = linger_s
        self.backoff = Backoff(base_s=backoff_base_s, max_s=backoff_max_s)
        self.connect_timeout_s = connect_timeout_s
        self._last_applied = 0
        self._failures = 0
        self._progress = asyncio.Condition()

    @property
    def last_applied(self) -> int:
        """The stream sequence the projection holds everything up to (its checkpoint)."""
        return self._last_applied

    async def _advance(self, seq: int) -> None:
        async with self._progress:
            self._last_applied = max(self._last_applied, seq)
            self._progress.notify_all()

    async def wait_for_seq(self, seq: int, timeout_s: float | None = None) -> None:
        """Return once every message up to ``seq`` is applied; ``TimeoutError`` after
        ``timeout_s`` seconds."""
        async with self._progress:
            await asyncio.wait_for(
                self._progress.wait_for(lambda: self._last_applied >= seq), timeout_s
            )

    async def wait_caught_up(self, timeout_s: float | None = None) -> int:
        """Wait until the projection holds the stream as it is now; return that sequence."""
        seq = await eventstore.last_seq(self.nc, self.tenant)
        await self.wait_for_seq(seq, timeout_s)
        return seq

    def log_fields(self) -> dict[str, object]:
        return {"tenant": self.tenant}

    async def _serve(self) -> None:
        """Project until :meth:`shutdown`; Postgres and NATS errors are logged and retried
        from the checkpoint, never raised."""
        while not self.stopping.is_set():
            try:
                await self._session()
            except (psycopg.Error, eventstore.NatchetError) as exc:
                self._failures += 1
                delay = self.backoff.delay(self._failures)
                log.warning(
                    "projector %s: %s: %s; retrying in %.2fs",
                    self.tenant,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        await wait_set(self.stopping, delay)

    async def _read(self, tail: Tail) -> list[Record]:
        """The projector's read-ahead task (its own coroutine, so it is seen as the
        projector's, not as a bare read of the log)."""
        return await tail.next_batch()

    async def _session(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.dsn,
            autocommit=False,
            application_name=f"natchet-projector-{self.tenant}",
            connect_timeout=self.connect_timeout_s,
        ) as conn:
            await migrate(conn, self.schema)
            checkpoint = await read_checkpoint(conn, self.tenant, self.schema)
            await self._advance(checkpoint)
            tail = Tail(
                self.nc,
                schemas.stream_name(self.tenant),
                checkpoint + 1,
                batch_size=self.batch_size,
                gather_s=self.gather_s,
                idle_poll_s=self.idle_poll_s,
                linger_s=self.linger_s,
            )
            log.info("projector %s: tailing from %d", self.tenant, checkpoint + 1)
            # The next batch is read from NATS while this one is written to Postgres.
            reading = asyncio.ensure_future(self._read(tail))
            try:
                while not self.stopping.is_set():
                    records = await reading
                    reading = asyncio.ensure_future(self._read(tail))
                    if not records:
                        continue
                    await apply_records(conn, self.tenant, records, schema=self.schema)
                    self._failures = 0
                    await self._advance(records[-1].seq)
            finally:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                await tail.close()
