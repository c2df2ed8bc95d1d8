"""Where a component keeps a snapshot of its state: a JetStream object store per tenant,
beside the log and never in it.

The log ``natchet-<t>`` is append-only (no rollup, purge or delete), so a snapshot that
replaces the previous one cannot live there. An object store (``OBJ_snap-<t>``, subjects
``$O.snap-<t>.>``) is NATS's own answer for a blob that is replaced as a whole: it chunks
what is larger than one message (a KV value must fit in one, 1 MiB by default, and the
dispatcher's state can grow past that with many runs in flight), it checks a SHA-256
digest on read, and a new version becomes visible at once (its metadata message rolls the
old one up) and only then are the old chunks purged, so a reader sees the previous
snapshot or the new one, never a mix, and a writer killed half-way leaves the previous
one in place. The bucket lives in the tenant's log account, which only the engine
enters; no export reaches it (``natchet/tenancy/accounts.py``).

Nothing here trusts what it reads: the bytes go back to the caller, which decodes and
validates them (``dispatcher.snapshot``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats.errors
import nats.js.errors
from nats.aio.client import Client as Connection
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.object_store import ObjectStore

from eventstore.errors import AppendError, AppendRefusedError, ReadError, TransportError
from schemas.subjects import check_tenant


def snapshot_bucket(tenant: str) -> str:
    """The tenant's snapshot bucket (its stream is ``OBJ_snap-<tenant>``)."""
    return f"snap-{check_tenant(tenant)}"


def snapshot_bucket_config(
    tenant: str, max_bytes: int = -1, replicas: int = 1
) -> ObjectStoreConfig:
    return ObjectStoreConfig(
        bucket=snapshot_bucket(tenant),
        description=f"natchet snapshots of tenant {tenant}'s components (not history)",
        storage=StorageType.FILE,
        max_bytes=max_bytes,
        replicas=replicas,
    )


async def ensure_snapshot_bucket(
    conn: Connection, tenant: str, max_bytes: int | None = None, replicas: int | None = None
) -> None:
    """Create the tenant's snapshot bucket if missing (idempotent), with ``max_bytes``
    (``-1``: no limit) and ``replicas`` (default 1); apply a changed ``max_bytes``, and more
    ``replicas`` (never fewer), to an existing one (``None``: leave it as it is)."""
    js = conn.jetstream()
    config = snapshot_bucket_config(
        tenant, -1 if max_bytes is None else max_bytes, 1 if replicas is None else replicas
    )
    stream = f"OBJ_{snapshot_bucket(tenant)}"
    async with translated(f"setting up {stream}"):
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            await js.create_object_store(snapshot_bucket(tenant), config)
            return
        changed = False
        if max_bytes is not None and info.config.max_bytes != max_bytes:
            info.config.max_bytes, changed = max_bytes, True
        if replicas is not None and (info.config.num_replicas or 1) < replicas:
            info.config.num_replicas, changed = replicas, True
        if changed:
            await js.update_stream(info.config)


@contextlib.asynccontextmanager
async def translated(what: str) -> AsyncIterator[None]:
    """nats-py's errors, as eventstore's (provisioning: here and ``eventstore.provision``)."""
    try:
        yield
    except nats.js.errors.APIError as exc:
        raise AppendRefusedError(
            f"JetStream refused {what}: {exc.description}", str(exc.description)
        ) from None
    except nats.errors.Error as exc:
        raise TransportError(f"{what} failed: {exc}") from None


class SnapshotStore:
    """One named snapshot (``name``) in the tenant's bucket: :meth:`load` the latest,
    :meth:`save` a new one. One writer at a time (the component that owns ``name``)."""

    def __init__(
        self, conn: Connection, tenant: str, name: str, *, timeout_s: float = 30.0
    ) -> None:
        self.conn = conn
        self.tenant = tenant
        self.name = name
        self.timeout_s = timeout_s
        self._store: ObjectStore | None = None

    async def _open(self) -> ObjectStore:
        if self._store is None:
            await ensure_snapshot_bucket(self.conn, self.tenant)
            self._store = await self.conn.jetstream().object_store(snapshot_bucket(self.tenant))
        return self._store

    async def load(self) -> bytes | None:
        """The latest snapshot's bytes, or ``None`` when there is none."""
        try:
            store = await self._open()
            result = await asyncio.wait_for(store.get(self.name), self.timeout_s)
        except nats.js.errors.ObjectNotFoundError:
            return None
        except TimeoutError:
            raise ReadError(f"reading snapshot {self.name} timed out") from None
        except nats.js.errors.DigestMismatchError:
            raise ReadError(f"snapshot {self.name} does not match its digest") from None
        except nats.js.errors.BadObjectMetaError:
            raise ReadError(f"snapshot {self.name} has unreadable metadata") from None
        except nats.errors.Error as exc:
            raise TransportError(f"reading snapshot {self.name} failed: {exc}") from None
        return bytes(result.data or b"")

    async def save(self, data: bytes) -> None:
        """Store ``data`` as the latest snapshot (the previous one stays until it is in)."""
        try:
            store = await self._open()
            await asyncio.wait_for(store.put(self.name, data), self.timeout_s)
        except TimeoutError:
            raise AppendError(f"storing snapshot {self.name} timed out") from None
        except nats.js.errors.APIError as exc:
            raise AppendError(f"storing snapshot {self.name}: {exc.description}") from None
        except nats.errors.Error as exc:
            raise TransportError(f"storing snapshot {self.name} failed: {exc}") from None
