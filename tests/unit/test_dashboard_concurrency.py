"""The run page shows a run's concurrency key and, while the run is held for its key (QUEUED,
no step queued yet), what it waits for (rendered from a run as ``projector.get_run``
returns it)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from natchet.dashboard.dag import COLOURS, dag_svg
from natchet.dashboard.pages import templates

SPEC = {"expression": "input.user_id", "max_runs": 2, "limit_strategy": "GROUP_ROUND_ROBIN"}
HELD = "concurrency key 'u<1>' (max_runs 2, GROUP_ROUND_ROBIN)"


def page(**changes: Any) -> str:
    steps = [
        {
            "name": "email", "parents": [], "status": "PENDING", "output": None, "error": None,
            "on_failure": False, "on_success": False, "waiting_for": None, "waits": [],
            "attempts": [], "logs": [],
        }
    ]  # fmt: skip
    run = {
        "id": "r1", "status": "QUEUED", "workflow": "welcome", "workflow_version": "v1",
        "namespace": "default", "created_at": "2026-01-05T09:30:00+00:00", "finished_at": None,
        "triggered_by": None, "replay_of": None, "error": None, "input": {"user_id": "u<1>"},
        "steps": steps, "concurrency_key": "u<1>", "concurrency": SPEC, "waiting_for": HELD,
        **changes,
    }  # fmt: skip
    return templates.env.get_template("run.html").render(
        request=SimpleNamespace(url=SimpleNamespace(path="/t/acme/runs/r1")),
        who=None, tenant="acme", tenants=[], namespace="", csrf="x", csrf_field="csrf",
        colours=COLOURS, msg="", run=run, dag=dag_svg(steps), timeline=[], tracebacks={},
        ended=False, live_from=0,
    )  # fmt: skip


def test_a_held_run_shows_its_key_and_what_it_waits_for() -> None:
    html = page()
    assert (
        '<p class="concurrency">Concurrency key <code>u&lt;1&gt;</code>'
        " (max_runs 2, GROUP_ROUND_ROBIN).</p>"
    ) in html
    assert (
        '<p class="waiting">Waiting for concurrency key &#39;u&lt;1&gt;&#39;'
        " (max_runs 2, GROUP_ROUND_ROBIN)</p>"
    ) in html


def test_an_admitted_run_shows_its_key_only() -> None:
    html = page(status="RUNNING", waiting_for=None)
    assert "Concurrency key <code>u&lt;1&gt;</code>" in html and "Waiting for" not in html


def test_a_run_without_a_key_shows_neither() -> None:
    html = page(concurrency_key=None, concurrency=None, waiting_for=None)
    assert "Concurrency key" not in html and "Waiting for" not in html
