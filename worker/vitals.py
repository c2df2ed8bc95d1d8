"""A worker's vital signs, and the bounds past which it is unhealthy or must end.

Two things make a worker useless while its process still runs: an event loop blocked by a
step (a sync ``time.sleep`` in an ``async`` step: no heartbeats, no keepalives, no results,
while it holds its slots), and a NATS connection lost for good. :class:`Vitals` records the
loop's last tick (the loop writes it every ``TICK_S``) and since when NATS has been
unreachable; :meth:`Vitals.check` is the pure verdict, read by ``/health`` and by the
watchdog thread (:mod:`worker.watchdog`), never on the loop it judges.

* ``HATCHET_CLIENT_WORKER_HEALTHCHECK_EVENT_LOOP_BLOCK_THRESHOLD_SECONDS`` (5): the loop
  blocked longer: ``/health`` answers 503;
* ``NATCHET_WORKER_LOOP_BLOCKED_EXIT_SECONDS`` (60; 0: never): the process exits 70;
* ``NATCHET_WORKER_NATS_LOST_UNHEALTHY_SECONDS`` (10): NATS lost longer: 503;
* ``NATCHET_WORKER_NATS_LOST_EXIT_SECONDS`` (60; 0: never): the process exits 69.
"""

from __future__ import annotations

import enum
import math
import os
import threading
import time
from collections.abc import Mapping

import attrs

from eventstore import ConfigError

TICK_S = 0.25

HEALTH_ENABLED_ENV = "HATCHET_CLIENT_WORKER_HEALTHCHECK_ENABLED"
HEALTH_PORT_ENV = "HATCHET_CLIENT_WORKER_HEALTHCHECK_PORT"
HEALTH_BIND_ENV = "HATCHET_CLIENT_WORKER_HEALTHCHECK_BIND_ADDRESS"
LOOP_UNHEALTHY_ENV = "HATCHET_CLIENT_WORKER_HEALTHCHECK_EVENT_LOOP_BLOCK_THRESHOLD_SECONDS"
LOOP_EXIT_ENV = "NATCHET_WORKER_LOOP_BLOCKED_EXIT_SECONDS"
NATS_UNHEALTHY_ENV = "NATCHET_WORKER_NATS_LOST_UNHEALTHY_SECONDS"
NATS_EXIT_ENV = "NATCHET_WORKER_NATS_LOST_EXIT_SECONDS"

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


class Exit(enum.IntEnum):
    """How a worker process ends (``worker.start()``), after the sysexits convention."""

    OK = 0  # stopped: a signal, a graceful shutdown
    FAILED = 1  # an unexpected error (with its traceback)
    NATS_LOST = 69  # EX_UNAVAILABLE: NATS unreachable at start, or lost past the bound
    LOOP_BLOCKED = 70  # EX_SOFTWARE: a step blocked the event loop past the bound
    REFUSED = 76  # EX_PROTOCOL: the engine refuses this worker's wire protocol
    NO_PERMISSION = 77  # EX_NOPERM: NATS refuses the worker's token (revoked, expired)
    CONFIG = 78  # EX_CONFIG: bad settings (a variable, a port in use, no workflows)
    INTERRUPTED = 130  # a second signal: exit at once


