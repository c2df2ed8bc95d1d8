"""A short text summary of a py-spy profile (``py-spy record -f raw``: collapsed stacks, one
``frame;frame;... count`` a line): where the samples fall by stage of a rebuild (or, with
``--stages dispatcher``, of a dispatcher's loop), and the functions with the most samples,
inclusive and self.

    .venv/bin/python -m bench.profile_summary PROFILE.txt [--top 25] [--stages dispatcher]
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

# A sample's stage: the first of these whose marker one of its frames holds (py-spy frames
# read "function (file:line)"): planning and folding run inside apply_records, psycopg
# inside the store's load and write.
STAGES = (
    ("plan: decode + checks", ("plan (projector/plan.py", "projector/fastplan.py")),
    ("fold (in memory)", ("projector/fold.py",)),
    ("Postgres: load rows", ("load (projector/store.py",)),
    ("Postgres: write rows", ("write (projector/store.py", "statements (projector/store.py")),
    ("Postgres: transaction, lock", ("apply_records (projector/apply.py",)),
    (
        "read: JetStream",
        ("eventstore/tail.py", "eventstore/batches.py", "eventstore/records.py", "nats/"),
    ),
    ("psycopg (other)", ("psycopg/",)),
)
# A dispatcher's (``dispatcher/service.py``), for partitions (issue 16): what it pays per
# message of the log whoever decides it (read, parse, tell its subject, ack, the socket),
# per run it owns (create, decide, append), and per run of another partition (fold).
DISPATCHER_STAGES = (
    ("others' runs: fold a message another partition decided", ("_fold_stored (dispatcher/",)),
    ("own runs: create (event -> created + task)", ("create (dispatcher/decide.py",)),
    ("every event: match routes, mint the run id", ("_on_event (dispatcher/decide.py",)),
    ("own runs: decide on a result", ("_on_result (dispatcher/decide.py",)),
    ("own runs: gate and fold own decisions", ("gate (dispatcher/holds.py", "admit (disp")),
    ("every input decided (events too): settle's bookkeeping", ("_settle (disp",)),
    ("own runs: decide (other)", ("decide_on (dispatcher/step.py",)),
    ("decode an input (own, or another's result)", ("Dispatcher._read (dispatcher/",)),
    ("own runs: append decisions, their pub acks", ("_store (dispatcher/", "eventstore/pipeline")),
    ("every message: fetch, parse (nats-py read loop)", ("fetch (eventstore/", "_read_loop (")),
    ("every message: ack", ("Delivery.ack (eventstore/",)),
    ("every message: which subject, metrics", ("Patterns.__contains__", "natchet/metrics.py")),
    ("socket writes (acks and appends: nats-py flusher)", ("Client._flusher (nats/",)),
    ("snapshot", ("dispatcher/snapshot.py", "dispatcher/checkpoint.py", "_checkpoint (disp")),
    ("timers, held tasks, moves (tick)", ("due (dispatcher/", "moves (dispatcher/", "Hearing")),
    ("worker gate, heartbeats, leases", ("dispatcher/gate.py", "natchet/leases.py")),
    ("nats-py (other)", ("nats/",)),
)
# A sample whose innermost frame is the event loop's own: waiting (``py-spy --idle``), or in
# uvloop's C code (its reads and callbacks run below any Python frame).
LOOP = ("Runner.run (asyncio/runners.py)", "run (uvloop/__init__.py)")
LOOP_STAGE = "event loop: waiting, or in uvloop's C code"
STAGE_SETS = {"rebuild": STAGES, "dispatcher": DISPATCHER_STAGES}
SKIP = "py_spy (bench/rebuild.py"  # the second it waits for py-spy to attach
LINE = re.compile(r":\d+\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = [LINE.sub(")", f) for f in stack.split(";")]
            if not any(f.startswith(SKIP) for f in frames):
                out.append((frames, int(count)))
    return out


def stage(frames: list[str], stages: tuple[tuple[str, tuple[str, ...]], ...] = STAGES) -> str:
    if stages is DISPATCHER_STAGES and frames[-1] in LOOP:
        return LOOP_STAGE
    for name, markers in stages:
        if any(m in frame for frame in frames for m in markers):
            return name
    return "other: event loop, idle (waiting on Postgres or NATS)"


def summary(
    path: Path, top: int = 25, stages_of: str = "rebuild", cpu_ms: float | None = None
) -> str:
    """``cpu_ms``: the process's CPU ms per unit of work (a run) over the profile, to show
    each stage's share of the samples in Python code as ms per unit."""
    samples = parse(path)
    total = sum(n for _, n in samples) or 1
    stages: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for frames, n in samples:
        stages[stage(frames, STAGE_SETS[stages_of])] += n
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    lines = [f"{total:,} samples ({path.name})", "", "by stage:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in stages.most_common()]
    if LOOP_STAGE in stages:
        busy = total - stages[LOOP_STAGE] or 1
        lines += ["", f"by stage, of the {busy:,} samples in Python code:"]
        for k, n in stages.most_common():
            if k != LOOP_STAGE:
                ms = "" if cpu_ms is None else f"  {n / busy * cpu_ms:.3f} ms/run"
                lines.append(f"  {n / busy:6.1%}{ms}  {k}")
    lines += ["", f"top {top} functions, inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", f"top {top} functions, self:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--stages", choices=sorted(STAGE_SETS), default="rebuild")
    parser.add_argument(
        "--cpu-ms", type=float, help="the process's CPU ms per run (shown per stage)"
    )
    args = parser.parse_args()
    print(summary(args.profile, args.top, args.stages, args.cpu_ms), end="")


if __name__ == "__main__":
    main()
