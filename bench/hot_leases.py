"""Which process holds which unit of a tenant (``natchet.leases``), for a bench with several
engines: read off the lease bucket, as ``tests/fault/test_several_engines.py`` does, and
waited on until the tenant's units have spread over the engines before anything is measured.

A dispatch unit is held by the engine process itself; the projector's (``project.<t>``) by
the projector process an engine starts, a child of that engine. Blocking (it runs its own
event loop): the harness calls it between measurements.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping

import nats
import orjson
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError

from bench.hot_procs import BenchError
from natchet.leases import BUCKET, Unit

POLL_S = 0.25


def unit_keys(tenant: str, partitions: int) -> list[str]:
    """The lease keys of ``tenant``'s units: its dispatch (whole, or each partition's),
    then its projector."""
    parts = Unit.units(tenant, "dispatch", partitions)
    return [u.key for u in parts] + [Unit(tenant, "project").key]


async def held_by(nc: nats.NATS, keys: list[str]) -> dict[str, int]:
    """Each held key of ``keys``: the pid of the process holding it (read on ``nc``, a
    connection to the engines' account; the fault tests read the bucket with it too)."""
    try:
        kv = await nc.jetstream().key_value(BUCKET)
    except BucketNotFoundError:
        return {}
    out: dict[str, int] = {}
    for key in keys:
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            continue
        if entry.value:
            out[key] = int(orjson.loads(entry.value)["pid"])
    return out


async def _holders(url: str, keys: list[str]) -> dict[str, int]:
    nc = await nats.connect(url, name="bench-leases")
    try:
        return await held_by(nc, keys)
    finally:
        await nc.close()


def holders(url: str, keys: list[str]) -> dict[str, int]:
    return asyncio.run(_holders(url, keys))


def _owner(pid: int, engines: Mapping[int, str]) -> str | None:
    """The engine ``pid`` is, or whose projector process it is (its child)."""
    if pid in engines:
        return engines[pid]
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    parent = int(stat[stat.rfind(")") + 2 :].split()[1])
    return f"{engines[parent]} projector" if parent in engines else None


def spread(held: Mapping[str, str], keys: list[str], engines: int) -> bool:
    """Every unit held, and no engine holding more dispatch units than its fair share
    (so with as many partitions as engines, one each)."""
    if set(keys) - set(held):
        return False
    dispatch = [held[k] for k in keys if k.startswith("dispatch.")]
    share = math.ceil(len(dispatch) / engines)
    return all(dispatch.count(e) <= share for e in set(dispatch))


def wait_spread(
    url: str, tenant: str, partitions: int, engines: Mapping[int, str], timeout_s: float = 60
) -> dict[str, str]:
    """Wait until ``tenant``'s units are all held and spread over ``engines`` (pid -> name);
    returns each unit's key -> the engine (or ``<engine> projector``) holding it."""
    keys = unit_keys(tenant, partitions)
    deadline = time.monotonic() + timeout_s
    held: dict[str, str] = {}
    while True:
        pids = holders(url, keys)
        held = {k: _owner(pid, engines) or f"pid {pid}" for k, pid in pids.items()}
        if spread(held, keys, len(engines)):
            return held
        if time.monotonic() > deadline:
            raise BenchError(f"units not spread over the engines in {timeout_s:.0f} s: {held}")
        time.sleep(POLL_S)  # blocking by design: between measurements
