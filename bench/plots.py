"""The hot-path bench's plots (PNG, matplotlib, no display needed):

* ``latency.png``: the distribution of message -> start latency per system, a panel per
  rate, as a CDF on a log scale, one line per repeat (messages that never started within
  the window leave the curve short of 1);
* ``backlog.png``: messages published but not started yet, over time, a panel per rate;
* ``throughput-workers.png``: natchet's one-step runs/s (in Postgres) and worker start
  rate against worker processes, with the peers' drain at their worker count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"natchet": "tab:blue", "celery": "tab:green", "dramatiq": "tab:orange"}


def _latency(results: list[dict[str, Any]], rate: float, ax: Any) -> None:
    labelled: set[str] = set()
    for r in results:
        if r.get("rate_per_s") != rate:
            continue
        pts = r["latency_cdf_ms"]
        xs = [x for x in pts if x is not None]
        ys = [(i + 1) / len(pts) for i, x in enumerate(pts) if x is not None]
        if not xs:
            continue
        system = r["system"]
        label = None if system in labelled else system
        labelled.add(system)
        ax.plot(xs, ys, color=COLORS.get(system), lw=1.2, alpha=0.8, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("message created -> step/task started (ms, log scale)")
    ax.set_ylabel("fraction of messages published")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{rate:g} messages/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def _backlog(results: list[dict[str, Any]], rate: float, ax: Any) -> None:
    labelled: set[str] = set()
    for r in results:
        if r.get("rate_per_s") != rate:
            continue
        system = r["system"]
        label = None if system in labelled else system
        labelled.add(system)
        ts = [p[0] for p in r["backlog_series"]]
        backlog = [p[1] - p[2] for p in r["backlog_series"]]
        ax.plot(ts, backlog, color=COLORS.get(system), lw=1.2, alpha=0.8, label=label)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel("seconds since the first message")
    ax.set_ylabel("published - started")
    ax.set_title(f"{rate:g} messages/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def _panels(
    results: list[dict[str, Any]], rates: list[float], draw: Any, title: str, path: Path
) -> None:
    fig, axes = plt.subplots(1, len(rates), figsize=(6 * len(rates), 4.2), squeeze=False)
    for rate, ax in zip(rates, axes[0], strict=True):
        draw(results, rate, ax)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _throughput(results: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    nat = [r for r in results if r["system"] == "natchet" and r.get("kind") == "noop"]
    workers = sorted({r["workers"] for r in nat})

    def series(key: str) -> list[list[float]]:
        return [
            [v for r in nat if r["workers"] == w and (v := key_of(r, key)) is not None]
            for w in workers
        ]

    for key, label, marker in (
        ("runs_per_s", "natchet: runs SUCCEEDED in Postgres/s", "o"),
        ("start_rate_per_s", "natchet: steps started/s (worker side)", "s"),
    ):
        vals = series(key)
        meds = [sorted(v)[len(v) // 2] if v else 0 for v in vals]
        ax.plot(
            workers,
            meds,
            marker=marker,
            color=COLORS["natchet"],
            ls="-" if marker == "o" else "--",
            label=label,
        )
        for w, v in zip(workers, vals, strict=True):
            ax.scatter([w] * len(v), v, color=COLORS["natchet"], s=10, alpha=0.5)
    for system in ("celery", "dramatiq"):
        peer = [
            r["steps"]["drain_per_s"]
            for r in results
            if r["system"] == system and r.get("kind") == "noop"
        ]
        pw = [r["workers"] for r in results if r["system"] == system and r.get("kind") == "noop"]
        if peer:
            ax.scatter(
                pw, peer, color=COLORS[system], marker="D", s=30, label=f"{system}: tasks started/s"
            )
    ax.set_xticks(workers or [1, 2, 4])
    ax.set_xlabel("worker processes")
    ax.set_ylabel("per second")
    ax.set_yscale("log")
    ax.set_title("One-step no-op drain vs worker processes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def key_of(r: dict[str, Any], key: str) -> float | None:
    return r.get(key) if key in r else r["steps"].get(key)


def write_plots(results: list[dict[str, Any]], rates: list[float], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rates = [r for r in rates if any(x.get("rate_per_s") == r for x in results)]
    if rates:
        for name, draw, title in (
            (
                "latency.png",
                _latency,
                "Start latency: one line per repeat (short of 1: never started)",
            ),
            ("backlog.png", _backlog, "Backlog while publishing at a fixed rate, then draining"),
        ):
            _panels(results, rates, draw, title, out_dir / name)
            written.append(out_dir / name)
    if any(r.get("kind") == "noop" for r in results):
        _throughput(results, out_dir / "throughput-workers.png")
        written.append(out_dir / "throughput-workers.png")
    return written
