"""Processes of the hot-path bench: spawning with a log, waiting for a line, stopping, a
Redis server on a free port, and the CPU time a process tree used (from ``/proc``).

Blocking code: the harness calls it between measurements, never while it measures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs

from bench.chaos_stack import Proc
from natchet.dev.embedded import free_port, stop_process, wait_for_port

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KTHREADD = 2  # the parent of every kernel thread


class BenchError(RuntimeError):
    """A process of the bench did not start, or a measurement could not be made."""


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without natchet's own settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    return env | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)} | extra


def spawn(name: str, args: list[str], logs: Path, env: dict[str, str], cwd: Path) -> Proc:
    """Start ``args`` in its own session, stdout and stderr to ``logs/<name>.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("wb") as out:  # the child keeps its own descriptor
        popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def stop(procs: list[Proc], timeout_s: float = 30.0) -> None:
    """SIGTERM each, wait for all; SIGKILL what is still there after ``timeout_s``."""
    for p in procs:
        if p.popen.poll() is None:
            p.signal(signal.SIGTERM)
    end = time.monotonic() + timeout_s
    for p in procs:
        if p.wait(max(0.1, end - time.monotonic())) is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # its own session: its children too
            p.popen.wait()


class RedisServer:
    """``redis-server`` (the machine's) on 127.0.0.1 and a free port, no persistence."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

    def start(self) -> None:
        binary = self.binary()
        if binary is None:
            raise BenchError("redis-server is not installed (apt-get install redis-server)")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.proc = spawn("redis", args, self.logs, clean_env({}), self.logs)
        wait_for_port("127.0.0.1", self.port, 15.0, self.proc.popen)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc.popen, signal.SIGTERM, wait_s=10)


# -- CPU time ---------------------------------------------------------------------------


def _proc_table() -> tuple[dict[int, int], dict[int, float]]:
    """Every process's parent and CPU seconds (user + system)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return parents, cpu


def _machine_busy_s() -> tuple[float, float]:
    """CPU seconds all cores spent busy (user, nice, system, irq, softirq), and of those
    in interrupts (irq, softirq: loopback networking, disk), which no process is charged."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[i] for i in (0, 1, 2, 5, 6)) / CLOCK_TICKS
    return busy, (fields[5] + fields[6]) / CLOCK_TICKS


@attrs.frozen
class CpuSnapshot:
    """CPU seconds of every process, to subtract from a later snapshot."""

    parents: dict[int, int]
    cpu: dict[int, float]
    busy_s: float  # the whole machine's busy CPU seconds since boot (/proc/stat)
    irq_s: float  # of which in interrupts
    at: float  # time.monotonic() when taken

    @classmethod
    def take(cls) -> CpuSnapshot:
        return cls(*_proc_table(), *_machine_busy_s(), time.monotonic())

    def tree(self, root: int) -> set[int]:
        children: dict[int, list[int]] = defaultdict(list)
        for pid, ppid in self.parents.items():
            children[ppid].append(pid)
        out, todo = set(), [root]
        while todo:
            pid = todo.pop()
            if pid in self.cpu and pid not in out:
                out.add(pid)
                todo.extend(children[pid])
        return out


def cpu_used(
    before: CpuSnapshot, after: CpuSnapshot, roots: dict[str, list[int]]
) -> dict[str, float]:
    """CPU seconds each named group of process trees used between the two snapshots
    (processes that started meanwhile count whole; ones that ended meanwhile are missed)."""
    out: dict[str, float] = {}
    for name, pids in roots.items():
        total = 0.0
        for root in pids:
            for pid in after.tree(root):
                total += after.cpu[pid] - before.cpu.get(pid, 0.0)
        out[name] = round(total, 3)
    return out


def cpu_of(before: CpuSnapshot, after: CpuSnapshot, pid: int) -> float:
    """CPU seconds of process ``pid`` alone (not its children) between the snapshots."""
    return round(after.cpu.get(pid, 0.0) - before.cpu.get(pid, 0.0), 3)


def machine_cpu(before: CpuSnapshot, after: CpuSnapshot, ours: float) -> dict[str, float]:
    """Where the machine's CPU went over the interval, in cores: all busy time; kernel
    threads (e.g. the file system journal after fsyncs) and interrupts (loopback
    networking), partly working for the bench; and other programs, which make the
    figures noisy (``other_cores``: busy - the bench's processes (``ours``) - kernel -
    interrupts)."""
    wall = max(1e-9, after.at - before.at)
    busy = after.busy_s - before.busy_s
    irq = after.irq_s - before.irq_s
    kernel = sum(after.cpu[p] - before.cpu.get(p, 0.0) for p in after.tree(KTHREADD) - {KTHREADD})
    other = max(0.0, busy - ours - kernel - irq)
    return {
        "busy_cores": round(busy / wall, 2),
        "kernel_threads_cores": round(kernel / wall, 2),
        "interrupts_cores": round(irq / wall, 2),
        "other_cores": round(other / wall, 2),
    }


def cpu_report(
    before: CpuSnapshot, after: CpuSnapshot, roots: dict[str, list[int]], per: int
) -> dict[str, Any]:
    """CPU seconds per group of process trees and per run (``per``: the runs done or
    started), the harness's own, and the machine's split (``machine_cpu``)."""
    used = cpu_used(before, after, roots) | {"harness": cpu_of(before, after, os.getpid())}
    per_ms = {k: round(v * 1000 / max(1, per), 3) for k, v in used.items()}
    machine = machine_cpu(before, after, sum(used.values()))
    return {"cpu_s": used, "cpu_ms_per_run": per_ms, "machine": machine}
