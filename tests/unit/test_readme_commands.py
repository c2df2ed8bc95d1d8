"""The ``natchet`` commands the README shows are commands the CLI takes, as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from natchet.cli import build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def readme_commands() -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for text in block.splitlines():
            line = text.split("  #", 1)[0].strip()
            if line.startswith((".venv/bin/natchet ", "natchet ")):
                lines.append(line)
    return lines


def test_the_readme_shows_the_audit_commands() -> None:
    audits = [c for c in readme_commands() if " audit " in c]
    assert {"--json", "--follow", "--event"} <= {w for c in audits for w in c.split()}


def test_the_readme_shows_the_replay_commands() -> None:
    replays = [c for c in readme_commands() if " replay" in c]
    assert {"--verify", "--swap", "--tenant"} <= {w for c in replays for w in c.split()}


def test_the_readme_shows_the_bulk_cancel_commands() -> None:
    cancels = [c for c in readme_commands() if " runs cancel" in c]
    assert {"--status", "--workflow", "--since", "--yes"} <= {w for c in cancels for w in c.split()}


def test_the_readme_shows_the_rerun_commands() -> None:
    reruns = [c for c in readme_commands() if "runs replay" in c or "events replay" in c]
    words = {w for c in reruns for w in c.split()}
    assert {"--from-step", "--status", "--workflow", "--since", "--yes", "events"} <= words


@pytest.mark.parametrize("command", readme_commands())
def test_readme_natchet_command_parses(command: str) -> None:
    words = [{"EVENT_ID": "42"}.get(w, w) for w in shlex.split(command)[1:]]  # placeholders
    build_parser().parse_args(words)
