"""The dashboard application (FastAPI): the JSON API, the pages, the live stream, and
:func:`serve`, which runs it with uvicorn inside the caller's asyncio loop.

Errors: an :class:`HTTPException` is JSON ``{"detail": message}`` under ``/api`` and an
HTML page elsewhere; bad input is 4xx with a message (FastAPI's 422 for a malformed body);
a server the dashboard cannot reach is 503 with the reason, never a 500 with a traceback."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from natchet.dashboard import api, live, pages
from natchet.dashboard.backend import Backend, DashboardSettings
from natchet.version import natchet_version
from schemas.errors import NatchetError

log = logging.getLogger(__name__)

SESSION_COOKIE = "natchet_session"
SESSION_AGE = dt.timedelta(hours=12)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def create_app(settings: DashboardSettings, *, secure_cookies: bool = False) -> FastAPI:
    backend = Backend(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await backend.aclose()

    app = FastAPI(
        title="natchet dashboard",
        version=natchet_version(),
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN: not here (the document is enough)
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.backend = backend
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret,
        session_cookie=SESSION_COOKIE,
        max_age=int(SESSION_AGE.total_seconds()),
        same_site="lax",
        https_only=secure_cookies,
    )

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for key, value in HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        ctx = None
        return pages.render(
            request, ctx, "error.html", message=exc.detail, status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        if _wants_json(request):
            return JSONResponse({"detail": problems or "bad request"}, 422)
        return pages.render(request, None, "error.html", message=problems, status_code=422)

    @app.exception_handler(pages.SignInRequired)
    async def to_sign_in(_request: Request, _exc: pages.SignInRequired) -> Response:
        return RedirectResponse("/signin", 303)

    @app.exception_handler(NatchetError)
    async def unavailable(request: Request, exc: NatchetError) -> Response:
        log.warning("dashboard: %s", exc)
        message = f"a server the dashboard needs did not answer: {exc}"
        if _wants_json(request):
            return JSONResponse({"detail": message}, 503)
        return pages.render(request, None, "error.html", message=message, status_code=503)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        # A fault of ours or of a server: logged with its traceback, answered in one line.
        log.exception("dashboard: %s %s failed", request.method, request.url.path)
        message = f"the dashboard failed to answer ({type(exc).__name__}); its log says more"
        if _wants_json(request):
            return JSONResponse({"detail": message}, 500)
        return pages.render(request, None, "error.html", message=message, status_code=500)

    app.include_router(api.router)
    app.include_router(live.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app


class Dashboard:
    """The dashboard served on ``host:port`` (0: a free port) in this asyncio loop:
    ``await start()``, ``url``, then ``await shutdown()`` (idempotent)."""

    def __init__(
        self,
        settings: DashboardSettings,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secure_cookies: bool = False,
    ) -> None:
        self.app = create_app(settings, secure_cookies=secure_cookies)
        config = uvicorn.Config(
            self.app, host=host, port=port, log_level="warning", lifespan="on", access_log=False
        )
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        self.host, self._port = host, port

    async def start(self) -> None:
        """Bind first (a port in use is one line, nothing started), then serve."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port))
        except OSError as exc:
            sock.close()
            raise NatchetError(
                f"cannot serve the dashboard on {self.host}:{self._port}: {exc.strerror or exc}"
            ) from None
        sock.set_inheritable(True)
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]), name="dashboard")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # the reason it stopped (a port in use, ...)
                raise NatchetError("the dashboard stopped as it started")
            await asyncio.sleep(0.02)

    @property
    def port(self) -> int:
        [server] = self.server.servers
        return int(server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    async def shutdown(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        await asyncio.wait({self._task})
        self._task = None
