"""The processes a chaos scenario runs and breaks: nats-server (or a cluster of them) and
PostgreSQL (from their wheels, in a scratch directory, restarted on the same port and
data), ``natchet engine`` and worker subprocesses. Blocking: call it from a thread in async
code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs

from natchet.dev.cluster import NatsCluster
from natchet.dev.embedded import EmbeddedPostgres, NatsServer
from natchet.dev.stack import DEV_DATABASE, ensure_database

WORKER_SCRIPT = Path(__file__).with_name("chaos_worker.py")
REPO = Path(__file__).resolve().parent.parent
ENGINE_READY = "engine up"
WORKER_READY = " started: "


class StackError(RuntimeError):
    """A process of the chaos stack did not start or stop as it should."""


@attrs.define
class Proc:
    """One subprocess, its log file, and how it ended."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    signalled: str | None = None  # "SIGTERM" / "SIGKILL" once the harness sent it

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_log(self, text: str, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.log.exists() and text in self.log.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        raise StackError(f"{self.name} not ready ({text!r}), rc={self.popen.poll()}\n{tail}")

    def signal(self, sig: signal.Signals) -> None:
        self.signalled = sig.name
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None


class Stack:
    """nats-server, PostgreSQL, the engine and workers for one tenant, under ``root``.
    ``nats_nodes`` > 1: a NATS cluster of that many nodes instead of one server, every
    stream with as many replicas, every process given every node's URL."""

    def __init__(
        self, root: Path, tenant: str = "chaos", *, worker_slots: int = 8, nats_nodes: int = 1
    ) -> None:
        self.root = root
        self.tenant = tenant
        self.worker_slots = worker_slots
        self.nats = NatsServer(root / "nats")
        self.cluster = NatsCluster(root / "nats", nats_nodes) if nats_nodes > 1 else None
        self.pg = EmbeddedPostgres(root / "pg")
        self.engine: Proc | None = None
        self.engines: list[Proc] = []  # every engine process started, in order
        self.workers: dict[str, Proc] = {}  # live workers by name
        self.retired: list[Proc] = []  # workers signalled, killed or stopped
        self._seq = 0
        (root / "logs").mkdir(parents=True, exist_ok=True)

    @property
    def database_url(self) -> str:
        return self.pg.url(DEV_DATABASE)

    @property
    def nats_url(self) -> str:
        """The server's URL, or every cluster node's, comma-separated."""
        return self.cluster.url if self.cluster is not None else self.nats.url

    @property
    def replicas(self) -> int:
        return len(self.cluster.nodes) if self.cluster is not None else 1

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
        return env | {
            "NATCHET_NATS_URL": self.nats_url,
            "NATCHET_DATABASE_URL": self.database_url,
            "NATCHET_TENANTS": self.tenant,
            "NATCHET_STREAM_REPLICAS": str(self.replicas),
            "HATCHET_CLIENT_HOST_PORT": self.nats_url.replace("nats://", ""),
            "HATCHET_CLIENT_TENANT_ID": self.tenant,
            "HATCHET_CLIENT_NAMESPACE": "default",
            "PYTHONUNBUFFERED": "1",
            # This tree's code, not whatever checkout the venv's editable install names.
            "PYTHONPATH": str(REPO),
        }

    def _spawn(self, name: str, args: list[str]) -> Proc:
        log = self.root / "logs" / f"{name}.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            popen = subprocess.Popen(
                args,
                cwd=self.root,  # not the repo: no .natchet/dev.env to pick up
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Proc(name, popen, log)

    def start(self) -> None:
        if self.cluster is not None:
            self.cluster.start()
        else:
            self.nats.start()
        self.pg.start()
        ensure_database(self.pg.url(), DEV_DATABASE)
        self.start_engine()

    def start_engine(self) -> Proc:
        natchet = Path(sys.executable).with_name("natchet")
        proc = self._spawn(f"engine-{len(self.engines) + 1}", [str(natchet), "engine"])
        self.engine = proc
        self.engines.append(proc)
        proc.wait_log(ENGINE_READY, 60)
        return proc

    def restart_engine(self, down_s: float) -> None:
        """``kill -9`` the engine, leave it down for ``down_s``, start it again."""
        assert self.engine is not None
        self.engine.signal(signal.SIGKILL)
        self.engine.wait(10)
        time.sleep(down_s)
        self.start_engine()

    def start_worker(self, grace_s: float = 30.0) -> Proc:
        self._seq += 1
        name = f"chaos-{self._seq}"
        args = [sys.executable, str(WORKER_SCRIPT), name, str(self.worker_slots), str(grace_s)]
        proc = self._spawn(name, args)
        self.workers[name] = proc
        proc.wait_log(WORKER_READY, 60)
        return proc

    def retire(self, name: str, sig: signal.Signals) -> Proc:
        """Signal worker ``name`` and forget it as a live worker (its exit is checked later)."""
        proc = self.workers.pop(name)
        proc.signal(sig)
        self.retired.append(proc)
        return proc

    def restart_nats(self, down_s: float) -> None:
        self.nats.stop()
        time.sleep(down_s)  # outage length: a load-shaping pause, not synchronization
        self.nats.start()

    def restart_postgres(self, down_s: float) -> None:
        self.pg.stop()
        time.sleep(down_s)
        self.pg.start()

    def stop_workers(self, timeout_s: float = 60.0) -> dict[str, int | None]:
        """SIGTERM the live workers; return the exit code of every worker by name."""
        for name in list(self.workers):
            self.retire(name, signal.SIGTERM)
        return {p.name: p.wait(timeout_s) for p in self.retired}

    def stop_engine(self, timeout_s: float = 60.0) -> dict[str, int | None]:
        """SIGTERM the engine; return the exit code of every engine process by name."""
        if self.engine is not None and self.engine.popen.poll() is None:
            self.engine.signal(signal.SIGTERM)
        return {p.name: p.wait(timeout_s) for p in self.engines}

    def close(self) -> None:
        """Kill whatever is still running (after a failure) and stop the servers."""
        for proc in [*self.workers.values(), *self.retired, *self.engines]:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait()
        self.pg.stop()
        if self.cluster is not None:
            self.cluster.stop()
        else:
            self.nats.stop()
