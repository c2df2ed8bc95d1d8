"""natchet's processes for one hot-path scenario: a fresh nats-server (from its wheel, on a
free port), a fresh database on the bench's PostgreSQL, ``natchet engine`` as its own
process (or ``engines`` of them, the tenant's dispatch in ``partitions``: issue 16), and N
worker processes (``bench/hot_worker.py``), each with its own NATS connection. Blocking:
the harness starts and stops it around a measurement.

Plain NATS (no operator mode): the accounts bench in docs/benchmarks.md found no
measurable cost to them, and the engine's own login is simpler without.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
from psycopg import sql

from bench.chaos_stack import Proc
from bench.hot_leases import wait_spread
from bench.hot_procs import CpuSnapshot, clean_env, spawn, stop
from bench.hot_record import RECORD_DIR_ENV
from natchet.dev.embedded import EmbeddedPostgres, NatsServer
from natchet.dev.stack import ensure_database

TENANT = "bench"
WORKER_SCRIPT = Path(__file__).with_name("hot_worker.py")
ENGINE_READY = "engine up"  # natchet.engine logs it once every dispatcher is ready
WORKER_READY = "READY"


class NatchetStack:
    """NATS, a database, the engines and workers for one scenario, under ``root``.
    ``units``: once started, each lease key of the tenant -> the engine holding it."""

    def __init__(
        self,
        root: Path,
        pg: EmbeddedPostgres,
        database: str,
        *,
        engines: int = 1,
        partitions: int = 1,
    ) -> None:
        self.root = root
        self.pg = pg
        self.database = database
        self.nats = NatsServer(root / "nats")
        self.record_dir = root / "records"
        self.logs = root / "logs"
        self.n_engines = engines
        self.partitions = partitions
        self.engines: list[Proc] = []
        self.workers: list[Proc] = []
        self.units: dict[str, str] = {}

    @property
    def database_url(self) -> str:
        return self.pg.url(self.database)

    @property
    def subject_prefix(self) -> str:
        return f"{TENANT}.default"

    def _env(self) -> dict[str, str]:
        return clean_env(
            {
                "NATCHET_NATS_URL": self.nats.url,
                "NATCHET_DATABASE_URL": self.database_url,
                "NATCHET_TENANTS": TENANT,
                "HATCHET_CLIENT_HOST_PORT": f"127.0.0.1:{self.nats.port}",
                "HATCHET_CLIENT_TENANT_ID": TENANT,
                "HATCHET_CLIENT_NAMESPACE": "default",
                RECORD_DIR_ENV: str(self.record_dir),
            }
            | ({"NATCHET_DISPATCH_PARTITIONS": str(self.partitions)} if self.partitions > 1 else {})
        )

    def start(self, workers: int, max_runs: int, workflow: str) -> None:
        """Everything up: the engine ready, every worker registered (``workflow``, see
        ``bench/hot_worker.py``) and taking work."""
        self.record_dir.mkdir(parents=True, exist_ok=True)
        self.nats.start()
        ensure_database(self.pg.url(), self.database)
        natchet = str(Path(sys.executable).with_name("natchet"))
        for i in range(self.n_engines):
            name = self._engine_name(i)
            self.engines.append(spawn(name, [natchet, "engine"], self.logs, self._env(), self.root))
        for engine in self.engines:
            engine.wait_log(ENGINE_READY, 60)
        # Measured only once each engine holds its share of the tenant's units.
        names = {e.pid: e.name for e in self.engines}
        self.units = wait_spread(self.nats.url, TENANT, self.partitions, names)
        for i in range(workers):
            args = [sys.executable, str(WORKER_SCRIPT), f"bench-{i}", str(max_runs), workflow]
            self.workers.append(spawn(f"worker-{i}", args, self.logs, self._env(), self.root))
        for w in self.workers:
            w.wait_log(WORKER_READY, 60)

    def _engine_name(self, i: int) -> str:
        return "engine" if self.n_engines == 1 else f"engine-{i}"

    def pids(self) -> dict[str, list[int]]:
        """The process trees whose CPU time the scenario reports (``engine``: every engine
        with its projector process)."""
        out = {"nats": [self.nats.proc.pid] if self.nats.proc else []}
        out["engine"] = [e.pid for e in self.engines]
        out["workers"] = [w.pid for w in self.workers]
        out["postgres"] = [self.pg.proc.pid] if self.pg.proc else []
        return out

    def processes(self, snap: CpuSnapshot) -> dict[str, int]:
        """Each engine process, and the projector process it started (its child in
        ``snap``), by name: ``engine`` and ``engine projector``, or ``engine-<i> ...``."""
        out: dict[str, int] = {}
        for engine in self.engines:
            out[engine.name] = engine.pid
            children = sorted(p for p, parent in snap.parents.items() if parent == engine.pid)
            for k, child in enumerate(children):
                out[f"{engine.name} projector" + (f" {k}" if k else "")] = child
        return out

    def stop(self) -> None:
        """Workers, then the engines, then NATS; the scenario's database dropped."""
        try:
            stop(self.workers, 20)
            stop(self.engines, 20)
        finally:
            self.nats.stop()
            with psycopg.connect(self.pg.url(), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self.database)
                    )
                )
