"""``docs/operating.md`` lists every metric the engine exposes, and the flags it names exist."""

from __future__ import annotations

import re
from pathlib import Path

from natchet.cli import build_parser
from natchet.metrics import EngineMetrics

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operating.md").read_text()


def test_every_metric_the_engine_exposes_is_documented_and_nothing_else() -> None:
    families = list(EngineMetrics().registry.collect())
    assert len(families) >= 20
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", DOC, re.M))
    exposed = {f.name + ("_total" if f.type == "counter" else "") for f in families}
    assert exposed == documented, (exposed - documented, documented - exposed)


def test_the_flags_the_page_shows_parse() -> None:
    for line in re.findall(r"^natchet (engine [^#\n]*?)\s*(?:#.*)?$", DOC, re.M):
        build_parser().parse_args(line.split())
