"""One dev stack per data directory: an exclusive ``flock`` on ``<data dir>/natchet.lock``.

The lock is held on an open descriptor for as long as the stack runs, so the kernel drops it
when the process ends however it ends (SIGKILL included): a lock never outlives its holder
and needs no cleaning up. The holder writes its pid into the file, so a second stack that is
refused can name the process it would have robbed of its servers. The descriptor is not
inherited (Python opens files close-on-exec and ``subprocess`` closes the rest), so the
servers the stack starts never hold the lock themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from schemas.errors import NatchetError

LOCK_FILE = "natchet.lock"


class DataDirLockedError(NatchetError):
    """Another process runs a dev stack in this data directory."""


class DataDirLock:
    """An exclusive, non-blocking lock on a data directory; ``release`` is idempotent."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"natchet dev (pid {holder})" if holder else "another natchet dev"
            raise DataDirLockedError(
                f"{self.path.parent} is in use by {who}: stop it first, or give this one "
                "its own --data-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the lock


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(os.pread(fd, 32, 0).split()[0])
    return None
