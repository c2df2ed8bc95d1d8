"""Partitioned dispatch (issue 16): the hot path's one-step drain on one tenant, with E
engine processes and the tenant's dispatch in P partitions, configurations interleaved.

    .venv/bin/python -m bench.partitions --configs 1x1,2x2 --pairs 3 --runs 20000 \\
        [--workers 2] [--profile 2x2] [--out-dir bench/issue16-partitions-2026-12-07]

A configuration ``ExP`` is E ``natchet engine`` processes (each with its projector
process) and ``NATCHET_DISPATCH_PARTITIONS=P``; each drain runs on a fresh stack
(``bench.natchet_side``) once the tenant's units have spread over the engines
(``bench.hot_leases``). Round ``i`` runs every configuration, in an order rotated by
``i``; the ratio of each configuration to the first is taken within a round.
``--profile ExP,...`` adds one more drain of each, not counted in the table,
with ``py-spy record --idle`` on the engine holding partition ``--profile-partition``.

Prints a Markdown table (runs/s, CPU ms per run by process, load averages); writes
``partitions.json`` (every result) and, with ``--profile``, the raw profile and its
summary (``bench.profile_summary``) into ``--out-dir``. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

from bench.hot_options import Options
from bench.hot_procs import REPO, BenchError
from bench.hot_stats import median, ratio
from bench.natchet_side import NatchetSide
from bench.natchet_stack import TENANT, NatchetStack
from bench.profile_summary import summary
from natchet.dev.embedded import EmbeddedPostgres

Config = tuple[int, int]  # (engines, partitions)


def config_of(text: str) -> Config:
    engines, _, partitions = text.partition("x")
    return int(engines), int(partitions)


def label(c: Config) -> str:
    return f"{c[0]}x{c[1]}"


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Profiler:
    """``py-spy record`` on the engine holding one partition of the stack it is given."""

    def __init__(self, out: Path, partition: int, seconds: float, rate: int, idle: bool) -> None:
        self.out, self.partition, self.seconds, self.rate = out, partition, seconds, rate
        self.idle = idle
        self.proc: subprocess.Popen[bytes] | None = None
        self.target = ""

    def __call__(self, stack: NatchetStack) -> None:
        whole = stack.partitions == 1
        key = f"dispatch.{TENANT}" + ("" if whole else f".{self.partition}")
        self.target = stack.units.get(key, "")
        pid = next((e.pid for e in stack.engines if e.name == self.target), None)
        if pid is None:
            raise BenchError(f"no engine holds {key}: {stack.units}")
        exe = Path(sys.executable).with_name("py-spy")
        args = [str(exe), "record", "--pid", str(pid), "--rate", str(self.rate)]
        args += ["--idle"] if self.idle else []
        args += ["--duration", str(int(self.seconds)), "--format", "raw", "-o", str(self.out)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # attached before the drain begins

    def wait(self) -> str:
        assert self.proc is not None
        _, err = self.proc.communicate(timeout=self.seconds + 60)
        return err.decode(errors="replace")


def _drain(
    root: Path, pg: EmbeddedPostgres, opts: Options, c: Config, name: str, on_up: Any = None
) -> dict[str, Any]:
    conf = attrs.evolve(opts, engines=c[0], partitions=c[1])
    side = NatchetSide(root / label(c), pg, conf, on_up)
    load_before = loadavg()
    r = side.throughput(name, opts.compare_workers)
    return r | {"config": label(c), "loadavg": [load_before, loadavg()]}


def cpu_columns(r: dict[str, Any]) -> dict[str, float]:
    """CPU ms per run: the engine processes (their dispatchers), their projector
    processes, nats-server, Postgres, the workers, the harness."""
    n = max(1, r["succeeded"])
    alone = r["cpu_s_by_process"]
    dispatch = sum(v for k, v in alone.items() if "projector" not in k)
    project = sum(v for k, v in alone.items() if "projector" in k)
    used = r["cpu_s"]
    out = {"engines": dispatch, "projectors": project, "nats": used["nats"]}
    out |= {"postgres": used["postgres"], "workers": used["workers"], "harness": used["harness"]}
    return {k: round(v * 1000 / n, 3) for k, v in out.items()}


def _per_engine(r: dict[str, Any]) -> str:
    n = max(1, r["succeeded"])
    return ", ".join(f"{k} {v * 1000 / n:.3f}" for k, v in r["cpu_s_by_process"].items())


def _to_base(r: dict[str, Any], results: list[dict[str, Any]], base: str) -> float | None:
    """``r``'s runs/s over its round's ``base`` configuration's."""
    first = next(x for x in results if x["round"] == r["round"] and x["config"] == base)
    return ratio(r["runs_per_s"], first["runs_per_s"])


