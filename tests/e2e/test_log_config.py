"""The engine refuses to serve a tenant whose log the server stored weaker than append-only
(made by an older natchet, or changed by hand), saying what is wrong."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, StreamConfig

from eventstore import StreamConfigError, StreamLimits, ensure_tenant_stream
from eventstore.provision import log_stream_config
from schemas import stream_name


async def test_a_log_that_allows_rollup_and_ttl_is_refused(nc: NATS, tenant_name: str) -> None:
    js = nc.jetstream()
    weak = log_stream_config(tenant_name)
    weak.allow_rollup_hdrs, weak.allow_msg_ttl, weak.deny_purge = True, True, False
    weak.discard = DiscardPolicy.OLD
    await js.add_stream(weak)
    with pytest.raises(StreamConfigError) as refused:
        await ensure_tenant_stream(nc, tenant_name)
    message = str(refused.value)
    for why in ("rollup", "TTL", "deny_purge", "discards old"):
        assert why in message, message
    await js.delete_stream(stream_name(tenant_name))


async def test_a_quota_change_is_applied_and_nothing_else_is_touched(
    nc: NATS, tenant_name: str
) -> None:
    js = nc.jetstream()
    await ensure_tenant_stream(nc, tenant_name, StreamLimits(max_bytes=1 << 20))
    await ensure_tenant_stream(nc, tenant_name, StreamLimits(max_bytes=2 << 20))
    stored: StreamConfig = (await js.stream_info(stream_name(tenant_name))).config
    assert stored.max_bytes == 2 << 20
    assert stored.deny_purge and stored.deny_delete and not stored.allow_rollup_hdrs
