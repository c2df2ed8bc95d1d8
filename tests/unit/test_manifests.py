"""The deployment examples (compose.yaml, examples/kubernetes/) parse, and name commands the
CLI takes, files that exist, variables the code reads, and the ports and paths it serves:
an example that drifted from the code would restart healthy workers or scale on nothing."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventstore.provision import task_consumer_name
from natchet.cli import build_parser
from schemas import Scope
from schemas.subjects import tasks_stream_name

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "examples" / "kubernetes"
SOURCES = "\n".join(
    p.read_text() for pkg in ("worker", "natchet", "eventstore") for p in (ROOT / pkg).rglob("*.py")
)


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def container(path: Path) -> dict[str, Any]:
    [deployment] = load(path)
    assert deployment["kind"] == "Deployment"
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


def env_of(c: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def assert_real_command(command: list[str]) -> None:
    """A ``natchet`` command the CLI parses, or ``python FILE`` of a file in the repository."""
    if command[0] == "natchet":
        build_parser().parse_args(command[1:])
    elif command[0] == "python":
        assert (ROOT / command[1]).is_file(), command
    elif command[:2] == ["sh", "-c"]:
        words = shlex.split(command[2].split("exec ", 1)[1])
        assert_real_command(words)
    else:
        pytest.fail(f"not a command the example can run: {command}")


def assert_read_by_the_code(names: object) -> None:
    for name in names:  # type: ignore[attr-defined]
        assert f'"{name}"' in SOURCES, f"{name} is read by no natchet code"


def probe(c: dict[str, Any], which: str) -> tuple[str, int]:
    get = c[which]["httpGet"]
    return get["path"], int(get["port"])


def test_the_worker_deployment_probes_the_health_port_it_turns_on() -> None:
    path = K8S / "worker-deployment.yaml"
    c = container(path)
    env = env_of(c)
    assert_real_command(c["command"])
    assert_read_by_the_code(env)
    assert env["HATCHET_CLIENT_WORKER_HEALTHCHECK_ENABLED"] == "true"
    port = int(env["HATCHET_CLIENT_WORKER_HEALTHCHECK_PORT"] or 0)
    assert probe(c, "livenessProbe") == probe(c, "readinessProbe") == ("/health", port)
    # Kubernetes waits longer than the worker's own drain before SIGKILL.
    [deployment] = load(path)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(env["NATCHET_WORKER_GRACE_SECONDS"] or 0)


def test_the_engine_deployment_probes_live_and_ready_on_its_metrics_port() -> None:
    c = container(K8S / "engine-deployment.yaml")
    env = env_of(c)
    assert_real_command(c["command"])
    assert_read_by_the_code(env)
    port = int(env["NATCHET_METRICS_PORT"] or 0)
    assert probe(c, "livenessProbe") == ("/live", port)
    assert probe(c, "readinessProbe") == ("/ready", port)


def test_the_scaled_object_scales_the_worker_on_its_workflows_queue() -> None:
    [scaled] = load(K8S / "keda-scaledobject.yaml")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    [worker] = load(K8S / "worker-deployment.yaml")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    [trigger] = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "nats-jetstream"
    # The demo worker's workflow, in tenant dev, namespace default.
    assert meta["stream"] == tasks_stream_name("dev")
    assert meta["consumer"] == task_consumer_name(Scope("dev", "default"), "UserSignup")
    assert "class UserSignup" in (ROOT / "examples" / "demo_worker.py").read_text()
    assert "nats_account" in meta["account"] and "natchet tenant list" in meta["account"]
    # The monitoring port compose.yaml's NATS serves (nats-server -m).
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    monitor = compose["nats"]["command"][compose["nats"]["command"].index("-m") + 1]
    assert meta["natsServerMonitoringEndpoint"].endswith(f":{monitor}")


def test_compose_health_checks_ask_the_ports_the_services_serve() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name, port_var, path in [
        ("engine", "NATCHET_METRICS_PORT", "/ready"),
        ("worker", "HATCHET_CLIENT_WORKER_HEALTHCHECK_PORT", "/health"),
    ]:
        service = services[name]
        assert service["restart"] in ("always", "unless-stopped", "on-failure")
        env = service["environment"]
        assert_read_by_the_code(env)
        [url] = re.findall(r"http://[^'\"]+", " ".join(service["healthcheck"]["test"]))
        assert url == f"http://127.0.0.1:{env[port_var]}{path}", url
        assert_real_command(service["command"])
    grace = 30  # NATCHET_WORKER_GRACE_SECONDS's default
    assert int(services["worker"]["stop_grace_period"].rstrip("s")) > grace
