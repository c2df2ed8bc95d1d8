"""The lease bucket: a JetStream KV bucket whose per-key revisions decide who holds what
(``natchet.leases`` holds the policy; this is the door to the server).

Every write is conditional on the key's last revision (JetStream's expected last subject
sequence), so two writers racing for a key cannot both win. The bucket's ``ttl`` (the
stream's ``max_age``) removes a revision nobody renewed, and leaves a marker
(``limit_marker_ttl``, nats-server 2.11+) that watchers see as a delete.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterator

import attrs
import nats.errors
import nats.js.errors
from nats.aio.client import Client as Connection
from nats.js.kv import KeyValue

from eventstore.errors import NatchetError

_DELETED = ("DEL", "PURGE")
DEFAULT_TIMEOUT_S = 2.0


class LeaseStoreError(NatchetError):
    """The lease bucket did not answer, or refused for a reason other than a revision."""


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """nats-py's errors and timeouts as a :class:`LeaseStoreError` about ``what``; the
    outcomes a caller expects (a wrong revision) are caught inside, before these."""
    try:
        yield
    except (nats.errors.Error, TimeoutError) as exc:
        raise LeaseStoreError(f"{what}: {exc or 'timeout'}") from exc


@attrs.frozen
class KeySeen:
    """One change of a key: its new value, or None when deleted or expired."""

    key: str
    value: bytes | None
    revision: int


class LeaseBucket:
    """Conditional writes on one KV bucket; each returns the new revision, or None when
    the key's revision was not the one expected (another writer was first)."""

    def __init__(self, kv: KeyValue, timeout_s: float) -> None:
        self.kv = kv
        self.timeout_s = timeout_s

    @classmethod
    async def open(
        cls,
        nc: Connection,
        bucket: str,
        *,
        ttl_s: float | None,
        replicas: int = 1,
        description: str = "",
        timeout_s: float | None = None,
    ) -> LeaseBucket:
        """The bucket, created with ``ttl_s`` if missing (an existing one keeps its own:
        read :meth:`ttl_s`). ``ttl_s`` None: a bucket whose keys never expire (what must
        outlive every engine). ``timeout_s``: per request; default a quarter of the ttl (a
        request must not outlast the lease it renews), else ``DEFAULT_TIMEOUT_S``."""
        if timeout_s is None:
            timeout_s = DEFAULT_TIMEOUT_S if ttl_s is None else ttl_s / 4
        js = nc.jetstream()
        with _store_errors(f"the lease bucket {bucket}"):
            try:
                return cls(await js.key_value(bucket), timeout_s)
            except nats.js.errors.BucketNotFoundError:
                pass
            with contextlib.suppress(nats.js.errors.BadRequestError):  # created meanwhile
                kv = await js.create_key_value(
                    bucket=bucket,
                    description=description,
                    history=1,
                    ttl=ttl_s,
                    replicas=replicas,
                    limit_marker_ttl=None if ttl_s is None else max(ttl_s, 10.0),
                )
                return cls(kv, timeout_s)
            return cls(await js.key_value(bucket), timeout_s)

    @classmethod
    async def find(
        cls, nc: Connection, bucket: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> LeaseBucket | None:
        """The bucket if it exists (None if not): to read another's keys, never create it."""
        with _store_errors(f"the lease bucket {bucket}"):
            try:
                return cls(await nc.jetstream().key_value(bucket), timeout_s)
            except nats.js.errors.BucketNotFoundError:
                return None

    async def get(self, key: str) -> KeySeen | None:
        """``key``'s value now; None if it has none (never written, deleted or expired)."""
        with _store_errors(f"get {key}"):
            try:
                entry = await asyncio.wait_for(self.kv.get(key), self.timeout_s)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                return None
        if not entry.value:
            return None  # the server's expiry marker
        return KeySeen(key, entry.value, entry.revision or 0)

    async def ttl_s(self) -> float | None:
        with _store_errors("the lease bucket's status"):
            status = await asyncio.wait_for(self.kv.status(), self.timeout_s)
        return status.ttl or None

    async def create(self, key: str, value: bytes) -> int | None:
        """Store ``value`` if ``key`` has none (never written, deleted or expired)."""
        revision = await self._conditional(key, self.kv.create(key, value))
        if revision is not None:
            return revision
        # nats-py's create handles a delete marker, not the server's expiry marker (a
        # message with ``Nats-Marker-Reason: MaxAge`` and no body, kept for the marker's
        # own ttl): measured, a key that expired after 8 s was claimable only at 16.6 s.
        with _store_errors(f"create {key}"):
            try:
                entry = await asyncio.wait_for(self.kv.get(key), self.timeout_s)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                return None  # gone meanwhile: the next round creates it
        if entry.value or not entry.revision:
            return None  # a value: somebody holds it
        return await self.update(key, value, entry.revision)

    async def update(self, key: str, value: bytes, last: int) -> int | None:
        """Store ``value`` if ``key`` is still at revision ``last``."""
        return await self._conditional(key, self.kv.update(key, value, last=last))

    async def put(self, key: str, value: bytes) -> int:
        with _store_errors(f"put {key}"):
            return await asyncio.wait_for(self.kv.put(key, value), self.timeout_s)

    async def delete(self, key: str, last: int) -> bool:
        """Delete ``key`` if still at revision ``last``; False if it was not."""
        with _store_errors(f"delete {key}"):
            try:
                await asyncio.wait_for(self.kv.delete(key, last=last), self.timeout_s)
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
            except nats.js.errors.APIError as exc:
                if exc.err_code in (10071, 10164):  # wrong last sequence
                    return False
                raise
        return True

    async def _conditional(self, key: str, write: Awaitable[int]) -> int | None:
        with _store_errors(f"write {key}"):
            try:
                return await asyncio.wait_for(write, self.timeout_s)
            except nats.js.errors.KeyWrongLastSequenceError:
                return None

    async def watch(self) -> AsyncIterator[KeySeen]:
        """Every key's current value, then every change, until cancelled."""
        watcher = await self.kv.watchall()
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=3600)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    continue
                if not isinstance(entry, KeyValue.Entry):
                    continue  # None: the values stored when it began are all delivered
                deleted = entry.operation in _DELETED or not entry.value
                value = None if deleted else entry.value
                yield KeySeen(entry.key, value, entry.revision or 0)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await watcher.stop()  # type: ignore[no-untyped-call]
