"""``natchet``'s command table: a command line builds only its command's parser (one module
imported, not all), and that parser reads it as the whole parser does."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from natchet.cli import COMMANDS, build_parser, command_of


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_table_names_every_command_the_modules_add_and_no_other() -> None:
    assert set(commands(build_parser())) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_commands_own_parser_is_the_whole_parsers(command: str) -> None:
    alone, whole = commands(build_parser(command))[command], commands(build_parser())[command]
    assert alone.format_help() == whole.format_help()


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["runs", "list"], "runs"),
        (["-v", "cron", "list"], "cron"),
        (["--log-format", "json", "engine"], "engine"),
        (["--log-format=json", "-v", "audit", "x"], "audit"),
        (["--help"], None),
        ([], None),
        (["nope", "runs"], None),  # the whole parser says 'nope' is no command
        (["--log", "json", "runs"], None),  # an abbreviation: the whole parser reads it
    ],
)
def test_command_of(argv: list[str], command: str | None) -> None:
    assert command_of(argv) == command


def test_a_command_line_imports_its_commands_module_alone() -> None:
    probe = (
        "import json, sys\n"
        "from natchet.cli import build_parser, command_of\n"
        "words = ['cron', 'list', '--json']\n"
        "build_parser(command_of(words)).parse_args(words)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('natchet.cli.',"
        " 'dispatcher', 'projector', 'psycopg', 'natchet.audit')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert "natchet.cli.triggers" in loaded
    for other in ("natchet.cli.serve", "natchet.cli.audit", "dispatcher", "projector"):
        assert other not in loaded, loaded


def test_an_unknown_command_is_refused_naming_the_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "natchet.cli", "nope"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "invalid choice: 'nope'" in out.stderr and "'cron'" in out.stderr
