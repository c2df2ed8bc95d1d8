"""``natchet engine``'s second process: the projector, off the dispatcher's event loop and
its core (issue 9: in one process the projector took ~37% of an engine that was the whole
hot path's bottleneck, busy 100% of one core while the other had room).

The child is ``natchet engine --role project --with-parent`` with the parent's settings. It
reads its stdin until end of file: the parent holds the other end, so when the parent exits,
however it exits (kill -9 included), the child stops on its own. The parent restarts a child
that exits with the supervisor's backoff. Two projectors of one tenant for a moment (a new
parent's child while the old child stops) are safe: each batch takes the tenant's lock and
applying is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from eventstore import Service
from natchet.supervise import supervise

log = logging.getLogger(__name__)


class ProjectorProcess(Service):
    """Runs ``argv`` (an engine with ``--role project``) until shutdown, restarting it when
    it exits (``natchet.supervise``); on shutdown, SIGTERM and up to ``grace_s`` to stop,
    then SIGKILL."""

    name = "projector process"
    grace_s = 20.0

    def __init__(self, argv: Sequence[str]) -> None:
        super().__init__()
        self.argv = list(argv)

    async def _serve(self) -> None:
        await supervise(self.name, self._once, self.stopping)

    async def _once(self) -> None:
        """One child, until it exits (a failure, for the supervisor) or shutdown."""
        proc = await asyncio.create_subprocess_exec(*self.argv, stdin=asyncio.subprocess.PIPE)
        try:
            await self.until_stopping(proc.wait())
        finally:
            if proc.returncode is None:
                await _stop(proc, self.grace_s - 2)
        if not self.stopping.is_set():
            raise RuntimeError(f"the projector process exited with {proc.returncode}")


async def _stop(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), grace_s)
    except TimeoutError:
        log.warning("projector process %d did not stop in %.0fs; killing it", proc.pid, grace_s)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    if proc.stdin is not None:
        proc.stdin.close()


async def until_stdin_closes() -> None:
    """Return when this process's stdin reaches end of file (its parent has gone)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while await reader.read(4096):
            pass
    finally:
        transport.close()
