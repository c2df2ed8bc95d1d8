"""What a benchmark worker records, and how the harness reads it back.

Every worker process of the hot-path bench (natchet's, Celery's, Dramatiq's) calls
:func:`record` as the first thing its step or task does, with the creation time the
publisher stamped in the message. A line per start goes to ``$BENCH_RECORD_DIR/<pid>.rec``::

    <scenario> <kind> <t_event> <t_start>

(wall-clock seconds, ``time.time()``: every process is on the same machine and clock).
Lines are buffered in memory and written by a daemon thread every 0.1 s, so a step pays a
list append, not a write. The recorder is made on first use in each process, which is what
forked workers (Celery prefork, Dramatiq's processes) need: it belongs to the child's pid.
The harness reads complete lines only; it reads while the workers still run (after a
flush interval), so nothing it counts is lost when they stop.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import attrs

RECORD_DIR_ENV = "BENCH_RECORD_DIR"
FLUSH_S = 0.1


class _Recorder:
    def __init__(self, directory: Path) -> None:
        self.pid = os.getpid()
        self.path = directory / f"{self.pid}.rec"
        self.lines: list[str] = []
        self.lock = threading.Lock()
        thread = threading.Thread(target=self._flush_forever, name="bench-recorder", daemon=True)
        thread.start()

    def add(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def _flush_forever(self) -> None:
        with self.path.open("a", encoding="ascii") as out:
            while True:
                time.sleep(FLUSH_S)
                with self.lock:
                    lines, self.lines = self.lines, []
                if lines:
                    out.write("".join(lines))
                    out.flush()


_recorders: dict[int, _Recorder] = {}  # by pid: a forked child makes its own
_make_lock = threading.Lock()


def record(scenario: str, kind: str, t_event: float) -> None:
    """Note that a step or task of ``scenario`` began now; its message was created at
    ``t_event``. Call it first thing in the step."""
    t_start = time.time()
    rec = _recorders.get(os.getpid())
    if rec is None:
        with _make_lock:
            rec = _recorders.get(os.getpid())
            if rec is None:
                rec = _recorders[os.getpid()] = _Recorder(Path(os.environ[RECORD_DIR_ENV]))
    rec.add(f"{scenario} {kind} {t_event!r} {t_start!r}\n")


@attrs.frozen
class Start:
    """One step or task start, as recorded by a worker."""

    scenario: str
    kind: str
    t_event: float
    t_start: float

    @property
    def latency_s(self) -> float:
        return self.t_start - self.t_event


class StartReader:
    """Reads the starts recorded in a directory incrementally: each :meth:`poll` parses
    only what the workers wrote since the last one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.starts: list[Start] = []
        self._counts: Counter[tuple[str, str]] = Counter()
        self._offsets: dict[Path, int] = {}

    def poll(self) -> list[Start]:
        """Everything recorded so far (new lines appended to :attr:`starts`)."""
        for path in sorted(self.directory.glob("*.rec")):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # complete lines only
            for line in chunk[:end].decode("ascii", errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 4:
                    self.starts.append(Start(parts[0], parts[1], float(parts[2]), float(parts[3])))
                    self._counts[parts[0], parts[1]] += 1
            self._offsets[path] = offset + end
        return self.starts

    def count(self, scenario: str, kind: str) -> int:
        self.poll()
        return self._counts[scenario, kind]

    def select(self, scenario: str, kind: str) -> list[Start]:
        """The starts of ``scenario`` and ``kind``, in start order."""
        out = [s for s in self.poll() if s.scenario == scenario and s.kind == kind]
        out.sort(key=lambda s: s.t_start)
        return out
