"""Pure figures of the hot-path bench: percentiles, latency with a censored tail, the
backlog over time and whether it grows, drain rates, medians and ratios."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Protocol

INF = math.inf


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; ``inf`` where the sample is censored."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(latencies_s: Sequence[float], published: int) -> dict[str, Any]:
    """p50/p95/p99/max in ms over every message published: one that never started within
    the window counts as infinitely late (shown as ``null``, and counted in
    ``not_started``), so a backlog cannot make the percentiles look better."""
    values = sorted(latencies_s) + [INF] * max(0, published - len(latencies_s))
    out: dict[str, Any] = {"published": published, "started": len(latencies_s)}
    out["not_started"] = published - len(latencies_s)
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        v = percentile(values, q)
        out[f"{name}_ms"] = None if math.isinf(v) or math.isnan(v) else round(v * 1000, 3)
    return out


def backlog_series(
    published_at: Sequence[float], started_at: Sequence[float], t0: float, end: float, step_s: float
) -> list[tuple[float, int, int]]:
    """``(t - t0, published so far, started so far)`` every ``step_s`` from ``t0`` to ``end``."""
    pub, sta = sorted(published_at), sorted(started_at)
    out: list[tuple[float, int, int]] = []
    i = j = 0
    t = t0
    while t <= end + 1e-9:
        while i < len(pub) and pub[i] <= t:
            i += 1
        while j < len(sta) and sta[j] <= t:
            j += 1
        out.append((round(t - t0, 3), i, j))
        t += step_s
    return out


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points (0 with fewer than two)."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def backlog_verdict(
    series: Sequence[tuple[float, int, int]], publish_s: float, rate_per_s: float
) -> dict[str, Any]:
    """Whether the backlog (published - started) grows while publishing. It does if, over
    the second half of the publishing window, its slope is over 2% of the publish rate
    (the workers start fewer than ~98% of what arrives) and, when publishing stops, it
    holds more than half a second of messages (so jitter of a system that keeps up, a
    backlog that comes and goes, is not called growth)."""
    half = [(t, p - s) for t, p, s in series if publish_s / 2 <= t <= publish_s]
    growth = slope(half)
    at_end = next((p - s for t, p, s in reversed(series) if t <= publish_s), 0)
    grows = growth > max(2.0, 0.02 * rate_per_s) and at_end > 0.5 * rate_per_s
    return {"backlog_slope_per_s": round(growth, 1), "backlog_at_end": at_end, "grows": grows}


def drain(n: int, t_first_publish: float, starts: Sequence[float]) -> dict[str, Any]:
    """Worker-side figures of a drain: ``n`` messages published from ``t_first_publish``,
    ``starts`` the times they started (fewer if the window closed first)."""
    if not starts:
        return {"started": 0, "drain_per_s": 0.0, "start_rate_per_s": 0.0}
    first, last = min(starts), max(starts)
    span = last - first
    return {
        "started": len(starts),
        "to_last_start_s": round(last - t_first_publish, 3),
        # started / time from the first publish to the last start
        "drain_per_s": round(len(starts) / max(1e-9, last - t_first_publish), 1),
        # starts / time from the first start to the last: the workers' own pace
        "start_rate_per_s": round((len(starts) - 1) / span, 1) if span > 0 else None,
    }


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ms_summary(values_s: Sequence[float]) -> dict[str, Any]:
    """count, p50, p99 and max in ms."""
    v = sorted(values_s)
    out: dict[str, Any] = {"count": len(v)}
    for name, q in (("p50", 0.50), ("p99", 0.99), ("max", 1.0)):
        x = percentile(v, q)
        out[f"{name}_ms"] = None if math.isnan(x) else round(x * 1000, 3)
    return out


def cdf_points(latencies_s: Sequence[float], published: int, points: int = 200) -> list[Any]:
    """The latency (ms) at ``points`` evenly spaced quantiles over every message published
    (``null`` past what started): enough to draw the distribution, small enough to keep."""
    values = sorted(latencies_s) + [INF] * max(0, published - len(latencies_s))
    out: list[Any] = []
    for k in range(1, points + 1):
        v = percentile(values, k / points)
        out.append(None if math.isinf(v) or math.isnan(v) else round(v * 1000, 3))
    return out


class _Started(Protocol):
    @property
    def t_start(self) -> float: ...

    @property
    def latency_s(self) -> float: ...


def latency_result(
    published: Sequence[float], starts: Sequence[_Started], rate_per_s: float, publish_s: float
) -> dict[str, Any]:
    """What every system's latency scenario reports: publish times and the starts the
    workers recorded -> latency percentiles, its distribution, the backlog over time."""
    t0 = published[0]
    end = max([published[-1], *(s.t_start for s in starts)])
    series = backlog_series(published, [s.t_start for s in starts], t0, end, 0.5)
    latencies = [s.latency_s for s in starts]
    return {
        "publish_rate_achieved": round(len(published) / max(1e-9, published[-1] - t0), 1),
        "latency": latency_summary(latencies, len(published)),
        "latency_cdf_ms": cdf_points(latencies, len(published)),
        "backlog": backlog_verdict(series, publish_s, rate_per_s),
        "backlog_series": series,
    }
