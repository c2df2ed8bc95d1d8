"""The one shape of every long-running component (``eventstore.Service``): ``shutdown()``
waits until ``run()`` has returned, is idempotent, and works before, during and after a run;
a component that ignores the request is cancelled after its grace period."""

from __future__ import annotations

import asyncio

import pytest

from eventstore import Service


class Polite(Service):
    name = "polite"

    def __init__(self) -> None:
        super().__init__()
        self.served = 0
        self.cleaned = False

    async def _serve(self) -> None:
        self.served += 1
        try:
            await self.stopping.wait()
            await asyncio.sleep(0.05)  # finishing what it had in hand
        finally:
            self.cleaned = True


class Stubborn(Service):
    name = "stubborn"
    grace_s = 0.2

    async def _serve(self) -> None:
        await asyncio.sleep(3600)  # never looks at ``stopping``


async def test_shutdown_waits_until_run_has_returned_and_is_idempotent() -> None:
    service = Polite()
    async with service:
        await asyncio.sleep(0)
        assert service.running
    assert not service.running and service.cleaned  # returned only once it had stopped
    await service.shutdown()  # again: nothing to do
    assert service.served == 1


async def test_shutdown_of_a_run_awaited_elsewhere_waits_for_it() -> None:
    service = Polite()
    task = asyncio.create_task(service.run())
    await asyncio.sleep(0)
    await asyncio.gather(service.shutdown(), service.shutdown())
    assert task.done() and service.cleaned


async def test_shut_down_before_it_runs_it_does_not_start() -> None:
    service = Polite()
    await service.shutdown()
    await service.run()
    assert service.served == 0


async def test_a_service_that_ignores_shutdown_is_cancelled_after_its_grace() -> None:
    service = Stubborn()
    task = service.start()
    await asyncio.sleep(0)
    await service.shutdown()
    assert task.cancelled() and not service.running


async def test_running_twice_at_once_is_refused() -> None:
    service = Polite()
    task = service.start()
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already running"):
        await service.run()
    await service.shutdown()
    assert task.done()
