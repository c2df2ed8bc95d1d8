"""The chaos bench: each scenario runs a steady load on a fresh stack and breaks it.

    .venv/bin/python bench/chaos.py [--runs N] [--scenario NAME|all]

Prints, per scenario: runs submitted, completed, lost (must be 0), duplicated transitions
(must be 0), and the longest delay from a worker's death (or SIGTERM) to the next delivery
of a task it held. Exits 1 when any invariant fails (see bench/chaos_check.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.chaos_harness import SCENARIOS, Config, Report, run_scenario

COLUMNS = (
    ("scenario", 17),
    ("submitted", 9),
    ("completed", 9),
    ("lost", 4),
    ("dup transitions", 15),
    ("max redelivery", 14),
    ("deliveries", 10),
    ("handed back", 11),
    ("re-executed", 11),
    ("time", 6),
)


def row(r: Report) -> list[str]:
    delay = "-" if r.max_redelivery_s is None else f"{r.max_redelivery_s:.2f}s"
    return [
        r.scenario,
        str(r.submitted),
        str(r.completed),
        str(r.lost),
        str(r.duplicated),
        delay,
        str(r.attempts),
        str(r.handed_back),
        str(r.double_executions),
        f"{r.duration_s:.0f}s",
    ]


def table(reports: list[Report]) -> str:
    head = "| " + " | ".join(name.ljust(w) for name, w in COLUMNS) + " |"
    rule = "|" + "|".join("-" * (w + 2) for _, w in COLUMNS) + "|"
    lines = [head, rule]
    for r in reports:
        cells = [c.ljust(w) for c, (_, w) in zip(row(r), COLUMNS, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    config = Config(
        runs=args.runs, rate_per_s=args.rate, strikes=args.strikes, outage_s=args.outage
    )
    reports = []
    for name in names:
        print(f"== {name}: {args.runs} runs", flush=True)
        report = await run_scenario(name, config, args.keep)
        reports.append(report)
        for fault in report.faults:
            print(f"   {fault}")
        if report.killed_at is not None:
            print(
                f"   runs at the load's rate again {report.recovered_s}s after the kill "
                f"(longest pause between run starts {report.max_start_gap_s}s); the node "
                f"caught up {report.catch_up_s}s after its restart; replicas {report.replicas}"
            )
        for violation in report.violations[:20]:
            print(f"   VIOLATION {violation}")
        more = len(report.violations) - 20
        if more > 0:
            print(f"   ... and {more} more")
    print()
    print(table(reports))
    return 0 if all(r.ok for r in reports) else 1


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=300, help="runs per scenario (default 300)")
    p.add_argument("--scenario", default="all", choices=[*SCENARIOS, "all"])
    p.add_argument("--rate", type=float, default=25.0, help="runs started per second")
    p.add_argument("--strikes", type=int, default=3, help="workers stopped per worker scenario")
    p.add_argument("--outage", type=float, default=2.0, help="seconds a server stays down")
    p.add_argument("--keep", type=Path, help="keep logs and data under this directory")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    logging.basicConfig(
        level=logging.INFO if arguments.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not arguments.verbose:  # reconnect chatter of the harness's own clients
        logging.getLogger("eventstore.connection").setLevel(logging.ERROR)
    sys.exit(asyncio.run(main(arguments)))
