"""A short text summary of a py-spy profile (``py-spy record -f raw``: collapsed stacks, one
``frame;frame;... count`` a line): where the samples fall by stage of a rebuild, and the
functions with the most samples, inclusive and self.

    .venv/bin/python -m bench.profile_summary PROFILE.txt [--top 25]
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


def stage(frames: list[str]) -> str:
    for name, markers in STAGES:
        if any(m in frame for frame in frames for m in markers):
            return name
    return "other: event loop, idle (waiting on Postgres or NATS)"


def summary(path: Path, top: int = 25) -> str:
    samples = parse(path)
    total = sum(n for _, n in samples) or 1
    stages: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for frames, n in samples:
        stages[stage(frames)] += n
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    lines = [f"{total:,} samples ({path.name})", "", "by stage:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in stages.most_common()]
    lines += ["", f"top {top} functions, inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", f"top {top} functions, self:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summary(args.profile, args.top), end="")


if __name__ == "__main__":
    main()
