"""The embedded dev stack: nats-server and PostgreSQL from wheels, in a data directory.

One stack per data directory (:mod:`natchet.dev.lock`): a second one is refused before it
touches the first one's servers. A stack killed with SIGKILL leaves its servers running and
its lock dropped; the next stack in that directory stops them before starting its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psycopg
from psycopg import sql

from natchet.dev.cluster import NatsCluster
from natchet.dev.embedded import EmbeddedPostgres, NatsServer
from natchet.dev.lock import DataDirLock

DEV_DATABASE = "natchet"


def _stop_stale(pid_file: Path) -> None:
    """A dev stack killed with SIGKILL leaves its servers running: stop them first."""
    if not pid_file.exists():
        return
    with contextlib.suppress(ValueError, OSError):
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)  # raises once the process is gone
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def ensure_database(server_url: str, name: str, *, wait_s: float = 30.0) -> None:
    """Create database ``name`` if missing, waiting while a server that just opened its
    port finishes starting up."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = psycopg.connect(server_url, autocommit=True)
            break
        except psycopg.OperationalError as exc:
            if "starting up" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


class DevStack:
    """Starts what is not given: a NATS server (``cluster`` > 1: a cluster of that many
    nodes, docs/scaling.md) and/or a PostgreSQL server."""

    def __init__(
        self,
        data_dir: Path,
        *,
        nats_url: str | None = None,
        database_url: str | None = None,
        auth: bool = False,
        tls: bool = False,
        cluster: int = 1,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.cluster_size = cluster
        self.cluster: NatsCluster | None = None
        # With ``auth`` the embedded server authenticates tenants through the engine's auth
        # callout (docs/tenancy.md); ``tls`` adds a generated local CA. Both opt-in.
        self.auth = auth or tls
        self.tls = tls
        self.auth_file: Path | None = None
        self.nats: NatsServer | None = None
        self.postgres: EmbeddedPostgres | None = None
        self._nats_url = nats_url
        self._database_url = database_url
        self._lock = DataDirLock(self.data_dir)

    @property
    def nats_url(self) -> str:
        if self._nats_url:
            return self._nats_url
        if self.cluster is not None:
            url = self.cluster.url
        elif self.nats is not None:
            url = self.nats.url
        else:
            return ""
        return url.replace("nats://", "tls://") if self.tls else url

    @property
    def nats_monitor_url(self) -> str | None:
        """The embedded server's monitoring endpoint (a cluster's first node's)."""
        if self.cluster is not None:
            return self.cluster.nodes[0].monitor_url
        return self.nats.monitor_url if self.nats is not None else None

    @property
    def database_url(self) -> str:
        return self._database_url or (self.postgres.url(DEV_DATABASE) if self.postgres else "")

    def start(self) -> None:
        """Start what is not given; on any failure, stop what was started and re-raise.
        Raises :class:`~natchet.dev.lock.DataDirLockedError` if another stack runs in the
        data directory."""
        self._lock.acquire()
        try:
            if self._nats_url is None and self.cluster_size > 1:
                self._start_cluster(self.data_dir / "nats")
            elif self._nats_url is None:
                nats_dir = self.data_dir / "nats"
                _stop_stale(nats_dir / "nats-server.pid")
                config = None
                if self.auth:
                    from natchet.dev.tenancy import prepare_nats_dir

                    config, self.auth_file = prepare_nats_dir(nats_dir, tls=self.tls)
                self.nats = NatsServer(
                    nats_dir,
                    config_file=config,
                    extra_args=("-P", str(nats_dir / "nats-server.pid")),
                )
                self.nats.start()
            if self._database_url is None:
                pg_dir = self.data_dir / "postgres"
                _stop_stale(pg_dir / "pgdata" / "postmaster.pid")
                self.postgres = EmbeddedPostgres(pg_dir)
                self.postgres.start()
                ensure_database(self.postgres.url(), DEV_DATABASE)
        except BaseException:
            self.stop()
            raise

    def _start_cluster(self, nats_dir: Path) -> None:
        for i in range(self.cluster_size):
            _stop_stale(nats_dir / f"node-{i + 1}" / "nats-server.pid")
        configs = None
        if self.auth:
            from natchet.dev.tenancy import prepare_cluster_dirs

            configs, self.auth_file = prepare_cluster_dirs(
                nats_dir, self.cluster_size, tls=self.tls
            )
        self.cluster = NatsCluster(nats_dir, self.cluster_size, config_files=configs)
        self.cluster.start()

    def stop(self) -> None:
        """Stop the servers this stack started, then free the data directory. Idempotent."""
        try:
            if self.postgres is not None:
                self.postgres.stop()
            if self.nats is not None:
                self.nats.stop()
            if self.cluster is not None:
                self.cluster.stop()
        finally:
            self._lock.release()
