"""What a tenant's connection may do: the broker permissions in the user JWT. Pure.

Tenant ``A`` may publish and subscribe within ``A.>``, use the inbox prefix ``_INBOX_A``
(so no tenant can listen on ``_INBOX.>`` for another's replies), and call the JetStream
API only for its own stream ``natchet-A`` and that stream's consumers.
"""

from __future__ import annotations

from typing import Any

from schemas.subjects import stream_name
from schemas.tenancy import inbox_prefix

APP_ACCOUNT = "NATCHET"


def tenant_permissions(tenant: str) -> dict[str, Any]:
    stream = stream_name(tenant)
    api = "$JS.API"
    publish = [
        f"{tenant}.>",
        f"{inbox_prefix(tenant)}.>",
        f"{api}.INFO",
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"{api}.CONSUMER.INFO.{stream}.>",
        f"{api}.CONSUMER.DELETE.{stream}.>",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]
    subscribe = [f"{tenant}.>", f"{inbox_prefix(tenant)}.>"]
    return {"pub": {"allow": publish}, "sub": {"allow": subscribe}}
