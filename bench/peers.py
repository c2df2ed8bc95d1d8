"""The peers of the hot-path bench, Celery and Dramatiq on Redis, with the same no-op
definition as natchet's (record the start, return), the same recorder and the same load:

* ``drain``: N tasks enqueued at once while the workers run; from the first enqueue to the
  last task started (the peers keep no run state, so there is nothing else to wait for);
* ``latency``: tasks at a fixed rate, enqueue (the creation time stamped in the message)
  to the task function's start, and the backlog over time.

Each side's worker processes start once per repeat and serve all of its scenarios; every
message carries its scenario's name, so nothing left over can be counted twice.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.chaos_stack import Proc
from bench.hot_options import Options
from bench.hot_procs import (
    CpuSnapshot,
    RedisServer,
    clean_env,
    cpu_report,
    spawn,
    stop,
)
from bench.hot_record import FLUSH_S, RECORD_DIR_ENV, StartReader
from bench.hot_stats import drain, latency_result

REDIS_URL_ENV = "BENCH_REDIS_URL"
WARMUP = 10

Send = Callable[[float, str, str], None]


def paced(send: Send, rate_per_s: float, duration_s: float, scenario: str) -> list[float]:
    """``rate_per_s`` messages a second for ``duration_s`` on a fixed schedule (a late tick
    sends everything due); returns their creation times."""
    published: list[float] = []
    total = round(rate_per_s * duration_s)
    start = time.monotonic()
    while len(published) < total:
        due = min(total, int((time.monotonic() - start) * rate_per_s) + 1)
        while len(published) < due:
            t = time.time()
            published.append(t)
            send(t, "n", scenario)
        time.sleep(0.0005)  # pacing: shapes the load, synchronizes nothing
    return published


def _wall(began: float) -> dict[str, float]:
    return {"measure": round(time.monotonic() - began, 1)}


class PeerSide:
    """One peer (``celery`` or ``dramatiq``): its worker processes and its client."""

    def __init__(self, name: str, root: Path, redis: RedisServer, opts: Options) -> None:
        self.name = name
        self.root = root / name
        self.redis = redis
        self.opts = opts
        self.record_dir = self.root / "records"
        self.workers: Proc | None = None
        self._send: Send | None = None
        self._starts = 0

    def _command(self, processes: int) -> list[str]:
        if self.name == "celery":
            return [
                *(sys.executable, "-m", "celery", "-A", "bench.peer_celery", "worker"),
                *("--pool", "prefork", "--concurrency", str(processes)),
                *("--loglevel", "WARNING", "--without-gossip", "--without-mingle"),
                *("--without-heartbeat", "-n", f"bench{os.getpid()}@%h"),
            ]
        return [
            *(sys.executable, "-m", "dramatiq", "bench.peer_dramatiq"),
            *("--processes", str(processes), "--threads", str(self.opts.peer_threads)),
        ]

    def _client(self) -> Send:
        os.environ[REDIS_URL_ENV] = self.redis.url  # read when the module is imported
        module = importlib.import_module(f"bench.peer_{self.name}")
        task = module.noop
        if self.name == "celery":
            return lambda t, k, s: task.apply_async(args=(t, k, s))
        return task.send  # type: ignore[no-any-return]

    def start(self, processes: int, tag: str) -> None:
        """Start the workers, and send warm-up tasks until they run some."""
        self._starts += 1
        self.record_dir.mkdir(parents=True, exist_ok=True)
        env = clean_env({REDIS_URL_ENV: self.redis.url, RECORD_DIR_ENV: str(self.record_dir)})
        name = f"{self.name}-workers-{self._starts}"
        self.workers = spawn(name, self._command(processes), self.root / "logs", env, Path.cwd())
        self._send = self._send or self._client()
        reader = StartReader(self.record_dir)
        deadline = time.monotonic() + 60
        scenario = f"{tag}-warmup"
        while reader.count(scenario, "w") < WARMUP:
            if self.workers.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} workers did not start: see {self.workers.log}")
            if reader.count(scenario, "w") == 0:
                for _ in range(WARMUP):
                    self._send(time.time(), "w", scenario)
            time.sleep(1.0)

    def stop(self) -> None:
        if self.workers is not None:
            stop([self.workers], 30)
            self.workers = None

    def _cpu(self, before: CpuSnapshot, after: CpuSnapshot, per: int) -> dict[str, Any]:
        assert self.workers is not None and self.redis.proc is not None
        roots = {"workers": [self.workers.pid], "redis": [self.redis.proc.pid]}
        return cpu_report(before, after, roots, per)

    def drain(self, scenario: str, processes: int) -> dict[str, Any]:
        began = time.monotonic()
        return self._drain(scenario, processes) | {"wall_s": _wall(began)}

    def latency(self, scenario: str, rate_per_s: float, processes: int) -> dict[str, Any]:
        began = time.monotonic()
        return self._latency(scenario, rate_per_s, processes) | {"wall_s": _wall(began)}

    def _drain(self, scenario: str, processes: int) -> dict[str, Any]:
        assert self._send is not None
        n = self.opts.peer_runs
        reader = StartReader(self.record_dir)
        before = CpuSnapshot.take()
        published = []
        for _ in range(n):
            t = time.time()
            published.append(t)
            self._send(t, "n", scenario)
        deadline = time.monotonic() + self.opts.cap_s
        while reader.count(scenario, "n") < n and time.monotonic() < deadline:
            time.sleep(0.05)
        after = CpuSnapshot.take()
        time.sleep(3 * FLUSH_S)
        starts = [s.t_start for s in reader.select(scenario, "n")]
        steps = drain(n, published[0], starts)
        return {
            "system": self.name,
            "scenario": scenario,
            "workers": processes,
            "kind": "noop",
            "runs": n,
            "capped": len(starts) < n,
            "publish_s": round(published[-1] - published[0], 3),
            "steps": steps,
        } | self._cpu(before, after, n)

    def _latency(self, scenario: str, rate_per_s: float, processes: int) -> dict[str, Any]:
        assert self._send is not None
        reader = StartReader(self.record_dir)
        before = CpuSnapshot.take()
        published = paced(self._send, rate_per_s, self.opts.duration_s, scenario)
        deadline = time.monotonic() + self.opts.drain_s
        while reader.count(scenario, "n") < len(published) and time.monotonic() < deadline:
            time.sleep(0.1)
        after = CpuSnapshot.take()
        time.sleep(3 * FLUSH_S)
        starts = reader.select(scenario, "n")
        out = latency_result(published, starts, rate_per_s, self.opts.duration_s)
        head = {"system": self.name, "scenario": scenario, "workers": processes}
        return head | {"rate_per_s": rate_per_s} | out | self._cpu(before, after, len(starts))
