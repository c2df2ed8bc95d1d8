"""``hatchet.cron`` and ``hatchet.scheduled``: crons and scheduled runs of workflows.

Each call appends to the tenant's log (``created``, ``deleted``) or reads it back; the
engine arms the timers. See docs/triggers.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from eventstore.triggers import (
    CronView,
    ScheduleView,
    create_cron,
    create_schedule,
    delete_cron,
    delete_schedule,
    list_crons,
    list_schedules,
)
from worker.declare import WORKFLOW_ATTR, WorkflowSpec
from worker.portal import Portal
from worker.settings import ClientSettings


class Hatchet(Protocol):
    """What these clients use of ``worker.client.Hatchet``."""

    @property
    def portal(self) -> Portal: ...
    @property
    def settings(self) -> ClientSettings: ...


# (The classes' own ``list`` methods hide the builtin inside them.)
Crons = list[CronView]
Schedules = list[ScheduleView]


def workflow_name(workflow: Any) -> str:
    """A workflow given by name, or as the object ``hatchet.workflow`` made (v0 class or
    v1 workflow)."""
    if isinstance(workflow, str):
        return workflow
    if isinstance(workflow, type):  # a v0 class: its name may be name=...
        spec = getattr(workflow, WORKFLOW_ATTR, None)
        if isinstance(spec, WorkflowSpec):
            return spec.definition.name
    name = getattr(workflow, "name", None) or getattr(workflow, "__name__", None)
    if not isinstance(name, str):
        raise TypeError(f"not a workflow: {workflow!r}")
    return name


class CronClient:
    """``hatchet.cron``: ``create``, ``list``, ``delete`` (and their ``aio_`` forms)."""

    def __init__(self, hatchet: Hatchet) -> None:
        self._h = hatchet

    async def _create(
        self, workflow: Any, name: str, expression: str, input: Any, timezone: str | None
    ) -> CronView:
        nc = await self._h.portal.nc()
        scope = self._h.settings.scope
        return await create_cron(
            nc, scope, workflow_name(workflow), name, expression, input, timezone
        )

    def create(
        self,
        workflow: Any,
        cron_name: str,
        expression: str,
        input: Any = None,
        *,
        timezone: str | None = None,
    ) -> CronView:
        """Run ``workflow`` with ``input`` at each tick of ``expression`` (5 fields, or 6
        with seconds first; UTC unless ``timezone``). A cron of the same name is replaced.
        Raises ``TriggerError`` (one line) for a bad expression or an unknown workflow."""
        return self._h.portal.call(self._create(workflow, cron_name, expression, input, timezone))

    async def aio_create(
        self,
        workflow: Any,
        cron_name: str,
        expression: str,
        input: Any = None,
        *,
        timezone: str | None = None,
    ) -> CronView:
        return await self._h.portal.run(
            self._create(workflow, cron_name, expression, input, timezone)
        )

    async def _list(self) -> Crons:
        return await list_crons(await self._h.portal.nc(), self._h.settings.scope)

    def list(self) -> Crons:
        """The namespace's crons, with their next fire (``next_fire``) and last one."""
        return self._h.portal.call(self._list())

    async def aio_list(self) -> Crons:
        return await self._h.portal.run(self._list())

    async def _delete(self, name: str) -> None:
        await delete_cron(await self._h.portal.nc(), self._h.settings.scope, name)

    def delete(self, cron_name: str) -> None:
        """Stop the cron (by name, or by its id as Hatchet's SDK does): no tick after the
        engine reads this starts a run."""
        self._h.portal.call(self._delete(cron_name))

    async def aio_delete(self, cron_name: str) -> None:
        await self._h.portal.run(self._delete(cron_name))


class ScheduledClient:
    """``hatchet.scheduled``: ``create``, ``list``, ``delete`` (and their ``aio_`` forms)."""

    def __init__(self, hatchet: Hatchet) -> None:
        self._h = hatchet

    async def _create(self, workflow: Any, trigger_at: dt.datetime, input: Any) -> ScheduleView:
        nc = await self._h.portal.nc()
        scope = self._h.settings.scope
        return await create_schedule(nc, scope, workflow_name(workflow), trigger_at, input)

    def create(self, workflow: Any, trigger_at: dt.datetime, input: Any = None) -> ScheduleView:
        """Run ``workflow`` with ``input`` once, at ``trigger_at`` (timezone-aware, in the
        future). The view's ``id`` deletes it."""
        return self._h.portal.call(self._create(workflow, trigger_at, input))

    async def aio_create(
        self, workflow: Any, trigger_at: dt.datetime, input: Any = None
    ) -> ScheduleView:
        return await self._h.portal.run(self._create(workflow, trigger_at, input))

    async def _list(self) -> Schedules:
        return await list_schedules(await self._h.portal.nc(), self._h.settings.scope)

    def list(self) -> Schedules:
        """The namespace's scheduled runs, by time, with their status."""
        return self._h.portal.call(self._list())

    async def aio_list(self) -> Schedules:
        return await self._h.portal.run(self._list())

    async def _delete(self, schedule_id: str) -> None:
        await delete_schedule(await self._h.portal.nc(), self._h.settings.scope, schedule_id)

    def delete(self, schedule_id: str) -> None:
        """Cancel a scheduled run that has not fired yet."""
        self._h.portal.call(self._delete(schedule_id))

    async def aio_delete(self, schedule_id: str) -> None:
        await self._h.portal.run(self._delete(schedule_id))
