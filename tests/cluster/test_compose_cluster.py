"""compose.cluster.yaml cannot run here (no Docker engine): check that, laid over
compose.yaml, it makes three NATS nodes of one cluster, each with its own name and store,
and gives every client all three addresses and the engine three replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
NODES = ("nats", "nats-2", "nats-3")


def load(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_three_nodes_one_cluster_each_its_own_name_and_store() -> None:
    base, over = load("compose.yaml")["services"], load("compose.cluster.yaml")["services"]
    assert set(over) - set(NODES) <= set(base), "overrides only services compose.yaml has"
    names, stores = set(), set()
    for node in NODES:
        command = over[node]["command"]
        assert flag(command, "-c") == flag(base["nats"]["command"], "-c")  # the generated config
        assert "-js" in command and flag(command, "--cluster_name") == "natchet"
        routes = flag(command, "--routes").split(",")
        assert routes == [f"nats://{n}:6222" for n in NODES]
        assert flag(command, "--cluster").endswith(":6222")
        names.add(flag(command, "--name"))
        data = [v for v in over[node]["volumes"] if v.endswith(":/data")]
        assert len(data) == 1 and flag(command, "-sd") == "/data"
        stores.add(data[0].split(":")[0])
    assert len(names) == 3 and len(stores) == 3
    assert stores <= {*load("compose.yaml")["volumes"], *load("compose.cluster.yaml")["volumes"]}


def test_every_client_is_given_every_node() -> None:
    over = load("compose.cluster.yaml")["services"]
    every = ",".join(f"nats://{n}:4222" for n in NODES)
    assert over["engine"]["environment"]["NATCHET_NATS_URL"] == every
    assert over["engine"]["environment"]["NATCHET_STREAM_REPLICAS"] == "3"
    assert over["tenant"]["environment"]["NATCHET_NATS_URL"] == every
    assert over["nats-box"]["environment"]["NATS_URL"] == every
    host_port = over["worker"]["environment"]["HATCHET_CLIENT_HOST_PORT"]
    assert host_port == ",".join(f"{n}:4222" for n in NODES)