@attrs.frozen
class HealthSettings:
    """The health endpoint (off unless enabled) and the bounds of :class:`Vitals`, in
    seconds (an exit bound of 0: never exit for that)."""

    enabled: bool = False
    port: int = 8001
    bind_address: str = "0.0.0.0"  # a probe reaches the pod's address
    loop_unhealthy_s: float = 5.0
    loop_exit_s: float = 60.0
    nats_unhealthy_s: float = 10.0
    nats_exit_s: float = 60.0

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{HEALTH_PORT_ENV}={self.port}: use a port, 1-65535")
        for name, value in (
            (LOOP_UNHEALTHY_ENV, self.loop_unhealthy_s),
            (NATS_UNHEALTHY_ENV, self.nats_unhealthy_s),
        ):
            if value <= 0:
                raise ConfigError(f"{name}={value}: use a number of seconds above 0")
        for name, value in ((LOOP_EXIT_ENV, self.loop_exit_s), (NATS_EXIT_ENV, self.nats_exit_s)):
            if value < 0:
                raise ConfigError(f"{name}={value}: use a number of seconds (0: never)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HealthSettings:
        env = os.environ if env is None else env
        d = cls()
        raw = env.get(HEALTH_ENABLED_ENV, "").strip().lower()
        if raw not in TRUE + FALSE:
            raise ConfigError(f"{HEALTH_ENABLED_ENV}={raw!r}: use true or false")
        port_raw = env.get(HEALTH_PORT_ENV, "").strip()
        try:
            port = int(port_raw) if port_raw else d.port
        except ValueError:
            raise ConfigError(f"{HEALTH_PORT_ENV}={port_raw!r}: use a port number") from None
        return cls(
            enabled=raw in TRUE,
            port=port,
            bind_address=env.get(HEALTH_BIND_ENV, "").strip() or d.bind_address,
            loop_unhealthy_s=_seconds(env, LOOP_UNHEALTHY_ENV, d.loop_unhealthy_s),
            loop_exit_s=_seconds(env, LOOP_EXIT_ENV, d.loop_exit_s),
            nats_unhealthy_s=_seconds(env, NATS_UNHEALTHY_ENV, d.nats_unhealthy_s),
            nats_exit_s=_seconds(env, NATS_EXIT_ENV, d.nats_exit_s),
        )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: use a number of seconds") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r}: use a number of seconds")
    return value


@attrs.frozen
class Fatal:
    """Why the worker must end, and the exit code that says so."""

    code: Exit
    reason: str


@attrs.frozen
class Verdict:
    """What :meth:`Vitals.check` found: healthy or not (``problems``), and whether the
    worker must end (``fatal``)."""

    loop_blocked_s: float
    nats_connected: bool
    nats_lost_s: float
    problems: tuple[str, ...] = ()
    fatal: Fatal | None = None

    @property
    def healthy(self) -> bool:
        return not self.problems


class Vitals:
    """Thread-safe: the loop writes, the watchdog and the HTTP thread read."""

    def __init__(self, settings: HealthSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._last_tick = time.monotonic()
        self._nats_down_since: float | None = None
        self.refused: str | None = None

    def tick(self, nats_connected: bool, now: float | None = None) -> None:
        """From the event loop, every ``TICK_S``: it runs, and NATS is (not) connected."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._last_tick = now
            if nats_connected:
                self._nats_down_since = None
            elif self._nats_down_since is None:
                self._nats_down_since = now

    def check(self, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        s = self.settings
        with self._lock:
            blocked = max(0.0, now - self._last_tick - TICK_S)
            down_since = self._nats_down_since
        lost = 0.0 if down_since is None else now - down_since
        problems: list[str] = []
        fatal: Fatal | None = None
        if blocked > s.loop_unhealthy_s:
            problems.append(f"the event loop has been blocked for {blocked:.1f}s")
        if down_since is not None and lost > s.nats_unhealthy_s:
            problems.append(f"NATS has been unreachable for {lost:.1f}s")
        if self.refused is not None:
            problems.append(self.refused)
        if s.nats_exit_s and down_since is not None and lost > s.nats_exit_s:
            fatal = Fatal(
                Exit.NATS_LOST,
                f"NATS has been unreachable for {lost:.0f}s (more than {NATS_EXIT_ENV}="
                f"{s.nats_exit_s:g}): exiting so a supervisor restarts the worker",
            )
        elif s.loop_exit_s and blocked > s.loop_exit_s:
            fatal = Fatal(
                Exit.LOOP_BLOCKED,
                f"the event loop has been blocked for {blocked:.0f}s (more than {LOOP_EXIT_ENV}="
                f"{s.loop_exit_s:g}): a step blocks it (a sync call in an async step?); "
                "exiting so a supervisor restarts the worker",
            )
        return Verdict(
            loop_blocked_s=round(blocked, 3),
            nats_connected=down_since is None,
            nats_lost_s=round(lost, 3),
            problems=tuple(problems),
            fatal=fatal,
        )
