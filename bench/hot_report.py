"""The hot-path bench's summary: medians over repeats, natchet/peer ratios per repeat
(their median), the issue 9 targets checked, and the table printed as Markdown."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.hot_stats import median, ratio

Result = dict[str, Any]


def _pick(results: Iterable[Result], **match: Any) -> list[Result]:
    return [r for r in results if all(r.get(k) == v for k, v in match.items())]


def _drain_rate(r: Result) -> float | None:
    """natchet: runs SUCCEEDED in Postgres per second; a peer: tasks started per second."""
    if r["system"] == "natchet":
        return r.get("runs_per_s")
    return r["steps"].get("drain_per_s")


def _lat(r: Result, key: str) -> float | None:
    return r["latency"].get(f"{key}_ms")


def summarize(
    results: list[Result],
    systems: list[str],
    rates: list[float],
    compare_workers: int,
    repeats: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {"throughput": {}, "latency": {}, "ratios": {}, "projection_lag": {}}
    # throughput, medians over repeats
    for r in results:
        if r.get("kind") not in ("noop", "diamond"):
            continue
        key = f"{r['system']}/{r['kind']}/w{r['workers']}"
        out["throughput"].setdefault(key, []).append(r)
    out["throughput"] = {
        key: {
            "repeats": [_drain_rate(r) for r in rs],
            "median_per_s": median([_drain_rate(r) for r in rs]),
            "median_worker_start_rate_per_s": median(
                [r["steps"].get("start_rate_per_s") for r in rs]
            ),
            "median_worker_drain_per_s": median([r["steps"].get("drain_per_s") for r in rs]),
            "capped": any(r.get("capped") for r in rs),
            "max_other_cores": _other(rs),
            "median_cpu_ms_per_run": _median_cpu(rs),
        }
        for key, rs in out["throughput"].items()
    }
    for system in systems:
        for rate in rates:
            rs = _pick(results, system=system, rate_per_s=rate)
            if not rs:
                continue
            out["latency"][f"{system}/{rate:g}"] = {
                **{
                    f"median_{k}_ms": median([_lat(r, k) for r in rs])
                    for k in ("p50", "p95", "p99", "max")
                },
                "censored": any(r["latency"]["not_started"] for r in rs),
                "not_started": [r["latency"]["not_started"] for r in rs],
                "started": [r["latency"]["started"] for r in rs],
                "published": [r["latency"]["published"] for r in rs],
                "backlog_grows": [r["backlog"]["grows"] for r in rs],
                "backlog_slope_per_s": [r["backlog"]["backlog_slope_per_s"] for r in rs],
                "publish_rate_achieved": median([r["publish_rate_achieved"] for r in rs]),
                "median_cpu_ms_per_run": _median_cpu(rs),
                "max_other_cores": _other(rs),
            }
    # projection lag (natchet)
    for r in results:
        if r["system"] != "natchet" or "projection_lag" not in r:
            continue
        where = (
            f"latency {r['rate_per_s']:g}/s"
            if "rate_per_s" in r
            else f"{r['kind']} w{r['workers']}"
        )
        out["projection_lag"].setdefault(where, []).append(r["projection_lag"])
    out["projection_lag"] = {
        k: {
            "median_p50_ms": median([v["p50_ms"] for v in vs]),
            "median_p99_ms": median([v["p99_ms"] for v in vs]),
            "max_ms": max((v["max_ms"] or 0) for v in vs),
        }
        for k, vs in out["projection_lag"].items()
    }
    # ratios natchet/peer, per repeat then median
    for peer in (s for s in systems if s != "natchet"):
        per: dict[str, list[float | None]] = {}
        for rep in range(repeats):
            nat = _pick(results, system="natchet", kind="noop", workers=compare_workers, repeat=rep)
            oth = _pick(results, system=peer, kind="noop", workers=compare_workers, repeat=rep)
            if nat and oth:
                per.setdefault("drain (natchet in Postgres / peer started)", []).append(
                    ratio(_drain_rate(nat[0]), _drain_rate(oth[0]))
                )
                per.setdefault("drain (worker side: started / started)", []).append(
                    ratio(nat[0]["steps"].get("drain_per_s"), oth[0]["steps"].get("drain_per_s"))
                )
            for rate in rates:
                nat = _pick(results, system="natchet", rate_per_s=rate, repeat=rep)
                oth = _pick(results, system=peer, rate_per_s=rate, repeat=rep)
                if nat and oth:
                    for k in ("p50", "p99"):
                        per.setdefault(f"latency {k} at {rate:g}/s", []).append(
                            ratio(_lat(nat[0], k), _lat(oth[0], k))
                        )
        out["ratios"][peer] = {k: {"repeats": v, "median": median(v)} for k, v in per.items()}
    out["targets"] = _targets(out, compare_workers)
    return out


def _other(rs: list[Result]) -> float | None:
    """The most CPU (in cores) that processes outside the bench took while one measured."""
    values = [r["machine"]["other_cores"] for r in rs if "machine" in r]
    return max(values) if values else None


def _median_cpu(rs: list[Result]) -> dict[str, float | None]:
    names = sorted({k for r in rs for k in r.get("cpu_ms_per_run", {})})
    return {k: median([r.get("cpu_ms_per_run", {}).get(k) for r in rs]) for k in names}


def _targets(s: dict[str, Any], w: int) -> list[dict[str, Any]]:
    """Issue 9's "must" targets, against the medians."""
    t: list[dict[str, Any]] = []
    nat = s["throughput"].get(f"natchet/noop/w{w}", {}).get("median_per_s")
    cel = s["throughput"].get(f"celery/noop/w{w}", {}).get("median_per_s")
    if nat is not None and cel is not None:
        t.append(
            {
                "target": f"one-step drain >= Celery's ({w} worker processes)",
                "measured": f"{nat:g}/s vs {cel:g}/s",
                "met": nat >= cel,
            }
        )
    lat_n, lat_c = s["latency"].get("natchet/100"), s["latency"].get("celery/100")
    if lat_n and lat_c:
        p50, c50 = lat_n["median_p50_ms"], lat_c["median_p50_ms"]
        met = p50 is not None and c50 is not None and p50 <= 1.5 * c50
        t.append(
            {
                "target": "event->start p50 <= Celery's x1.5 at 100/s",
                "measured": f"{_ms(p50)} vs {_ms(c50)} (x1.5 = {_ms(c50 and 1.5 * c50)})",
                "met": met,
            }
        )
    if lat_n:
        p99 = lat_n["median_p99_ms"]
        t.append(
            {
                "target": "event->start p99 <= 20 ms at 100/s",
                "measured": _ms(p99),
                "met": p99 is not None and p99 <= 20,
            }
        )
    lat_k = s["latency"].get("natchet/1000")
    if lat_k:
        grows = sum(lat_k["backlog_grows"])
        t.append(
            {
                "target": "no growing backlog at 1,000 events/s",
                "measured": f"grows in {grows} of {len(lat_k['backlog_grows'])} repeats "
                f"(slope {lat_k['backlog_slope_per_s']} events/s)",
                "met": grows == 0,
            }
        )
    lag = s["projection_lag"].get("latency 1000/s")
    if lag:
        p99 = lag["median_p99_ms"]
        t.append(
            {
                "target": "projection lag p99 <= 1 s (at 1,000 events/s)",
                "measured": _ms(p99),
                "met": p99 is not None and p99 <= 1000,
            }
        )
    return t


