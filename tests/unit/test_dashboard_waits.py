"""The run page shows a durable step that waits: its WAITING status (in the DAG too), what
it waits for, and its waits, each with what woke it (rendered from a run as
``projector.get_run`` returns it)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from natchet.dashboard.dag import COLOURS, dag_svg
from natchet.dashboard.pages import templates

WAITS = [
    {
        "attempt": 1, "index": 0, "delivery": 1,
        "waiting_for": "sleep until 2026-01-06T09:30:05+00:00",
        "conditions": [{"kind": "sleep", "until": "2026-01-06T09:30:05+00:00"}], "worker_id": "w1",
        "worker_name": "mailer", "waited_at": "2026-01-05T09:30:05+00:00",
        "woken_at": "2026-01-06T09:30:05+00:00", "condition": 0, "kind": "sleep",
        "event_key": None, "event_id": None,
    },
    {
        "attempt": 1, "index": 1, "delivery": 2,
        "waiting_for": "event user:confirmed where input.user_id == 42",
        "conditions": [{"kind": "event", "event_key": "user:confirmed"}], "worker_id": "w1",
        "worker_name": "mailer", "waited_at": "2026-01-06T09:30:06+00:00", "woken_at": None,
        "condition": None, "kind": None, "event_key": None, "event_id": None,
    },
]  # fmt: skip


def page(steps: list[dict[str, Any]]) -> str:
    run = {
        "id": "r1", "status": "RUNNING", "workflow": "welcome", "workflow_version": "v1",
        "namespace": "default", "created_at": "2026-01-05T09:30:00+00:00", "finished_at": None,
        "triggered_by": None, "replay_of": None, "error": None, "input": {"user_id": 42},
        "steps": steps,
    }  # fmt: skip
    return templates.env.get_template("run.html").render(
        request=SimpleNamespace(url=SimpleNamespace(path="/t/acme/runs/r1")),
        who=None, tenant="acme", tenants=[], namespace="", csrf="x", csrf_field="csrf",
        colours=COLOURS, msg="", run=run, dag=dag_svg(steps), timeline=[], tracebacks={},
        ended=False, live_from=0,
    )  # fmt: skip


def step(status: str, waiting_for: str | None, waits: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "email", "parents": [], "status": status, "output": None, "error": None,
        "on_failure": False, "on_success": False, "waiting_for": waiting_for, "waits": waits,
        "attempts": [
            {"attempt": 1, "delivery": 1, "worker_id": "w1", "worker_name": "mailer",
             "status": "SUSPENDED", "started_at": None, "finished_at": "2026-01-05T09:30:05+00:00",
             "error": None},
        ],
        "logs": [],
    }  # fmt: skip


def test_a_waiting_step_says_what_it_waits_for_and_its_waits() -> None:
    html = page([step("WAITING", WAITS[1]["waiting_for"], WAITS)])
    assert '<span class="status s-WAITING">WAITING</span>' in html
    assert (
        '<p class="waiting">Waiting for event user:confirmed where input.user_id == 42</p>' in html
    )
    assert "<caption>Waits</caption>" in html
    assert "<td>1.1 wait 0</td><td>sleep until 2026-01-06T09:30:05+00:00</td>" in html
    assert "<td>2026-01-06T09:30:05+00:00</td><td>sleep</td>" in html
    assert "<td>still waiting</td>" in html
    assert "<td>SUSPENDED</td>" in html
    assert 'data-step="email" data-status="WAITING"' in html
    assert f'fill="{COLOURS["WAITING"]}"' in html


def test_a_step_that_never_waited_shows_no_waits() -> None:
    html = page([step("RUNNING", None, [])])
    assert "Waiting for" not in html and "<caption>Waits</caption>" not in html
