"""The wire protocol's version, and which versions an engine serves. Pure: no IO.

A worker announces the protocol it speaks (and its SDK's version) in every heartbeat; the
engine refuses a worker whose protocol it cannot serve, and says which it accepts
(:class:`schemas.messages.WorkerRefused`). The protocol is the shape of what workers and
the engine exchange (tasks, results, registrations, heartbeats, subjects): it changes only
when an engine could no longer read a worker's messages, or the worker the engine's. A
message version (``"v"``, upcast on read) is not a protocol change.

Heartbeats from before protocols were announced carry ``protocol`` 0: those workers spoke
protocol 1.
"""

from __future__ import annotations

PROTOCOL = 1  # what this code speaks
MIN_PROTOCOL = 1  # the oldest a current engine still serves
UNANNOUNCED = 0  # a heartbeat without the field: a worker older than announcements
IMPLIED_BY_UNANNOUNCED = 1


def spoken(protocol: int) -> int:
    """The protocol a heartbeat's ``protocol`` field stands for."""
    return IMPLIED_BY_UNANNOUNCED if protocol == UNANNOUNCED else protocol


def accepted() -> range:
    """The protocols this engine serves."""
    return range(MIN_PROTOCOL, PROTOCOL + 1)


def accepts(protocol: int) -> bool:
    return spoken(protocol) in accepted()


def describe_accepted() -> str:
    """``"1"`` or ``"1-3"``: for messages."""
    r = accepted()
    return str(r.start) if len(r) == 1 else f"{r.start}-{r[-1]}"


def refusal(protocol: int, sdk_version: str) -> str:
    """Why an engine refuses a worker speaking ``protocol``: one line, naming what it takes."""
    sdk = f" (SDK {sdk_version})" if sdk_version else ""
    newer = spoken(protocol) > PROTOCOL
    advice = "upgrade the engine" if newer else "upgrade the worker's natchet SDK"
    return (
        f"the engine refuses this worker: it speaks wire protocol {spoken(protocol)}{sdk}, "
        f"the engine accepts protocol {describe_accepted()}; {advice}"
    )


def outdated(protocol: int, sdk_version: str, current_sdk: str) -> bool:
    """A worker older than this code: an older protocol, or an older SDK release (or so old
    that it announces neither)."""
    if protocol == UNANNOUNCED or spoken(protocol) < PROTOCOL:
        return True
    mine, theirs = release(current_sdk), release(sdk_version)
    return bool(mine and theirs and theirs < mine)


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string (``"0.1.0rc1"`` -> ``(0, 1, 0)``); ``()``
    when it has none."""
    parts: list[int] = []
    for piece in version.split("+", 1)[0].split("."):
        digits = ""
        for ch in piece:
            if not ch.isascii() or not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)
