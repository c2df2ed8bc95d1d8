"""One share of a rebuild split among processes (:mod:`projector.shares`, which starts it
as ``python -m projector.share_child`` and describes the wire): it plans, folds and writes
the messages it is handed, the rows of its own runs, into the rebuild's schema."""

from __future__ import annotations

import asyncio
import marshal
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import psycopg

from eventstore import Record
from eventstore.lifecycle import run_main
from projector import ops
from projector.rebuild import apply_stream
from projector.shares import DONE, FRAME_HEADER, ShareError, from_tuple, share_of


async def _frames(reader: asyncio.StreamReader) -> AsyncIterator[Record]:
    """The records handed over on stdin, up to the frame of length 0."""
    while True:
        (size,) = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
        if size == 0:
            return
        for t in marshal.loads(await reader.readexactly(size)):
            yield from_tuple(t)


def check_owned(planned: list[ops.Op], number: int, shares: int) -> None:
    """Refuse an operation on a run of another share (module docstring of shares)."""
    for op in planned:
        if isinstance(op, ops.RunOp) and share_of(op.run_id, shares) != number:
            raise ShareError(
                f"a message at sequence {op.seq} names run {op.run_id}, which another share"
                " holds: rebuild in one process (--shares 1)"
            )


async def main() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    setup: dict[str, Any] = orjson.loads(await reader.readline())
    number, shares = int(setup["share"]), int(setup["shares"])

    def applied(n: int) -> None:
        sys.stdout.write(f"{n}\n")
        sys.stdout.flush()

    async with await psycopg.AsyncConnection.connect(setup["conninfo"], autocommit=True) as conn:
        await apply_stream(
            conn,
            setup["tenant"],
            setup["schema"],
            _frames(reader),
            batch_size=int(setup["batch_size"]),
            on_batch=applied,
            checkpoint=False,
            lock=False,
            check=lambda planned: check_owned(planned, number, shares),
        )
    sys.stdout.write(DONE + "\n")
    sys.stdout.flush()
    return 0


def run() -> int:
    try:
        return run_main(main())
    except Exception as exc:  # said in one line on stderr, which the rebuild reports
        what = str(exc).strip().splitlines()
        print(what[0] if what else type(exc).__name__, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