def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def _ms(v: float | None, none: str = "not started") -> str:
    if v is None:
        return none
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.2f} ms"


def markdown(s: dict[str, Any]) -> str:
    """The summary as Markdown tables (what docs/benchmarks.md shows)."""
    lines = [
        "| throughput | per second (median) | repeats | worker start rate/s | capped |",
        "|---|---|---|---|---|",
    ]
    for key, v in s["throughput"].items():
        reps = ", ".join(f"{x:g}" for x in v["repeats"] if x is not None)
        lines.append(
            f"| {key} | {v['median_per_s']:g} | {reps} | "
            f"{v['median_worker_start_rate_per_s'] or 0:g} | {'yes' if v['capped'] else 'no'} |"
        )
    lines += [
        "",
        "| created -> start | p50 | p95 | p99 | max | started / published | backlog grows |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, v in s["latency"].items():
        cells = [_ms(v[f"median_{k}_ms"]) for k in ("p50", "p95", "p99", "max")]
        flags = v["backlog_grows"]
        grows = f"{sum(flags)}/{len(flags)} (slope {v['backlog_slope_per_s']}/s)"
        started = f"{_span(v['started'])} / {_span(v['published'])}"
        lines.append(f"| {key}/s | {' | '.join(cells)} | {started} | {grows} |")
    lines += _cpu_table(s)
    if s["projection_lag"]:
        lines += ["", "| projection lag (natchet) | p50 | p99 | max |", "|---|---|---|---|"]
        for key, v in s["projection_lag"].items():
            cells = [_ms(v[k], "-") for k in ("median_p50_ms", "median_p99_ms", "max_ms")]
            lines.append(f"| {key} | {' | '.join(cells)} |")
    for peer, ratios in s["ratios"].items():
        lines += ["", f"| natchet / {peer} | median | repeats |", "|---|---|---|"]
        for key, v in ratios.items():
            reps = ", ".join("-" if x is None else f"{x:g}" for x in v["repeats"])
            med = "-" if v["median"] is None else f"{v['median']:g}"
            lines.append(f"| {key} | {med} | {reps} |")
    if s["targets"]:
        lines += ["", "| issue 9 target | measured (medians) | met |", "|---|---|---|"]
        for t in s["targets"]:
            lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines)


CPU_GROUPS = ("nats", "engine", "workers", "postgres", "redis", "harness")


def _cpu_table(s: dict[str, Any]) -> list[str]:
    """CPU ms per run (or per task) by process group, medians; and the most CPU other
    programs took while the scenario measured (noise)."""
    rows = {**s["throughput"], **{f"{k}/s": v for k, v in s["latency"].items()}}
    head = " | ".join(CPU_GROUPS)
    lines = ["", f"| CPU ms per run started | {head} | other programs (cores, max) |"]
    lines.append("|---" * (len(CPU_GROUPS) + 2) + "|")
    for key, v in rows.items():
        cpu = v["median_cpu_ms_per_run"]
        cells = ["-" if cpu.get(g) is None else f"{cpu[g]:.2f}" for g in CPU_GROUPS]
        other = "-" if v.get("max_other_cores") is None else f"{v['max_other_cores']:g}"
        lines.append(f"| {key} | {' | '.join(cells)} | {other} |")
    return lines
