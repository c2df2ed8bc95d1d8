"""Bulk: ``hatchet.event.bulk_push([...])`` and ``hatchet.admin.run_workflows([...])``.

Items are checked first (key or workflow name, JSON payload, metadata, size); the good ones
are appended pipelined (:class:`eventstore.Appender`), :data:`BATCH` in flight at a time, in
the order given, so the log holds them in that order. The answer is one reference per item,
in order.

Not all-or-nothing: an item that is bad, or that the log refuses, is left out and every
other one is appended. Then :class:`BulkError` says which (by index, with the reason) and
carries what was appended (``results``: a reference per item, None for those left out), so
a caller can retry just those. A run request carries a dedup id (its run id), so sending
one again never starts a second run.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from eventstore import Append, Appender, AppendError, Connection, NatchetError
from schemas import ConfigError, RunRequested, Scope, encode, encode_json
from schemas.metadata import metadata_headers
from schemas.priority import HEADER as PRIORITY_HEADER
from schemas.subjects import SubjectError, check_name
from worker.options import metadata_option, priority_option

BATCH = 256  # appends in flight at once
_SHOWN = 5  # failures named in the error's message (all are in ``failures``)

R = TypeVar("R")


class BulkError(NatchetError):
    """Some items of a bulk call were not appended: ``failures`` maps each one's index to
    why; ``results`` holds, in order, the reference of every item that was (None for the
    others)."""

    def __init__(self, what: str, failures: dict[int, str], results: list[Any]) -> None:
        shown = "; ".join(f"item {i}: {why}" for i, why in list(failures.items())[:_SHOWN])
        more = f" (and {len(failures) - _SHOWN} more)" if len(failures) > _SHOWN else ""
        done = sum(r is not None for r in results)
        super().__init__(
            f"{len(failures)} of {len(results)} {what} not appended ({done} were): {shown}{more}"
        )
        self.failures = failures
        self.results = results


def _field(item: Any, name: str, default: Any = None) -> Any:
    """``item[name]`` of a mapping, or ``item.name`` of an object (Hatchet's models)."""
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


def _checked(make: Callable[[], Append], limit: int) -> Append | str:
    """The item's append, or why it cannot be one."""
    try:
        append = make()
    except (ConfigError, SubjectError, TypeError, ValueError) as exc:
        return str(exc)
    size = len(append.body) + sum(len(k) + len(v) + 4 for k, v in append.headers)
    if size > limit:
        return f"{size:,} bytes, over the {limit:,}-byte limit of one message"
    return append


async def _append(
    nc: Connection, prepared: list[Append | str], what: str, make_ref: Callable[[int, int], R]
) -> list[R]:
    """Append the items that passed their checks, in batches; the reference of item ``i``
    stored at sequence ``seq`` is ``make_ref(i, seq)``. Raise :class:`BulkError` naming
    the items that failed their checks or that the log refused."""
    failures: dict[int, str] = {i: p for i, p in enumerate(prepared) if isinstance(p, str)}
    good = [(i, p) for i, p in enumerate(prepared) if not isinstance(p, str)]
    refs: list[R | None] = [None] * len(prepared)
    appender = Appender(nc)
    try:
        for start in range(0, len(good), BATCH):
            batch = good[start : start + BATCH]
            outcomes = await appender.append_each([a for _i, a in batch])
            for (i, _a), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, AppendError):
                    failures[i] = str(outcome)
                else:
                    refs[i] = make_ref(i, outcome)
    finally:
        await appender.close()
    if failures:
        raise BulkError(what, dict(sorted(failures.items())), refs)
    return [r for r in refs if r is not None]


async def bulk_push(
    nc: Connection, scope: Scope, events: Sequence[Any], make_ref: Callable[[str, int], R]
) -> list[R]:
    """Append ``events`` (each ``{"key", "payload", "additional_metadata"}`` or an object
    with those attributes; ``options={"additional_metadata": ...}`` works too); the
    reference of each is ``make_ref(key, seq)``, once the log stored it."""
    limit = nc.max_payload - 1024
    keys: list[str] = []

    def prepare(item: Any) -> Append:
        key = _field(item, "key")
        if not isinstance(key, str):
            raise ConfigError(f"an event needs a key (a string), not {key!r}")
        meta = metadata_option(_field(item, "options"), "options")
        meta |= metadata_option(
            {"additional_metadata": _field(item, "additional_metadata")}, "event"
        )
        body = encode_json(_field(item, "payload"))
        headers = metadata_headers(meta)
        priority = priority_option(_field(item, "options"), "options")
        if priority is not None:
            headers = (*headers, (PRIORITY_HEADER, str(priority)))
        return Append(scope.event(key), body, uuid.uuid4().hex, headers=headers)

    prepared: list[Append | str] = []
    for item in events:
        keys.append(str(_field(item, "key")))
        prepared.append(_checked(functools.partial(prepare, item), limit))
    return await _append(nc, prepared, "events", lambda i, seq: make_ref(keys[i], seq))


async def run_workflows(
    nc: Connection, scope: Scope, runs: Sequence[Any], make_ref: Callable[[str], R]
) -> list[R]:
    """Request a run for each of ``runs`` (``{"workflow_name", "input", "options"}`` or
    an object with those attributes); the reference of each is ``make_ref(run_id)``."""
    limit = nc.max_payload - 1024
    ids = [str(uuid.uuid4()) for _ in runs]

    def prepare(item: Any, run_id: str) -> Append:
        name = _field(item, "workflow_name")
        if not isinstance(name, str):
            raise ConfigError(f"a run needs a workflow_name (a string), not {name!r}")
        check_name("workflow", name)
        payload = _field(item, "input")
        encode_json(payload)  # JSON only: the error says what it cannot carry
        meta = metadata_option(_field(item, "options"), "options")
        priority = priority_option(_field(item, "options"), "options")
        req = RunRequested(
            run_id=run_id, workflow=name, input=payload, additional_metadata=meta, priority=priority
        )
        return Append(scope.run(run_id, "requested"), encode(req), f"{run_id}:requested")

    prepared = [
        _checked(functools.partial(prepare, item, run_id), limit)
        for item, run_id in zip(runs, ids, strict=True)
    ]
    return await _append(nc, prepared, "runs", lambda i, _seq: make_ref(ids[i]))
