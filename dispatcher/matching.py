"""Which workflows an event starts: its key against their ``on_events``, then their filter.

``on_events`` holds keys (``order:paid``) and patterns (``order:*``: ``*`` is one or more
characters of any kind, '.' and ':' included). Exact keys are looked up in a dict; patterns
are tried only for the scopes that have some. Matching never leaves the event's scope
(tenant and namespace): alice's ``*`` never sees bob's events.

A workflow with an ``event_filter`` (:mod:`schemas.filters`) starts only when the filter
is true of the event; a filter that errors (a missing field, a wrong type) does not match,
and says why (the dispatcher logs it). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from schemas.filters import evaluate
from schemas.messages import WorkflowDef
from schemas.subjects import Scope


def is_pattern(key: str) -> bool:
    return "*" in key


def key_matches(pattern: str, key: str) -> bool:
    """Whether event key ``key`` is one ``pattern`` (a key, or a key with ``*``) names.

    Not a regex: ``*`` is "one character, then any number", matched by the greedy
    two-pointer walk, which takes at most ``len(pattern) * len(key)`` steps whatever the
    pattern (a regex of many ``.+`` backtracks exponentially on a key it does not match,
    and patterns come from registrations anyone with the tenant's credentials can write)."""
    if not is_pattern(pattern):
        return pattern == key
    glob = pattern.replace("*", "?*")  # '?': any one character; '*': any number
    p = k = 0
    star, resume = -1, 0
    while k < len(key):
        if p < len(glob) and (glob[p] == "?" or glob[p] == key[k]):
            p, k = p + 1, k + 1
        elif p < len(glob) and glob[p] == "*":
            star, resume = p, k
            p += 1
        elif star >= 0:
            p, resume = star + 1, resume + 1
            k = resume
        else:
            return False
    while p < len(glob) and glob[p] == "*":
        p += 1
    return p == len(glob)


@attrs.frozen
class Skipped:
    """A workflow whose key matched but whose filter did not, because it errored."""

    workflow: str
    reason: str


class EventRoutes:
    """The ``on_events`` of every registered workflow, indexed: built once per change of
    the registry (``State.routes``), asked once per event."""

    def __init__(self, workflows: Iterable[tuple[tuple[Scope, str], WorkflowDef]]) -> None:
        self._exact: dict[tuple[Scope, str], list[WorkflowDef]] = {}
        self._patterns: dict[Scope, list[tuple[str, WorkflowDef]]] = {}
        for (scope, _name), wf in workflows:
            # Strings only, each once (a hostile registration's other values name no event).
            for key in dict.fromkeys(k for k in wf.on_events if isinstance(k, str)):
                if is_pattern(key):
                    self._patterns.setdefault(scope, []).append((key, wf))
                else:
                    self._exact.setdefault((scope, key), []).append(wf)

    def by_key(self, scope: Scope, key: str) -> list[WorkflowDef]:
        """The workflows of ``scope`` listening to ``key``, each once, by name."""
        found = {wf.name: wf for wf in self._exact.get((scope, key), ())}
        for pattern, wf in self._patterns.get(scope, ()):
            if wf.name not in found and key_matches(pattern, key):
                found[wf.name] = wf
        return [found[name] for name in sorted(found)]

    def matching(
        self, scope: Scope, key: str, payload: Any, metadata: Mapping[str, str]
    ) -> tuple[list[WorkflowDef], list[Skipped]]:
        """The workflows the event starts, by name, and those whose filter errored."""
        started: list[WorkflowDef] = []
        skipped: list[Skipped] = []
        for wf in self.by_key(scope, key):
            if wf.event_filter is None:
                started.append(wf)
                continue
            verdict = evaluate(wf.event_filter, payload, metadata, key)
            if verdict.matched:
                started.append(wf)
            elif verdict.error is not None:
                skipped.append(Skipped(wf.name, verdict.error))
        return started, skipped
