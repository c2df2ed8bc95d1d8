"""What one more unique subject costs nats-server's memory (docs/scaling.md's plan).

Starts an embedded nats-server (free port), makes a file stream like a tenant's log, then
appends ``--subjects`` small messages, each on a subject of its own shaped like a run's
(``t.default.runs.<id>.created``), and as many again on one shared subject; it reads the
server's resident memory (``/varz`` ``mem``) before and after each, and prints the bytes
per message of each kind: the difference is what the unique subject costs.

    .venv/bin/python -m bench.subject_memory --subjects 200000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import nats
import orjson
from nats.js.api import StorageType, StreamConfig

from natchet.dev.embedded import NatsServer


def rss(server: NatsServer) -> int:
    with urllib.request.urlopen(f"{server.monitor_url}/varz", timeout=5) as resp:
        return int(orjson.loads(resp.read())["mem"])


async def fill(server: NatsServer, n: int, unique: bool, stream: str) -> float:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    started = time.monotonic()
    pending = []
    for i in range(n):
        subject = f"{stream}.default.runs.{uuid.uuid4().hex}.created" if unique else f"{stream}.x"
        pending.append(js.publish(subject, b'{"n":%d}' % i))
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await nc.close()
    return time.monotonic() - started


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp)) as server:
        nc = await nats.connect(server.url)
        for name in ("u", "s"):
            await nc.jetstream().add_stream(
                StreamConfig(name=name, subjects=[f"{name}.>"], storage=StorageType.FILE)
            )
        await nc.close()
        await asyncio.sleep(1)
        base = rss(server)
        took = await fill(server, n, unique=True, stream="u")
        await asyncio.sleep(1)
        after_unique = rss(server)
        await fill(server, n, unique=False, stream="s")
        await asyncio.sleep(1)
        after_shared = rss(server)
        per_unique = (after_unique - base) / n
        per_shared = (after_shared - after_unique) / n
        print(f"{n:,} messages each; appending the unique ones took {took:.1f} s")
        print(f"resident memory: {base / 2**20:.0f} MiB at start")
        print(f"unique subjects: +{per_unique:.0f} bytes a message")
        print(f"one shared subject: +{per_shared:.0f} bytes a message")
        print(f"a unique subject costs ~{per_unique - per_shared:.0f} bytes of server memory")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().subjects))
