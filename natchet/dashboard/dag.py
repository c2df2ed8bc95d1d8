"""A run's steps laid out as an SVG: a pure function of the steps (name, parents, status).

Each step sits in the column of its longest path from a root, one row per step of that
column; an edge runs from each parent to its child. Colours say the status (and the status
is also written, for whoever cannot tell the colours apart)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

COLOURS = {
    "SUCCEEDED": "#1a7f37",
    "FAILED": "#cf222e",
    "CANCELLED": "#6e7781",
    "TIMED_OUT": "#bc4c00",
    "RUNNING": "#0969da",
    "QUEUED": "#8250df",
    "RETRYING": "#9a6700",
    "WAITING": "#1b7c83",  # a durable step waiting for a sleep or an event
}
PENDING = "#57606a"
W, H, GAP_X, GAP_Y, PAD = 160, 48, 60, 24, 12


def _depths(steps: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    parents = {s["name"]: [p for p in (s.get("parents") or [])] for s in steps}
    depth: dict[str, int] = {}

    def of(name: str, seen: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        if name in seen:  # a cycle the engine would refuse: draw it flat
            return 0
        ps = [p for p in parents.get(name, []) if p in parents]
        d = 0 if not ps else 1 + max(of(p, seen | {name}) for p in ps)
        depth[name] = d
        return d

    for name in parents:
        of(name, frozenset())
    return depth


def dag_svg(steps: Sequence[Mapping[str, Any]]) -> str:
    """The SVG (as text) of ``steps``: dicts with ``name``, ``parents`` and ``status``."""
    if not steps:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="0" height="0" role="img"></svg>'
    depth = _depths(steps)
    columns: dict[int, list[str]] = {}
    for s in steps:
        columns.setdefault(depth[s["name"]], []).append(s["name"])
    at: dict[str, tuple[int, int]] = {}
    for d, names in columns.items():
        for row, name in enumerate(names):
            at[name] = (PAD + d * (W + GAP_X), PAD + row * (H + GAP_Y))
    width = PAD * 2 + (max(columns) + 1) * (W + GAP_X) - GAP_X
    height = PAD * 2 + max(len(n) for n in columns.values()) * (H + GAP_Y) - GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="the run\'s steps">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6"'
        ' markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#57606a"/></marker>'
        "</defs>",
    ]
    for s in steps:
        x, y = at[s["name"]]
        for p in s.get("parents") or []:
            if p in at:
                px, py = at[p]
                parts.append(
                    f'<line x1="{px + W}" y1="{py + H // 2}" x2="{x}" y2="{y + H // 2}"'
                    ' stroke="#57606a" stroke-width="1.5" marker-end="url(#arrow)"/>'
                )
    for s in steps:
        x, y = at[s["name"]]
        status = s.get("status") or "PENDING"
        colour = COLOURS.get(status, PENDING)
        name = escape(str(s["name"]))
        parts.append(
            f'<g class="step" data-step="{name}" data-status="{escape(status)}">'
            f"<title>{name}: {escape(status)}</title>"
            f'<rect x="{x}" y="{y}" width="{W}" height="{H}" rx="6" fill="{colour}"/>'
            f'<text x="{x + 10}" y="{y + 20}" fill="#fff" font-size="13"'
            f' font-weight="600">{name[:20]}</text>'
            f'<text x="{x + 10}" y="{y + 38}" fill="#fff" font-size="11">{escape(status)}</text>'
            "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)
