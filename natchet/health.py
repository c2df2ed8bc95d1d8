"""The engine's HTTP port: ``/metrics`` (Prometheus text format), ``/live`` and ``/ready``.

- ``/live``: 200 while the process runs and its event loop answers.
- ``/ready``: 200 when NATS is connected, Postgres answers and, for every tenant, the
  dispatcher and the projector are within the lag bound (``natchet.probe``); else 503. Both
  answer a short JSON object: ``{"ready": false, "failed": {"postgres": "..."}}``.
- ``/metrics``: the engine's registry (``natchet.metrics``), its gauges sampled as scraped.

A plain HTTP/1.1 server on the engine's own event loop (``asyncio.start_server``): no thread,
so a scrape reads the servers with the engine's own connections, and a loop too blocked to
answer is what ``/live`` should report anyway. One request per connection; GET and HEAD.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventstore import ConfigError, Service
from natchet.metrics import EngineMetrics
from natchet.probe import Probe

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 8192
JSON = "application/json"


class HealthServer(Service):
    """Serves ``metrics`` and ``probe`` on ``host:port``: :meth:`open` binds the port (0: a
    free one, then in :attr:`port`), ``run()`` serves until ``shutdown()``."""

    name = "metrics server"

    def __init__(self, metrics: EngineMetrics, probe: Probe, host: str, port: int) -> None:
        super().__init__()
        self.metrics = metrics
        self.probe = probe
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    async def open(self) -> None:
        """Listen; a port that cannot be had is a :class:`ConfigError` naming it."""
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(self._client, self.host, self.port)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("metrics and health on %s/metrics, /live, /ready", self.url)

    async def _serve(self) -> None:
        await self.open()
        server = self._server
        assert server is not None
        try:
            await self.stopping.wait()
        finally:
            self._server = None
            server.close()
            await server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            method, path = _request_line(head)
            status, ctype, body = await self._answer(method, path)
            _respond(writer, status, ctype, b"" if method == "HEAD" else body, len(body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that said nothing whole in time: hang up
        except ValueError:
            _respond(writer, 400, JSON, b'{"error":"bad request"}')
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except ConnectionError:
            pass  # the client left
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, JSON, b'{"error":"method not allowed"}'
        path = path.split("?", 1)[0]
        if path == "/live":
            return 200, JSON, b'{"live":true}'
        if path == "/ready":
            report = await self.probe.look()
            self.metrics.sampled = report.sampled
            body: dict[str, Any] = {"ready": report.ready}
            if not report.ready:
                body["failed"] = {c.name: c.detail for c in report.checks if not c.ok}
            return (200 if report.ready else 503), JSON, orjson.dumps(body)
        if path == "/metrics":
            report = await self.probe.look()
            self.metrics.sampled = report.sampled
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)
        return 404, JSON, b'{"error":"not found: try /metrics, /live or /ready"}'


def _request_line(head: bytes) -> tuple[str, str]:
    if len(head) > MAX_REQUEST_BYTES:
        raise ValueError("request too large")
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("not an HTTP request line")
    return parts[0], parts[1]


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    ctype: str,
    body: bytes,
    length: int | None = None,
) -> None:
    reason = _REASONS.get(status, "Service Unavailable")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + body)
