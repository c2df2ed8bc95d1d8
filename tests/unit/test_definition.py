"""A workflow's version: the hash docs/protocol.md §4 tells workers in any language to compute."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from schemas.definition import workflow_version

PROTOCOL = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def _diamond(order: list[str]) -> dict[str, object]:
    parents = {"start": [], "left": ["start"], "right": ["start"], "join": ["right", "left"]}
    steps = [
        {
            "name": name,
            "parents": parents[name],
            "timeout_s": 60.0,
            "retries": 0,
            "backoff_factor": None,
            "backoff_max_s": None,
        }
        for name in order
    ]
    return {
        "name": "Diamond",
        "steps": steps,
        "on_events": [],
        "schedule_timeout_s": 300.0,
        "on_failure": None,
    }


def test_the_order_steps_and_parents_are_declared_in_does_not_change_the_version() -> None:
    one = _diamond(["start", "left", "right", "join"])
    other = _diamond(["start", "right", "left", "join"])
    other["steps"][-1]["parents"] = ["left", "right"]  # type: ignore[index]
    assert workflow_version(one) == workflow_version(other)


def test_what_the_version_covers_changes_it_and_the_rest_does_not() -> None:
    base = _diamond(["start", "left", "right", "join"])
    assert workflow_version({**base, "registered_at": "x", "v": 9}) == workflow_version(base)
    assert workflow_version({**base, "on_events": ["go"]}) != workflow_version(base)
    # JCS writes 60.0 as 60, as JavaScript does.
    assert workflow_version(orjson.loads(orjson.dumps(base).replace(b"60.0", b"60"))) == (
        workflow_version(base)
    )


def test_the_protocol_pages_example_hashes_to_the_version_it_shows() -> None:
    block = re.search(r"Append a `workflow` message.*?```json\n(.*?)```", PROTOCOL, re.S)
    assert block is not None
    body = orjson.loads(block.group(1))
    assert workflow_version(body) == body["version"]
