"""``/health`` and ``/metrics`` over HTTP, served from a thread of their own.

Never on the worker's event loop: the loop being blocked is one of the things ``/health``
reports, so it must answer while the loop does not. ``GET /health`` answers 200 with
``{"status": "HEALTHY", ...}`` or 503 with ``{"status": "UNHEALTHY", "problems": [...]}``
(Hatchet's bodies, with natchet's details); ``GET /metrics`` the Prometheus text format.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from eventstore import ConfigError
from worker.vitals import HEALTH_BIND_ENV, HEALTH_PORT_ENV, Vitals

log = logging.getLogger(__name__)


class HealthServer:
    def __init__(
        self,
        vitals: Vitals,
        metrics: Callable[[], bytes],
        about: dict[str, Any],
        *,
        host: str,
        port: int,
    ) -> None:
        self.vitals = vitals
        self.metrics = metrics
        self.about = about
        handler = _handler(self)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve the worker's health endpoint on {host}:{port} "
                f"({HEALTH_BIND_ENV}, {HEALTH_PORT_ENV}): {exc.strerror or exc}"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="worker-health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("worker health on http://%s:%d/health and /metrics", *self._address())

    def _address(self) -> tuple[str, int]:
        host = str(self._server.server_address[0])
        return host, self.port

    def stop(self) -> None:
        """Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def health(self) -> tuple[int, bytes]:
        verdict = self.vitals.check()
        body = {
            "status": "HEALTHY" if verdict.healthy else "UNHEALTHY",
            **self.about,
            "problems": list(verdict.problems),
            "event_loop_blocked_seconds": verdict.loop_blocked_s,
            "nats_connected": verdict.nats_connected,
            "nats_lost_seconds": verdict.nats_lost_s,
        }
        return (200 if verdict.healthy else 503), orjson.dumps(body)


def _handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "natchet-worker"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                code, body = server.health()
                self._send(code, "application/json", body)
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, server.metrics())
            else:
                self._send(404, "application/json", b'{"error": "not found: /health, /metrics"}')

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("health %s: " + format, self.address_string(), *args)

    return Handler
