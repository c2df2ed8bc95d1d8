"""Building attrs message classes from decoded JSON, and the clock messages are stamped
with. Pure; shared by every module of wire types."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

from schemas.fieldtypes import check

T = TypeVar("T")


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_FIELD_SETS: dict[type, frozenset[str]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    """An attrs class's field names in order (looked up once per class)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in attrs.fields(cls))
    return names


def structure(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build ``cls`` from a decoded mapping, ignoring fields this version does not know;
    ``TypeError`` for a field whose value is not of its JSON type (:mod:`schemas.fieldtypes`)."""
    check(cls, data)
    names = _FIELD_SETS.get(cls)
    if names is None:
        names = _FIELD_SETS[cls] = frozenset(field_names(cls))
    if names.issuperset(data):  # the usual case: no field this version does not know
        return cls(**data)
    return cls(**{k: v for k, v in data.items() if k in names})
