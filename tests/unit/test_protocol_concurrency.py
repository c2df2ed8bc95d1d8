"""docs/protocol.md §4 on a workflow's ``concurrency``: the version it says the example
definition hashes to with that concurrency added is the one a worker computes, and the
fields it names are the ones the wire carries."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

import schemas
from schemas.definition import workflow_version

PROTOCOL = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def test_the_example_with_a_concurrency_hashes_to_the_version_the_page_shows() -> None:
    block = re.search(r"Append a `workflow` message.*?```json\n(.*?)```", PROTOCOL, re.S)
    said = re.search(
        r"With `concurrency` `(\{.*?\})` added, the example above hashes to `([0-9a-f]{16})`",
        " ".join(PROTOCOL.split()),
    )
    assert block is not None and said is not None
    concurrency = orjson.loads(said.group(1))
    body = {**orjson.loads(block.group(1)), "concurrency": concurrency}
    assert workflow_version(body) == said.group(2) != workflow_version(orjson.loads(block.group(1)))
    # What a Python worker sends: the same three keys, so the same version.
    wire = orjson.loads(schemas.encode(schemas.WorkflowDef(**body)))
    assert wire["concurrency"] == concurrency
    assert workflow_version(wire) == said.group(2)


def test_the_example_with_a_rate_limit_hashes_to_the_version_the_page_shows() -> None:
    block = re.search(r"Append a `workflow` message.*?```json\n(.*?)```", PROTOCOL, re.S)
    said = re.search(
        r"With `\"rate_limits\": (\[.*?\])` added to step `left`, the example above hashes to "
        r"`([0-9a-f]{16})`",
        " ".join(PROTOCOL.split()),
    )
    assert block is not None and said is not None
    body = orjson.loads(block.group(1))
    limits = orjson.loads(said.group(1))
    limited = {**body, "steps": [body["steps"][0], {**body["steps"][1], "rate_limits": limits}]}
    assert workflow_version(limited) == said.group(2) != workflow_version(body)
    # What a Python worker sends: the same five keys, so the same version.
    wire = orjson.loads(schemas.encode(schemas.WorkflowDef(**limited)))
    assert wire["steps"][1]["rate_limits"] == limits
    assert workflow_version(wire) == said.group(2)


def test_the_examples_with_a_default_priority_or_a_step_concurrency_hash_as_the_page_says() -> None:
    block = re.search(r"Append a `workflow` message.*?```json\n(.*?)```", PROTOCOL, re.S)
    text = " ".join(PROTOCOL.split())
    prio = re.search(
        r'With `"default_priority": 2` added, the example above hashes to `(\w+)`', text
    )
    step = re.search(
        r'[Ww]ith `"concurrency": (\{.*?\})` on step `left`, the example above hashes to `(\w+)`',
        text,
    )
    assert block is not None and prio is not None and step is not None
    body = orjson.loads(block.group(1))
    assert workflow_version({**body, "default_priority": 2}) == prio.group(1)
    body["steps"][1]["concurrency"] = orjson.loads(step.group(1))
    assert workflow_version(body) == step.group(2)
    wire = orjson.loads(schemas.encode(schemas.WorkflowDef(**body)))
    assert workflow_version(wire) == step.group(2)
