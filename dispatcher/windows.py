"""Rate limits' sliding windows (:mod:`schemas.ratelimits`): the units each limit's offered
tasks took, and when. Folded from the tasks in the log (``Task.rate_limits``), so a
restart rebuilds them; kept in snapshots. Pure.

A task's units count in the window of ``duration`` seconds after its offer: at ``now`` a
limit has taken the units of the tasks offered in ``(now - duration, now]``. Entries older
than the window of their own use are dropped as newer ones come (a limit's window is what
its use recorded; one set longer later counts only what is still kept).
"""

from __future__ import annotations

import datetime as dt

import attrs

from schemas.subjects import Scope

LimitId = tuple[Scope, str]  # (namespace, key)
# One offer: the task's id (run, step, attempt, wakes) -> (when, units, its window in s).
Entry = tuple[dt.datetime, int, float]


@attrs.define
class Windows:
    taken: dict[LimitId, dict[str, Entry]] = attrs.Factory(dict)

    def add(
        self, limit: LimitId, task_id: str, at: dt.datetime, units: int, window_s: float
    ) -> None:
        """Record an offer (again: nothing more), dropping entries its time has outlived."""
        entries = self.taken.setdefault(limit, {})
        if task_id in entries:
            return
        entries[task_id] = (at, units, window_s)
        for old, (when, _units, window) in list(entries.items()):
            if when + dt.timedelta(seconds=window) > at:
                break  # oldest first (folded in order): the rest are newer
            del entries[old]

    def room_at(
        self, limit: LimitId, units: int, most: int, window_s: float, now: dt.datetime
    ) -> dt.datetime | None:
        """None if ``units`` more fit in the window ending at ``now`` (at most ``most``);
        else when enough of the taken units leave it for them to fit."""
        since = now - dt.timedelta(seconds=window_s)
        live = sorted(
            (when, n) for when, n, _w in self.taken.get(limit, {}).values() if when > since
        )
        used = sum(n for _when, n in live)
        if used + units <= most:
            return None
        need, freed = used + units - most, 0
        for when, n in live:
            freed += n
            if freed >= need:
                return when + dt.timedelta(seconds=window_s)
        return now + dt.timedelta(seconds=window_s)  # not reached: units <= most

    def clear(self) -> None:
        self.taken.clear()
