"""What one append costs: a single message vs a JetStream atomic batch, sequentially.

    .venv/bin/python bench/append_latency.py

Every dispatcher decision is one atomic batch (docs/design.md), so the batch figure bounds
how many decisions one dispatcher makes per second.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from eventstore import Append, NatsOptions, append, append_atomic, connect, ensure_tenant_stream
from natchet.dev.embedded import NatsServer

N = 300


async def main() -> None:
    with NatsServer(Path(tempfile.mkdtemp(prefix="natchet-bench-"))) as server:
        nc = await connect(NatsOptions(server.url))
        await ensure_tenant_stream(nc, "bench")

        def batch(i: int, kinds: str) -> list[Append]:
            return [Append(f"bench.d.runs.r{i}.{k}", b"{}", f"{i}{kinds}{k}") for k in kinds]

        cases: dict[str, Callable[[int], Awaitable[int]]] = {
            "single append": lambda i: append(nc, Append(f"bench.d.runs.s{i}.x", b"{}", f"s{i}")),
            "atomic batch of 2": lambda i: append_atomic(nc, batch(i, "ab")),
            "atomic batch of 4": lambda i: append_atomic(nc, batch(i, "wxyz")),
        }
        for label, fn in cases.items():
            start = time.perf_counter()
            for i in range(N):
                await fn(i)
            each_ms = (time.perf_counter() - start) / N * 1000
            print(f"{label:20} {each_ms:6.2f} ms each, {1000 / each_ms:6.0f}/s")
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
