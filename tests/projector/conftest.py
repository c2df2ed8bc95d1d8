"""Projector fixtures; the servers, ``dsn`` and ``nc`` come from ``tests/conftest.py``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client as NATS

import eventstore


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(dsn) as connection:
        yield connection


@pytest.fixture
async def tenant(nc: NATS) -> str:
    """A fresh tenant with its stream."""
    name = f"t{uuid.uuid4().hex[:12]}"
    await eventstore.ensure_tenant_stream(nc, name)
    return name
