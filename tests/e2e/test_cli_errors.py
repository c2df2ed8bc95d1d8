"""Defect 7: the CLI answers bad input and unreachable servers with one line on stderr and
exit code 2, never a traceback. Real processes (``python -m natchet.cli``), a hermetic
environment (no NATCHET_*/HATCHET_* variables, an empty working directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from natchet.dev.embedded import EmbeddedPostgres, free_port

NATCHET = [sys.executable, "-m", "natchet.cli"]


def natchet_fails(tmp_path: Path, *args: str, **env: str) -> str:
    """Run ``natchet args``; assert the user-error contract; return the stderr line."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    out = subprocess.run(
        [*NATCHET, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**clean, **env},
    )
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert lines[0].startswith("natchet: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["token", "nats-context", "garbage"], {}, "malformed token"),
        (["runs", "cancel", "r1", "--namespace", "bad.ns"], {}, "invalid namespace"),
        (["runs", "get", "r1", "--database-url", "not a url"], {}, "cannot be read"),
        (["workers", "list", "--tenant", "Not.A.Tenant"], {}, "invalid tenant"),
        (["event", "push", "user:create", "{not json", "--nats-url", "127.0.0.1:1"], {}, "JSON"),
        (
            ["event", "push", "user:create", "{}", "--nats-url", "127.0.0.1:1"],
            {"HATCHET_CLIENT_TOKEN": "nct_garbage"},
            "malformed token",
        ),
        (["runs", "list"], {}, "NATCHET_DATABASE_URL is not set"),
        (["runs", "cancel", "--since", "yesterday"], {}, "--since 'yesterday' is neither"),
        (["runs", "cancel", "--status", "DONE"], {}, "not a run status"),
        (["runs", "cancel"], {}, "give RUN_ID, or --status"),
        (["runs", "cancel", "r1", "--workflow", "W"], {}, "not both"),
        (["runs", "cancel", "--workflow", "W", "--yes"], {}, "NATCHET_DATABASE_URL is not set"),
        (["workers", "list"], {}, "no NATS address"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_cli_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    assert says in natchet_fails(tmp_path, *args, **env)


def test_cli_postgres_not_reachable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/natchet"
    for command in (["runs", "list"], ["runs", "get", "r1"], ["events", "list"]):
        line = natchet_fails(tmp_path, *command, "--database-url", url)
        assert "cannot reach PostgreSQL" in line and "--database-url" in line, line


def test_cli_database_without_natchet_tables_is_one_line_and_exit_2(
    tmp_path: Path, pg_server: EmbeddedPostgres
) -> None:
    line = natchet_fails(tmp_path, "events", "list", "--database-url", pg_server.url())
    assert "no natchet tables" in line, line


def test_cli_paging_cursor_that_no_list_returned_is_one_line_and_exit_2(
    tmp_path: Path, pg_server: EmbeddedPostgres
) -> None:
    line = natchet_fails(
        tmp_path, "runs", "list", "--after", "x!", "--database-url", pg_server.url()
    )
    assert "not a cursor" in line, line


@pytest.mark.timeout(60)
def test_cli_nats_not_reachable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    line = natchet_fails(tmp_path, "workers", "list", "--nats-url", f"127.0.0.1:{free_port()}")
    assert "cannot connect to NATS" in line and "--nats-url" in line, line
