"""compose.yaml cannot run here (no Docker engine); check it parses and names real things."""

from __future__ import annotations

from pathlib import Path

import yaml

from natchet.cli import _parser

ROOT = Path(__file__).resolve().parents[2]


def test_compose_parses_and_every_command_exists() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    nats = services["nats"]
    image, tag = nats["image"].split(":")
    assert image == "nats"
    assert tuple(int(x) for x in tag.split("-")[0].split(".")[:2]) >= (2, 12)
    assert "-js" in nats["command"]
    assert any(v.endswith(":/data") for v in nats["volumes"])
    assert services["postgres"]["image"].startswith("postgres:")

    subcommands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("engine", "worker"):
        command = services[name]["command"]
        if command[0] == "natchet":
            assert command[1] in subcommands, command
        else:
            assert command[0] == "python" and (ROOT / command[1]).is_file(), command
    assert services["engine"]["environment"]["NATCHET_NATS_URL"] == "nats://nats:4222"


def test_dockerfile_copies_what_exists() -> None:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