def table(results: list[dict[str, Any]], configs: list[Config]) -> str:
    base = label(configs[0])
    head = (
        f"| round | config | runs/s (Postgres) | worker starts/s | / {base} | CPU ms/run: engines"
    )
    head += " (dispatch) / projectors / nats / postgres / workers / harness | per process"
    head += " | other cores | load avg before -> after | units |"
    lines = [head, "|" + "---|" * 10]
    for r in results:
        rel = "" if r["config"] == base else f"x{_to_base(r, results, base)}"
        cpu = " / ".join(f"{v:.3f}" for v in cpu_columns(r).values())
        units = ", ".join(f"{k}: {v}" for k, v in r.get("units", {}).items())
        lines.append(
            f"| {r['round']} | {r['config']} | {r['runs_per_s']:,}"
            f"{' (capped)' if r['capped'] else ''} | {r['steps'].get('drain_per_s')} | {rel} | "
            f"{cpu} | {_per_engine(r)} | {r['machine']['other_cores']} | "
            f"{r['loadavg'][0]} -> {r['loadavg'][1]} | {units} |"
        )
    lines += ["", f"| config | median runs/s | median ratio to {base} |", "|---|---|---|"]
    for c in configs:
        mine = [r for r in results if r["config"] == label(c)]
        rate = median([r["runs_per_s"] for r in mine])
        lines.append(
            f"| {label(c)} | {rate} | {median([_to_base(r, results, base) for r in mine])} |"
        )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="1x1,2x2", help="ExP, comma-separated (%(default)s)")
    p.add_argument("--pairs", type=int, default=3, help="rounds of every configuration")
    p.add_argument("--runs", type=int, default=20000, help="one-step runs per drain")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--max-runs", type=int, default=Options().max_runs)
    p.add_argument("--cap-s", type=float, default=180.0, help="a drain's time limit")
    p.add_argument("--profile", help="ExP,...: one more drain each, py-spy on one engine")
    p.add_argument("--profile-partition", type=int, default=1, help="whose engine")
    p.add_argument("--profile-s", type=float, default=15.0)
    p.add_argument("--profile-rate", type=int, default=100, help="samples/s")
    p.add_argument("--profile-busy", action="store_true", help="py-spy without --idle")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench" / "partitions-out")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    return p


def main() -> None:
    args = _parser().parse_args()
    configs = [config_of(c) for c in args.configs.split(",") if c]
    opts = Options(
        runs=args.runs, cap_s=args.cap_s, compare_workers=args.workers, max_runs=args.max_runs
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="natchet-partitions-"))
    print(f"scratch: {root}", file=sys.stderr)
    pg = EmbeddedPostgres(root / "pg")
    results: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    began = time.monotonic()
    try:
        pg.start()
        for rnd in range(args.pairs):
            for c in configs[rnd % len(configs) :] + configs[: rnd % len(configs)]:
                r = _drain(root, pg, opts, c, f"r{rnd}-{label(c)}") | {"round": rnd}
                print(
                    f"[round {rnd} {label(c)}] {r['runs_per_s']}/s, capped {r['capped']}, "
                    f"load {r['loadavg']}, units {r.get('units', {})}",
                    file=sys.stderr,
                    flush=True,
                )
                results.append(r)
        for c in [config_of(p) for p in (args.profile or "").split(",") if p]:
            part = args.profile_partition if c[1] > 1 else 0
            raw = args.out_dir / f"profile-{label(c)}-p{part}.txt"
            prof = Profiler(raw, part, args.profile_s, args.profile_rate, not args.profile_busy)
            r = _drain(root, pg, opts, c, f"profile-{label(c)}", prof)
            profiles[label(c)] = r | {"target": prof.target, "py_spy": prof.wait()[-2000:]}
            print(f"[profile {label(c)}] {r['runs_per_s']}/s on {prof.target}", file=sys.stderr)
            ms = r["cpu_s_by_process"][prof.target] * 1000 / max(1, r["succeeded"])
            raw.with_suffix(".summary.txt").write_text(summary(raw, 30, "dispatcher", ms))
    finally:
        pg.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(root)], check=False)
    out = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.partitions", *sys.argv[1:]]),
        "wall_s": round(time.monotonic() - began, 1),
        "options": attrs.asdict(opts),
        "results": results,
        "profiles": profiles,
    }
    (args.out_dir / "partitions.json").write_text(json.dumps(out, indent=1) + "\n")
    text = table(results, configs)
    (args.out_dir / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
