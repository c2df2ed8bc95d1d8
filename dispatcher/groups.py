"""Concurrency groups: the runs in flight of each (namespace, workflow, key), admitted or
waiting their turn (:mod:`schemas.concurrency`). An index over the state's runs, kept as
they are folded and rebuilt from them after a snapshot is loaded; ``dirty`` names the
groups whose runs changed since the admissions last looked (``dispatcher.admission``).
Pure."""

from __future__ import annotations

import attrs

from schemas.subjects import Scope

GroupId = tuple[Scope, str, str]  # (scope, workflow, key)


@attrs.define
class Group:
    # Run ids in the order they were created (dicts as ordered sets).
    admitted: dict[str, None] = attrs.Factory(dict)
    waiting: dict[str, None] = attrs.Factory(dict)


class Groups:
    def __init__(self) -> None:
        self.groups: dict[GroupId, Group] = {}
        self.dirty: set[GroupId] = set()

    def add(self, gid: GroupId, run_id: str, admitted: bool) -> None:
        group = self.groups.setdefault(gid, Group())
        (group.admitted if admitted else group.waiting)[run_id] = None
        self.dirty.add(gid)

    def admit(self, gid: GroupId, run_id: str) -> None:
        group = self.groups.get(gid)
        if group is not None and run_id in group.waiting:
            del group.waiting[run_id]
            group.admitted[run_id] = None

    def remove(self, gid: GroupId, run_id: str) -> None:
        group = self.groups.get(gid)
        if group is None:
            return
        group.admitted.pop(run_id, None)
        group.waiting.pop(run_id, None)
        if not group.admitted and not group.waiting:
            del self.groups[gid]
        self.dirty.add(gid)

    def clear(self) -> None:
        self.groups.clear()
        self.dirty.clear()
