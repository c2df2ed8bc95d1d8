"""The CPU a message costs to read from the bench log, over nats-py's ``Msg`` and raw
(``read_to_end(raw=True)``, what the rebuild reads with), and with planning (issue 10).

    .venv/bin/python -m bench.rebuild_read [--reuse /tmp/natchet-rebuild-log]
                                           [--messages 300000] [--rounds 3] [--batch 10000]

Starts a nats-server on the store ``bench/rebuild.py`` wrote and reads the first
``--messages`` messages of its log, each way in turn, ``--rounds`` times: this process's
CPU (``time.process_time``, which a busy machine inflates less than wall time) and wall
time a message. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import eventstore
from bench.rebuild_log import TENANT
from eventstore import Connection, NatsOptions, close, connect
from natchet.dev.embedded import NatsServer
from projector.fastplan import plan_fast
from schemas import stream_name


async def once(nc: Connection, n: int, batch: int, *, raw: bool, plan: bool) -> str:
    cpu, wall, got = time.process_time(), time.perf_counter(), 0
    async for record in eventstore.read_to_end(
        nc, stream_name(TENANT), until_seq=n, batch_size=batch, raw=raw
    ):
        got += 1
        if plan:
            plan_fast(TENANT, record)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    how = ("raw" if raw else "Msg") + (" + plan" if plan else "")
    return (
        f"{how:>10}: {got:,} messages, {cpu / got * 1e6:.1f} us CPU, {wall / got * 1e6:.1f} us wall"
    )


async def measure(url: str, args: argparse.Namespace) -> None:
    nc = await connect(NatsOptions(url, name="bench-rebuild-read"))
    try:
        for n in range(args.rounds):
            for plan in (False, True):
                for raw in (False, True):
                    line = await once(nc, args.messages, args.batch, raw=raw, plan=plan)
                    print(f"round {n + 1} {line}", flush=True)
    finally:
        await close(nc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reuse", type=Path, default=Path("/tmp/natchet-rebuild-log"))
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    with NatsServer(args.reuse) as server:
        asyncio.run(measure(server.url, args))


if __name__ == "__main__":
    main()
