"""Defect 9: ``natchet dev`` owns its data directory. A second one in the same directory is
refused at once (naming the first), and one stopped during its own start-up leaves no
server behind. Real processes, as a user runs them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from natchet.config import read_env_file
from tests.support import alive

NATCHET = [sys.executable, "-m", "natchet.cli"]


def pid_in(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return None


def servers_in(data_dir: Path) -> list[int]:
    """Live processes whose command line names ``data_dir`` (its nats-server, its postgres)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if str(data_dir).encode() in (proc / "cmdline").read_bytes() and alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def server_runs(data_dir: Path, server: str) -> bool:
    """``server`` (nats-server, or the postgres postmaster: not initdb's bootstrap backends,
    which also write postmaster.pid) runs on ``data_dir``."""
    for pid in servers_in(data_dir):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if Path(argv[0].decode()).name == server and (server != "postgres" or b"-h" in argv):
                return True
    return False


def wait_for(check: Callable[[], object], timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {timeout_s}s")
        time.sleep(0.01)


@contextlib.contextmanager
def natchet_dev(tmp_path: Path, data_dir: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """``natchet dev`` in the background; stopped (SIGINT) at the end if still running."""
    with (tmp_path / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(
            [*NATCHET, "dev", "--data-dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)


@contextlib.contextmanager
def reaping(data_dir: Path) -> Iterator[None]:
    """Whatever the test finds, kill the servers left in ``data_dir`` at the end."""
    try:
        yield
    finally:
        for pid in servers_in(data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def server_pid_files(data_dir: Path) -> tuple[Path, Path]:
    return (
        data_dir / "nats" / "nats-server.pid",
        data_dir / "postgres" / "pgdata" / "postmaster.pid",
    )


@pytest.mark.timeout(180)
def test_second_natchet_dev_in_the_same_data_dir_is_refused_naming_the_first(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    nats_pid_file, pg_pid_file = server_pid_files(data)
    with reaping(data), natchet_dev(tmp_path, data, "first") as first:
        wait_for((data / "dev.env").exists, 90, "the first natchet dev is up")
        nats_pid, pg_pid = pid_in(nats_pid_file), pid_in(pg_pid_file)
        assert nats_pid and pg_pid
        env_before = read_env_file(data / "dev.env")

        second = subprocess.Popen(
            [*NATCHET, "dev", "--data-dir", str(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        try:
            _out, err = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            second.send_signal(signal.SIGINT)
            second.communicate(timeout=60)
            pytest.fail("a second natchet dev took the data directory instead of refusing it")
        assert second.returncode == 2, err
        assert "Traceback" not in err
        [line] = err.strip().splitlines()
        assert f"pid {first.pid}" in line and "--data-dir" in line and str(data) in line, line

        # The first one kept its servers and its environment.
        assert first.poll() is None
        assert alive(nats_pid) and alive(pg_pid)
        assert (pid_in(nats_pid_file), pid_in(pg_pid_file)) == (nats_pid, pg_pid)
        assert read_env_file(data / "dev.env") == env_before

    # Once the first has stopped, the directory is free again.
    assert first.returncode == 0
    assert not alive(nats_pid) and not alive(pg_pid)
    assert not servers_in(data)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("server", ["nats-server", "postgres"])
def test_natchet_dev_stopped_during_start_up_leaves_no_server_behind(
    tmp_path: Path, server: str
) -> None:
    data = tmp_path / "data"
    with reaping(data), natchet_dev(tmp_path, data, "dev") as dev:
        wait_for(lambda: server_runs(data, server), 90, f"{server} started")
        assert not (data / "dev.env").exists(), "natchet dev was up already: not start-up"
        dev.send_signal(signal.SIGTERM)
        dev.wait(60)
        log = (tmp_path / "dev.log").read_text()
        assert "Traceback" not in log, log
        wait_for(lambda: not servers_in(data), 10, "every server of the data directory stopped")
        assert dev.returncode == 0, log
