"""Timers of crons and scheduled runs: JetStream message schedules (nats-server 2.12+) in
the tenant's ``schedules-<t>`` stream, never in the log (schedules force rollups on and
purges allowed).

A timer is one message on ``<t>.<ns>.timers.<kind>.<name>`` with ``Nats-Schedule: @at
<time>``; it replaces the one before it (a subject rollup). At that time the server stores
its body on ``<t>.<ns>.fires.<kind>.<name>`` (stored, not published: the dispatcher reads
fires with a durable consumer) and removes the timer. Clearing a timer purges its subject.
"""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from eventstore.cronexpr import parse_instant
from eventstore.errors import TransportError
from eventstore.snapshot import translated
from schemas.codec import DecodeError, decode_as, encode
from schemas.messages import TimerFired
from schemas.subjects import Scope, schedules_stream_name


def at_header(fire_at: str) -> str:
    """``@at`` in RFC 3339 UTC, to the millisecond (the server honours fractions)."""
    when = parse_instant(fire_at)
    return "@at " + when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class Timers:
    """The tenant's timers, as the dispatcher sets, clears and checks them."""

    def __init__(self, nc: NATS, tenant: str) -> None:
        self.nc = nc
        self.stream = schedules_stream_name(tenant)

    async def arm(self, scope: Scope, kind: str, name: str, ident: str, fire_at: str) -> None:
        body = encode(TimerFired(kind=kind, name=name, id=ident, fire_at=fire_at))
        headers = {
            "Nats-Schedule": at_header(fire_at),
            "Nats-Schedule-Target": scope.fire(kind, name),
            "Nats-Rollup": "sub",
        }
        async with translated(f"setting the timer of {kind} {name}"):
            await self.nc.jetstream().publish(
                scope.timer(kind, name), body, stream=self.stream, headers=headers
            )

    async def disarm(self, scope: Scope, kind: str, name: str) -> None:
        async with translated(f"clearing the timer of {kind} {name}"):
            await self.nc.jetstream().purge_stream(self.stream, subject=scope.timer(kind, name))

    async def present(self, scope: Scope, kind: str, name: str, fire_at: str) -> bool:
        """Whether the timer is set for ``fire_at``, or has fired for it and its fire waits
        to be read (a timer or fire for another time does not count)."""
        js = self.nc.jetstream()
        for subject in (scope.timer(kind, name), scope.fire(kind, name)):
            try:
                msg = await js.get_last_msg(self.stream, subject)
            except nats.js.errors.NotFoundError:
                continue
            except nats.errors.Error as exc:
                raise TransportError(f"reading the timer of {kind} {name}: {exc}") from None
            try:
                if decode_as(TimerFired, TimerFired.KIND, msg.data or b"").fire_at == fire_at:
                    return True
            except DecodeError:
                continue
        return False

    async def forget(self, seq: int) -> None:
        """Remove a fire the dispatcher decided on (and acked)."""
        try:
            await self.nc.jetstream().delete_msg(self.stream, seq)
        except nats.js.errors.NotFoundError:
            pass
        except nats.errors.Error as exc:
            raise TransportError(f"removing fire {seq}: {exc}") from None
