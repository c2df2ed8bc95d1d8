"""Old message versions, upcast on read: one function per (kind, version) step.

A reader decodes a body by first running it through every upcaster from its ``"v"`` up to
the version the attrs class writes (``upcast``), so code past the codec only ever sees the
current shape, and the log itself is never rewritten (it is append-only). A new version of
a message adds one function here and a fixture of the old version under
``tests/fixtures/`` (``tests/unit/test_upcast.py`` replays it).

Adding an optional field with a default needs no new version: decoders ignore fields they
do not know and fill the ones a body lacks. A version is for a change of shape (a rename, a
restructure) that an older body cannot be read as.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Body = dict[str, Any]
Upcaster = Callable[[Body], Body]

# (kind, version) -> the function turning a body of that version into the next version's.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(kind: str, version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` as the step from ``version`` to ``version + 1`` of ``kind``."""

    def register(fn: Upcaster) -> Upcaster:
        if (kind, version) in UPCASTERS:
            raise ValueError(f"two upcasters for {kind} v{version}")
        UPCASTERS[(kind, version)] = fn
        return fn

    return register


def upcast(kind: str, body: Body) -> Body:
    """``body`` in the newest version this code knows (a newer one is left as it is)."""
    version = body.get("v", 1)
    if not isinstance(version, int):
        raise ValueError(f"{kind} version must be an integer, not {version!r}")
    while (kind, version) in UPCASTERS:
        body = UPCASTERS[(kind, version)](dict(body))
        version += 1
        body["v"] = version
    return body


@upcaster("created", 1)
def _created_trigger(body: Body) -> Body:
    """v1 ``triggered_by: {event_key, event_id} | null`` (events were the only trigger)
    became v2 ``trigger: {kind, ...} | null``, which also says "a replay of run R"."""
    by = body.pop("triggered_by", None)
    if isinstance(by, dict):
        body["trigger"] = {"kind": "event", **by}
    elif by is not None:
        raise ValueError(f"created v1 triggered_by must be an object or null, not {by!r}")
    return body
