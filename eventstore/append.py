"""Appending to the log: single messages with a dedup id, and atomic batches (2.12+)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import attrs
import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.js.api import Header

from eventstore.connection import request
from eventstore.errors import AppendError, AppendRefusedError, DuplicateBatchError, LogFullError

MAX_BATCH = 1000


@attrs.frozen
class Append:
    subject: str
    body: bytes
    msg_id: str | None = None
    ttl_s: int | None = None  # the server removes the message after this (2.11+)
    headers: tuple[tuple[str, str], ...] = ()  # natchet's own (e.g. Natchet-Replay-Of)


def _headers(item: Append) -> dict[str, str]:
    headers: dict[str, str] = dict(item.headers)
    if item.msg_id:
        headers[Header.MSG_ID] = item.msg_id
    if item.ttl_s is not None:
        headers[Header.MSG_TTL] = f"{item.ttl_s}s"
    return headers


def _too_large(nc: NATS, item: Append) -> AppendRefusedError:
    limit = nc.max_payload
    description = f"message of {len(item.body)} bytes exceeds the maximum payload ({limit} bytes)"
    return AppendRefusedError(f"cannot append to {item.subject}: {description}", description)


def _seq(ack: dict[str, object]) -> int:
    seq = ack.get("seq", 0)
    return seq if isinstance(seq, int) else 0


def _check_ack(reply_data: bytes, what: str) -> dict[str, object]:
    if not reply_data:
        return {}
    resp = orjson.loads(reply_data)
    if isinstance(resp, dict) and "error" in resp:
        err = resp["error"]
        description = str(err.get("description", err))
        if "duplicate message id" in description:
            raise DuplicateBatchError(f"{what} was already appended")
        if LogFullError.matches(description):
            raise LogFullError(
                f"cannot append to {what}: the tenant's log is full ({description}); it "
                "refuses new messages and keeps every old one until an operator raises its "
                "quota (`natchet tenant limits TENANT --max-bytes N`)",
                description,
            )
        raise AppendRefusedError(f"JetStream refused {what}: {description}", description)
    return resp if isinstance(resp, dict) else {}


async def append(nc: NATS, item: Append, *, timeout_s: float = 5.0) -> int:
    """Append one message; return its stream sequence. A duplicate id returns the original."""
    try:
        reply = await request(
            nc, item.subject, item.body, timeout_s=timeout_s, headers=_headers(item)
        )
    except nats.errors.MaxPayloadError:
        raise _too_large(nc, item) from None
    except nats.errors.NoRespondersError:
        raise AppendError(f"no stream captures {item.subject}") from None
    except nats.errors.TimeoutError:
        raise AppendError(f"append to {item.subject} timed out after {timeout_s}s") from None
    except nats.errors.Error as exc:
        raise AppendError(f"append to {item.subject} failed: {exc}") from None
    ack = _check_ack(reply.data, item.subject)
    return _seq(ack)


async def append_atomic(nc: NATS, items: Sequence[Append], *, timeout_s: float = 5.0) -> int:
    """Append all of ``items`` or none (JetStream atomic batch); return the last sequence."""
    if not items:
        return 0
    if len(items) == 1:
        return await append(nc, items[0], timeout_s=timeout_s)
    if len(items) > MAX_BATCH:
        raise AppendError(f"an atomic batch holds at most {MAX_BATCH} messages, not {len(items)}")
    batch_id = uuid.uuid4().hex
    last = len(items)
    try:
        for n, item in enumerate(items, start=1):
            headers = {
                **_headers(item),
                Header.BATCH_ID: batch_id,
                Header.BATCH_SEQUENCE: str(n),
            }
            if n == last:
                headers[Header.BATCH_COMMIT] = "1"
            if n in (1, last):
                # The first message is acknowledged empty (the batch exists), the last with
                # the pub ack of the whole batch; the middle ones go without waiting.
                reply = await request(
                    nc, item.subject, item.body, timeout_s=timeout_s, headers=headers
                )
                ack = _check_ack(reply.data, f"atomic batch {batch_id}")
            else:
                await nc.publish(item.subject, item.body, headers=headers)
    except nats.errors.MaxPayloadError:
        raise _too_large(nc, max(items, key=lambda i: len(i.body))) from None
    except nats.errors.NoRespondersError:
        raise AppendError(f"no stream captures {items[0].subject}") from None
    except nats.errors.TimeoutError:
        raise AppendError(f"atomic batch {batch_id} timed out after {timeout_s}s") from None
    except nats.errors.Error as exc:
        raise AppendError(f"atomic batch {batch_id} failed: {exc}") from None
    return _seq(ack)
