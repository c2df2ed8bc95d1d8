"""How long the dispatcher takes to start on a long log: from ``start()`` until ``ready``.

    .venv/bin/python -m bench.restart [--messages 1000000] [--in-flight 200]
                                      [--tail 20000] [--url nats://...]

Builds a tenant log of about ``--messages`` messages on a nats-server of its own (from the
wheel, in a temp dir; or ``--url``): finished one-step runs in the shapes
``bench/projector_apply.py`` generates (event, created, task, result, step_finished,
finished: 6 messages a run, a fast step's), appended directly and pipelined, plus
``--in-flight`` runs created and queued but not finished. The dispatcher's consumer is set
at the log's end, as after a dispatcher that decided everything.

Then it times, each a fresh ``Dispatcher`` on a fresh connection:

1. ``cold``: the first start on that log (no snapshot yet);
2. ``after shutdown``: a start after a graceful shutdown;
3. ``after crash``: ``--tail`` more messages of finished runs appended while no dispatcher
   runs, then a start after the previous dispatcher was cancelled without shutting down
   (as a killed process: no snapshot at exit).

It prints seconds to ready and the size of the state for each, and the peak resident
memory of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench.projector_apply import KEY, SCOPE, SHAPES, TENANT, at, run_messages
from dispatcher import Dispatcher
from eventstore import (
    Append,
    Appender,
    Connection,
    NatsOptions,
    close,
    connect,
    ensure_tenant_stream,
    last_seq,
    run_main,
)
from eventstore.provision import DISPATCHER_CONSUMER, _dispatcher_config
from natchet.dev.embedded import NatsServer
from schemas import RunCreated, Task, WorkflowDef, encode, stream_name

WINDOW = 4000  # appends in flight per pipelined window
RUN_MESSAGES = len(run_messages(0, SHAPES["one"]))


@contextlib.asynccontextmanager
async def server(url: str | None) -> AsyncIterator[str]:
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="natchet-restart-") as tmp, NatsServer(Path(tmp)) as s:
        yield s.url


async def open_conn(url: str) -> Connection:
    return await connect(NatsOptions(url, name="bench-restart"))


async def write_runs(nc: Connection, first: int, count: int) -> None:
    """``count`` finished one-step runs, numbered from ``first``, appended in windows; the
    event's sequence goes into the run's trigger (as the dispatcher writes it)."""
    steps = SHAPES["one"]
    appender = Appender(nc, timeout_s=60)
    try:
        batch: list[tuple[int, list[Append]]] = []
        pending = 0
        for i in range(first, first + count):
            msgs = [Append(s, b) for _t, s, b in run_messages(i, steps)]
            batch.append((i, msgs))
            pending += len(msgs)
            if pending >= WINDOW:
                await _flush(appender, batch)
                batch, pending = [], 0
        if batch:
            await _flush(appender, batch)
    finally:
        await appender.close()


async def _flush(appender: Appender, batch: list[tuple[int, list[Append]]]) -> None:
    """Events first (their sequences name the runs' triggers), then the rest of each run."""
    seqs = await appender.append_all([msgs[0] for _i, msgs in batch])
    rest: list[Append] = []
    for seq, (_i, msgs) in zip(seqs, batch, strict=True):
        for m in msgs[1:]:
            rest.append(Append(m.subject, m.body.replace(b"{event}", str(seq).encode())))
    await appender.append_all(rest)


async def write_in_flight(nc: Connection, first: int, count: int) -> None:
    """Runs created and queued, never picked up (their schedule timeout is far away)."""
    steps = SHAPES["one"]
    items: list[Append] = []
    for i in range(first, first + count):
        r = f"inflight-{i}"
        # Queued now, with a schedule timeout far away: still in flight at every start.
        created = RunCreated(r, "wf", "v1", {"order": i}, steps, schedule_timeout_s=1e7)
        task = Task(r, "wf", "a", 1, {"order": i}, {}, 60.0)
        items += [
            Append(SCOPE.run(r, "created"), encode(created)),
            Append(SCOPE.task("wf", "a"), encode(task)),
        ]
    appender = Appender(nc, timeout_s=60)
    try:
        await appender.append_all(items)
    finally:
        await appender.close()


async def consumer_at_end(nc: Connection) -> None:
    """The dispatcher's consumer, with everything up to the log's end acknowledged."""
    js = nc.jetstream()
    stream = stream_name(TENANT)
    with contextlib.suppress(Exception):
        await js.delete_consumer(stream, DISPATCHER_CONSUMER)
    await js.add_consumer(stream, _dispatcher_config(await last_seq(nc, TENANT) + 1))


async def build(url: str, messages: int, in_flight: int) -> int:
    nc = await open_conn(url)
    try:
        await ensure_tenant_stream(nc, TENANT)
        wf = WorkflowDef("wf", "v1", SHAPES["one"], on_events=(KEY,), registered_at=at(0))
        await Appender(nc).append_all([Append(SCOPE.workflow("wf"), encode(wf))])
        runs = max((messages - 1 - 2 * in_flight) // RUN_MESSAGES, 0)
        start = time.perf_counter()
        step = 20_000
        for first in range(0, runs, step):
            await write_runs(nc, first, min(step, runs - first))
            done = min(first + step, runs)
            rate = done * RUN_MESSAGES / (time.perf_counter() - start)
            print(f"  wrote {done:,} runs ({rate:,.0f} messages/s)", end="\r", flush=True)
        await write_in_flight(nc, 0, in_flight)
        await consumer_at_end(nc)
        total = await last_seq(nc, TENANT)
        print(f"\nlog: {total:,} messages ({runs:,} finished runs, {in_flight} in flight)")
        return runs
    finally:
        await close(nc)


async def timed_start(url: str, label: str, *, graceful: bool) -> None:
    nc = await open_conn(url)
    dispatcher = Dispatcher(nc, TENANT)
    start = time.perf_counter()
    task = dispatcher.start()
    try:
        await asyncio.wait_for(dispatcher.ready.wait(), 600)
        took = time.perf_counter() - start
        state = dispatcher.state
        print(
            f"{label:>15}: ready in {took:6.2f} s ({len(state.runs)} runs in flight, "
            f"{len(state.done):,} finished run ids in memory)",
            flush=True,
        )
        await asyncio.sleep(0.5)  # a tick or two, as a live dispatcher would
    finally:
        if graceful:
            await dispatcher.shutdown()
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await close(nc, drain=False)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--tail", type=int, default=20_000)
    parser.add_argument("--url", default=None, help="an existing server (default: own)")
    args = parser.parse_args()
    async with server(args.url) as url:
        runs = await build(url, args.messages, args.in_flight)
        await timed_start(url, "cold", graceful=True)
        await timed_start(url, "after shutdown", graceful=False)
        nc = await open_conn(url)
        try:
            await write_runs(nc, runs, args.tail // RUN_MESSAGES)
            await consumer_at_end(nc)
            print(f"appended {args.tail // RUN_MESSAGES * RUN_MESSAGES:,} more messages")
        finally:
            await close(nc)
        await timed_start(url, "after crash", graceful=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:,.0f} MiB")


if __name__ == "__main__":
    run_main(main())
