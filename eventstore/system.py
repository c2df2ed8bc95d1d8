"""The system stream ``natchet-system``: tenants and tokens, appended and folded back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from eventstore.read import follow_stream
from eventstore.records import Record, stream_last_seq
from eventstore.tail import read_to_end
from schemas.tenancy import SYSTEM_STREAM, SYSTEM_SUBJECTS

log = logging.getLogger(__name__)


def system_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=SYSTEM_STREAM,
        description="natchet tenants and tokens (token secrets are stored hashed)",
        subjects=[SYSTEM_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        duplicate_window=120.0,
        deny_delete=True,
        deny_purge=True,
        num_replicas=replicas,
    )


async def ensure_system_stream(nc: NATS, replicas: int | None = None) -> None:
    """Create the system stream if missing. The engine passes its ``replicas`` (the CLI
    does not: ``None``, 1 for a new stream): a stream with fewer is scaled up, so tenants
    and tokens survive a node as the tenants' logs do."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(SYSTEM_STREAM)
    except NotFoundError:
        await js.add_stream(system_stream_config(replicas or 1))
        log.info("created stream %s", SYSTEM_STREAM)
        return
    if replicas is not None and (info.config.num_replicas or 1) < replicas:
        info.config.num_replicas = replicas
        await js.update_stream(info.config)
        log.info("stream %s: now %d replicas", SYSTEM_STREAM, replicas)


async def system_last_seq(nc: NATS) -> int:
    return await stream_last_seq(nc, SYSTEM_STREAM)


async def follow_system(nc: NATS) -> AsyncIterator[Record]:
    """Every system message from the first, then new ones as they come (ordered consumer)."""
    async for record in follow_stream(nc, SYSTEM_STREAM, SYSTEM_SUBJECTS):
        yield record


async def read_system(nc: NATS) -> list[Record]:
    """The whole system stream as it is now."""
    return [rec async for rec in read_to_end(nc, SYSTEM_STREAM)]
