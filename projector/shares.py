"""A rebuild split among processes by run: what ``natchet replay --shares N`` runs.

One process (the caller) reads the tenant's log once and hands each message to one of N
share processes (:mod:`projector.share_child`), each planning, folding and writing the rows
of its own runs into the fresh schema with a connection of its own. Planning and folding
are most of a rebuild's Python time, and a process has one core, so this is what lets a
rebuild use more than one (docs/benchmarks.md, issue 10).

Which share a message goes to (:func:`share_of_record`), so that each row has one writer:

- a run's messages (``<t>.<ns>.runs.<run id>.<kind>``) and its tasks (``tasks``, whose run
  id is in the body): the share ``crc32(run id) % N``, which holds every row under the run;
- everything else (events, workflows, crons, scheduled runs, rate limits, a subject nothing
  parses): share 0.

Each share applies its messages in log order, in transactions of its own, without the
projector lock (the rows are disjoint and the schema is new), and never the checkpoint: the
caller writes it once every share has finished. A share that finds an operation on a run of
another share (a message whose body names another run than its subject) stops, and with it
the rebuild, rather than write a row another share owns.

The wire between them: on a share's stdin, one line of JSON (how to connect, the tenant, the
schema, its number), then frames of a 4-byte length and a ``marshal``-ed list of records as
tuples, a length of 0 at the end; on its stdout, one line per applied batch (the number of
messages), then ``done``. A share's stderr says why it failed, in one line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import marshal
import os
import struct
import sys
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
import psycopg
from psycopg.conninfo import make_conninfo

from eventstore import Record
from projector import store
from projector.fold import Fold
from projector.migrations import set_search_path
from schemas.errors import NatchetError

log = logging.getLogger(__name__)

# A replay left to choose (:func:`auto`) rebuilds fewer messages than this in one process:
# starting the shares (~0.5 s each) would cost more than they save.
SHARED_FROM = 50_000
# ... and more in as many shares as the machine has cores, up to this many: the one reader
# of the log bounds the rebuild beyond (docs/benchmarks.md).
MAX_AUTO = 4
MAX_SHARES = 32
# Records handed to a share in one frame.
FRAME = 2_000
FRAME_HEADER = struct.Struct(">I")
DONE = "done"

RecordTuple = tuple[int, str, bytes, "dict[str, str] | None", Any]


class ShareError(NatchetError):
    """A share process of a rebuild failed (one line, said to the user)."""


def auto(messages: int) -> int:
    """How many shares a rebuild of ``messages`` is split in when nobody said."""
    if messages < SHARED_FROM:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_AUTO))


def share_of(run_id: str, shares: int) -> int:
    """The share that holds ``run_id``'s rows."""
    return zlib.crc32(run_id.encode()) % shares


def share_of_record(subject: str, data: bytes, shares: int) -> int:
    """The share a message of the log goes to (module docstring)."""
    parts = subject.split(".")
    if len(parts) < 4:
        return 0
    area = parts[2]
    if area == "runs":
        return share_of(parts[3], shares) if len(parts) == 5 else 0
    if area == "tasks":
        try:
            run_id = orjson.loads(data).get("run_id")
        except (orjson.JSONDecodeError, AttributeError):
            return 0
        return share_of(run_id, shares) if type(run_id) is str else 0
    return 0


def as_tuple(record: Record) -> RecordTuple:
    return (record.seq, record.subject, record.data, record.headers, record.stored)


def from_tuple(t: Sequence[Any]) -> Record:
    return Record(t[0], t[1], t[2], t[3], t[4])


def conninfo(conn: psycopg.AsyncConnection[Any]) -> str:
    """What connects to the same database as ``conn``, as ``conn`` did (its password and
    TLS files included): for a share's own connection."""
    given = {
        o.keyword.decode(): o.val.decode()
        for o in conn.pgconn.info
        if o.val is not None and o.val != b""
    }
    return make_conninfo(**given)


class _Share:
    """One share process, as the rebuild sees it."""

    def __init__(self, number: int, proc: asyncio.subprocess.Process) -> None:
        self.number = number
        self.proc = proc
        self.pending: list[RecordTuple] = []
        self.finished = False
        self.said: collections.deque[str] = collections.deque(maxlen=1)
        self.listening: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(data)

    async def send(self) -> None:
        """Hand the share its pending records (waiting while its pipe is full)."""
        frame, self.pending = self.pending, []
        data = marshal.dumps(frame)
        await self._drained(FRAME_HEADER.pack(len(data)) + data)

    async def end(self) -> None:
        await self._drained(FRAME_HEADER.pack(0))
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.close()

    async def _drained(self, data: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):  # it went away: say why
            raise ShareError(await self.failure()) from None

    async def listen(self, on_batch: Callable[[int], None] | None) -> None:
        """Read the share's stdout (its applied batches, then ``done``) and stderr (each
        line logged, the last kept for :meth:`failure`) until it closes them."""

        async def errors() -> None:
            assert self.proc.stderr is not None
            async for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    self.said.append(line)
                    log.warning("rebuild share %d: %s", self.number, line)

        assert self.proc.stdout is not None
        said = asyncio.ensure_future(errors())
        try:
            async for raw in self.proc.stdout:
                line = raw.decode().strip()
                if line == DONE:
                    self.finished = True
                elif line.isdigit() and on_batch is not None:
                    on_batch(int(line))
            await said
        finally:
            said.cancel()

    async def failure(self) -> str:
        """Why the share stopped: its last line on stderr, or its exit status."""
        code = await self.proc.wait()
        if self.listening is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.listening), 5)
        why = self.said[-1] if self.said else f"it exited with status {code}"
        return f"share {self.number} of the rebuild failed: {why}"


async def _start(number: int, shares: int, setup: dict[str, Any]) -> _Share:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "projector.share_child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    share = _Share(number, proc)
    share.write(orjson.dumps({**setup, "share": number, "shares": shares}) + b"\n")
    return share


async def rebuild_in_shares(
    conn: psycopg.AsyncConnection[Any],
    records: AsyncIterator[Record],
    tenant: str,
    schema: str,
    *,
    shares: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """:func:`projector.rebuild.rebuild` of a fresh ``schema`` from ``records`` (the
    tenant's log, in order), split among ``shares`` processes (module docstring); the
    checkpoint is written through ``conn`` at the end."""
    setup = {
        "conninfo": conninfo(conn),
        "tenant": tenant,
        "schema": schema,
        "batch_size": batch_size,
    }
    started: list[_Share] = []
    try:
        for number in range(shares):
            share = await _start(number, shares, setup)
            share.listening = asyncio.ensure_future(share.listen(on_batch))
            started.append(share)
        last = await _hand_out(records, started)
        for share in started:
            await share.end()
        for share in started:
            assert share.listening is not None
            await share.listening
            if await share.proc.wait() != 0 or not share.finished:
                raise ShareError(await share.failure())
    finally:
        for share in started:
            if share.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    share.proc.kill()
                await share.proc.wait()
            if share.listening is not None:
                share.listening.cancel()
    if last:
        async with conn.transaction():
            await set_search_path(conn, schema)
            await store.write(conn, tenant, Fold((), (), ()), last)


async def _hand_out(records: AsyncIterator[Record], started: list[_Share]) -> int:
    """Hand each record to its share; the last sequence handed out."""
    shares = len(started)
    last = 0
    async for record in records:
        share = started[share_of_record(record.subject, record.data, shares)]
        share.pending.append(as_tuple(record))
        last = record.seq
        if len(share.pending) >= FRAME:
            await share.send()
    for share in started:
        if share.pending:
            await share.send()
    return last
