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


def test_an_sdk_declared_workflow_without_flow_control_hashes_as_the_bare_definition() -> None:
    """The SDK builds its definition from attrs values (a step's unset ``rate_limits`` is an
    empty tuple, not a list): the fields added since are left out all the same, so the
    version is the one a worker in another language computes from the six-key steps."""
    from worker import Hatchet
    from worker.declare import spec_of
    from worker.settings import ClientSettings

    hatchet = Hatchet(settings=ClientSettings(nats_url="nats://127.0.0.1:1", tenant="t1"))
    wf = hatchet.workflow(name="Diamond", on_events=[])

    @wf.task()
    def start(input: object, ctx: object) -> None: ...

    @wf.task(parents=[start])
    def left(input: object, ctx: object) -> None: ...

    @wf.task(parents=[start])
    def right(input: object, ctx: object) -> None: ...

    @wf.task(parents=[left, right])
    def join(input: object, ctx: object) -> None: ...

    definition = spec_of(wf).definition
    bare = _diamond(["start", "left", "right", "join"])
    bare["schedule_timeout_s"] = definition.schedule_timeout_s
    assert definition.version == workflow_version(bare)
    hatchet.close()
