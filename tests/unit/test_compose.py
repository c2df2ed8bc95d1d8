"""compose.yaml cannot run here (no Docker engine); check it parses, names real things, and
runs NATS with the secured configuration natchet generates (which a real nats-server from
the wheel accepts, refusing anonymous and unknown clients)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import eventstore
from eventstore import ConnectError
from natchet.cli import build_parser
from natchet.dev.embedded import NatsServer

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, dict[str, dict[str, object]]]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_parses_and_every_command_exists() -> None:
    services = _compose()["services"]
    nats = services["nats"]
    image, tag = str(nats["image"]).split(":")
    assert image == "nats"
    assert tuple(int(x) for x in tag.split("-")[0].split(".")[:2]) >= (2, 12)
    assert "-js" in nats["command"]  # type: ignore[operator]
    assert any(str(v).endswith(":/data") for v in nats["volumes"])  # type: ignore[attr-defined]
    assert str(services["postgres"]["image"]).startswith("postgres:")

    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("engine", "nats-config"):
        command = services[name]["command"]
        assert isinstance(command, list) and command[0] == "natchet", command
        assert command[1] in subcommands, command
    worker = " ".join(services["worker"]["command"])  # type: ignore[arg-type]
    assert "examples/demo_worker.py" in worker and (ROOT / "examples/demo_worker.py").is_file()
    engine_env = services["engine"]["environment"]
    assert engine_env["NATCHET_NATS_URL"] == "nats://nats:4222"  # type: ignore[index]


def test_compose_nats_runs_accounts_and_the_callout() -> None:
    """The NATS service runs the generated config (operator mode: an account per tenant,
    auth callout to the engine), which is written once and read by the engine."""
    services = _compose()["services"]
    command = services["nats"]["command"]
    assert isinstance(command, list)
    config = command[command.index("-c") + 1]
    generator = services["nats-config"]["command"]
    assert isinstance(generator, list) and generator[1] == "nats-config"
    assert config == f"{generator[2]}/nats-server.conf"
    assert "--if-missing" in generator  # restarting keeps the keys (and so every account)
    assert services["nats"]["depends_on"]["nats-config"] == {  # type: ignore[index]
        "condition": "service_completed_successfully"
    }
    engine_env = services["engine"]["environment"]
    assert engine_env["NATCHET_NATS_AUTH_FILE"] == f"{generator[2]}/natchet-auth.json"  # type: ignore[index]


@pytest.mark.timeout(60)
async def test_generated_config_is_secured_on_a_real_server(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "natchet.cli", "nats-config", str(tmp_path / "conf")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "nats-server.conf" in out.stdout
    text = (tmp_path / "conf" / "nats-server.conf").read_text()
    for setting in (
        "operator:",
        "system_account:",
        "resolver {",
        "type: full",
        "default_sentinel:",
    ):
        assert setting in text
    with NatsServer(
        tmp_path / "store", config_file=tmp_path / "conf" / "nats-server.conf"
    ) as server:
        for token in (None, "nct_e30.aaaaaaaaaaaaaaaaaaaaaaaa"):
            with pytest.raises(ConnectError, match="Authorization Violation"):
                options = eventstore.NatsOptions(server.url, token=token, connect_timeout_s=3)
                await eventstore.connect(options)


def test_dockerfile_copies_what_exists() -> None:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
