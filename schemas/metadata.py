"""Additional metadata: key-value strings an event or a run request carries (Hatchet's
``additional_metadata``), copied onto the runs they start and filterable in the run list.

An event's body is the user's payload, untouched, so its metadata travels in NATS headers,
one per key: ``Natchet-Meta-<key>: <value>`` (``nats pub --header Natchet-Meta-source:cli``
does it without the SDK). A run request carries it in its body (``additional_metadata``).

Keys: 1-64 of ``A-Za-z0-9_.-`` (header-safe; case kept); values: up to 1024 characters, no
line breaks; at most 32 pairs. A header of the prefix that breaks these rules is ignored by
readers (an event is never refused for its headers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from schemas.errors import ConfigError

HEADER_PREFIX = "Natchet-Meta-"
KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_VALUE_CHARS = 1024
MAX_PAIRS = 32


def _value_ok(value: str) -> bool:
    return len(value) <= MAX_VALUE_CHARS and "\r" not in value and "\n" not in value


def check_metadata(
    metadata: Mapping[str, object] | None, what: str = "additional_metadata"
) -> dict[str, str]:
    """``metadata`` as a dict of strings (numbers and booleans are written as JSON would);
    :class:`ConfigError` naming the first key or value that breaks the rules."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConfigError(f"{what} must be a mapping of strings, not {type(metadata).__name__}")
    if len(metadata) > MAX_PAIRS:
        raise ConfigError(f"{what} has {len(metadata)} keys; at most {MAX_PAIRS}")
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise ConfigError(f"{what} key {key!r}: use 1-64 of A-Z, a-z, 0-9, '_', '.' or '-'")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float | str):
            text = str(value)
        else:
            raise ConfigError(f"{what}[{key!r}] must be a string, not {type(value).__name__}")
        if not _value_ok(text):
            raise ConfigError(
                f"{what}[{key!r}]: at most {MAX_VALUE_CHARS} characters, without line breaks"
            )
        out[key] = text
    return out


def metadata_headers(metadata: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The headers that carry ``metadata`` (checked already) on an event."""
    return tuple((HEADER_PREFIX + k, v) for k, v in metadata.items())


def metadata_of_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """An event's metadata from its headers (the prefix matched whatever its case); pairs
    that break the rules are left out, as are those past :data:`MAX_PAIRS`."""
    out: dict[str, str] = {}
    if not headers:
        return out
    n = len(HEADER_PREFIX)
    lower = HEADER_PREFIX.lower()
    for name, value in headers.items():
        if len(out) >= MAX_PAIRS:
            break
        if len(name) > n and name[:n].lower() == lower:
            key = name[n:]
            if KEY_RE.match(key) and isinstance(value, str) and _value_ok(value):
                out[key] = value
    return out
