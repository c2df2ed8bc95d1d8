"""Publishing an event of the log again (``natchet events replay``, the SDK's
``event.replay``): same subject, same body, and a header naming the one it repeats."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from eventstore.append import Append, append
from eventstore.read import direct_get
from schemas.errors import NatchetError
from schemas.subjects import REPLAY_OF_HEADER, Scope, sequence


async def publish_again(nc: NATS, scope: Scope, event_id: str) -> tuple[str, int]:
    """Publish event ``event_id`` (its stream sequence) of ``scope`` again; return its key
    and the new event's sequence. The workflows listening to the key now start new runs;
    the original event and its runs are unchanged. Another namespace's event, or a
    sequence that is not an event, is "no event" (``NatchetError``)."""
    seq = sequence(event_id)
    original = None if seq is None else await direct_get(nc, scope.tenant, seq)
    prefix = f"{scope.prefix}.events."
    if original is None or not original.subject.startswith(prefix):
        raise NatchetError(f"no event {event_id} in {scope.prefix}")
    item = Append(original.subject, original.data, headers=((REPLAY_OF_HEADER, event_id),))
    return original.subject.removeprefix(prefix), await append(nc, item)
