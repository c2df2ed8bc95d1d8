"""``natchet event push``: publish an event the way any NATS client would."""

from __future__ import annotations

import orjson

from eventstore import Append, ConfigError, NatsOptions, append, connect
from schemas import Scope, SubjectError


def parse_payload(text: str) -> bytes:
    try:
        return orjson.dumps(orjson.loads(text))
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"the event body must be JSON: {exc}") from None


async def push_event(
    options: NatsOptions, tenant: str, namespace: str, key: str, payload: str
) -> str:
    try:
        subject = Scope(tenant, namespace).event(key)
    except SubjectError as exc:
        raise ConfigError(str(exc)) from None
    body = parse_payload(payload)
    nc = await connect(options)
    try:
        seq = await append(nc, Append(subject, body))
    finally:
        await nc.drain()
    return f"published {subject} (event id {seq})"
