"""The DAG layout is a pure function: columns by longest path, one box a step, coloured
and labelled by status, edges parent to child, names escaped."""

from __future__ import annotations

import re

from natchet.dashboard.dag import COLOURS, dag_svg


def boxes(svg: str) -> dict[str, tuple[int, int, str]]:
    found = re.findall(
        r'data-step="([^"]+)" data-status="[^"]+"><title>[^<]*</title><rect x="(\d+)" y="(\d+)"'
        r' width="\d+" height="\d+" rx="6" fill="([^"]+)"',
        svg,
    )
    return {name: (int(x), int(y), fill) for name, x, y, fill in found}


def test_a_diamond_lays_out_in_three_columns() -> None:
    steps = [
        {"name": "start", "parents": [], "status": "SUCCEEDED"},
        {"name": "left", "parents": ["start"], "status": "FAILED"},
        {"name": "right", "parents": ["start"], "status": "RUNNING"},
        {"name": "join", "parents": ["left", "right"], "status": None},
    ]
    svg = dag_svg(steps)
    b = boxes(svg)
    assert b["start"][0] < b["left"][0] == b["right"][0] < b["join"][0]
    assert b["left"][1] != b["right"][1]
    assert b["start"][2] == COLOURS["SUCCEEDED"] and b["left"][2] == COLOURS["FAILED"]
    assert 'data-step="join" data-status="PENDING"' in svg
    assert svg.count("<line ") == 4


def test_names_are_escaped_and_cycles_do_not_hang() -> None:
    svg = dag_svg([{"name": "<a>", "parents": ["<a>"], "status": "QUEUED"}])
    assert "<a>" not in svg.replace('<a>"', "") and "&lt;a&gt;" in svg
    assert dag_svg([]).startswith("<svg")
