"""Acting on many runs at once (``runs cancel --status RUNNING --workflow W --yes``): the
filters and their flags, the runs they select from Postgres (all of them, not a page), the
count and the confirmation, then the action in batches, with progress and a summary.

A command that acts in bulk::

    selection = selection_of(args, tenant_of(args))       # None: no filter given
    runs = await select(args, selection, among=...)       # every matching run
    if not confirm(len(runs), selection.describe(among), verb="Cancel", yes=args.yes):
        return 0                                          # none, or the answer was no
    async with open_nats(...) as nc:
        return await act_on_each(runs, act, did="cancel requested for")

where ``act`` does one batch of runs and says, run by run, what went wrong (``None``: done).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import attrs
import tqdm

from eventstore import Append, Appender, Connection, append
from natchet.cli.connection import add_database_flag, database_url, open_database, open_nats
from natchet.cli.output import note
from projector.queries import select_runs
from schemas import RunStatus
from schemas.errors import ConfigError, NatchetError
from schemas.subjects import check_name

BATCH = 100
PLAIN_EVERY_S = 2.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd])")


def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """``--since``: a duration back from ``now`` (``90s``, ``15m``, ``1h``, ``2d``) or an
    ISO 8601 time (UTC if it names no zone). Anything else is a :class:`ConfigError`."""
    found = _DURATION.fullmatch(text.strip())
    if found:
        seconds = int(found[1]) * _UNITS[found[2]]
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r} is neither a duration (90s, 15m, 1h, 2d) nor an ISO 8601 time"
            " (e.g. 2026-12-01T18:00:00Z)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def parse_status(text: str) -> str:
    """``--status``: a run status, in any case."""
    try:
        return RunStatus(text.upper()).value
    except ValueError:
        known = ", ".join(s.value for s in RunStatus)
        raise ConfigError(f"--status {text!r} is not a run status ({known})") from None


@attrs.frozen
class Selection:
    """Which runs of one tenant: every filter given must match."""

    tenant: str
    namespace: str | None = None
    status: str | None = None
    workflow: str | None = None
    since: str | None = None  # as given, to say it back
    since_at: dt.datetime | None = None

    def describe(self, among: Collection[str] | None = None) -> str:
        """``status=RUNNING, workflow=W, since=1h`` (``among``: the statuses the action
        is limited to, said when ``--status`` was not given)."""
        status = self.status or ("|".join(among) if among is not None else None)
        parts = {
            "tenant": self.tenant,
            "namespace": self.namespace,
            "status": status,
            "workflow": self.workflow,
            "since": self.since,
        }
        return ", ".join(f"{k}={v}" for k, v in parts.items() if v is not None)


def run_or_selection(args: argparse.Namespace, tenant: str) -> Selection | None:
    """For a command taking RUN_ID or filters: None for RUN_ID, else the filters (both, or
    neither, is a :class:`ConfigError`)."""
    selection = selection_of(args, tenant)
    if args.run_id is not None:
        if selection is not None:
            raise ConfigError("give RUN_ID or filters (--status, --workflow, --since), not both")
        return None
    if selection is None:
        raise ConfigError("which runs? give RUN_ID, or --status, --workflow and/or --since")
    return selection


def add_selection_flags(sp: argparse.ArgumentParser, *, verb: str) -> None:
    """``--status --workflow --since --yes`` and ``--database-url`` on ``sp`` (``--tenant``
    and ``--namespace`` are the command's own: they also name a single run's scope)."""
    sp.add_argument("--status", help=f"{verb} the runs of this status")
    sp.add_argument("--workflow", help=f"{verb} the runs of this workflow")
    sp.add_argument(
        "--since",
        metavar="DURATION|TIME",
        help=f"{verb} the runs created since: 90s, 15m, 1h, 2d ago, or an ISO 8601 time",
    )
    sp.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    add_database_flag(sp)


def selection_of(args: argparse.Namespace, tenant: str) -> Selection | None:
    """The filters given (``--status``, ``--workflow``, ``--since``; ``--namespace`` narrows
    them), checked; ``None`` when none of the three is given."""
    if args.status is None and args.workflow is None and args.since is None:
        return None
    namespace = getattr(args, "namespace", None)
    return Selection(
        tenant=tenant,
        namespace=None if namespace is None else check_name("namespace", namespace),
        status=None if args.status is None else parse_status(args.status),
        workflow=args.workflow,
        since=args.since,
        since_at=None if args.since is None else parse_since(args.since),
    )


@attrs.frozen
class RunRef:
    """A selected run: enough to name it and its subjects."""

    id: str
    namespace: str
    workflow: str
    status: str


async def select(
    args: argparse.Namespace, selection: Selection, *, among: Collection[str] | None = None
) -> list[RunRef]:
    """Every run ``selection`` matches in the read model (``--database-url``), oldest
    first; ``among``: only runs of these statuses (``--status`` must be one of them)."""
    if selection.status is not None:
        statuses: list[str] | None = [selection.status]
        if among is not None and selection.status not in among:
            statuses = []
    else:
        statuses = None if among is None else list(among)
    if statuses == []:
        return []
    async with open_database(database_url(args)) as conn:
        rows = await select_runs(
            conn,
            tenant=selection.tenant,
            namespace=selection.namespace,
            statuses=statuses,
            workflow=selection.workflow,
            since=selection.since_at,
        )
    return [RunRef(r["id"], r["namespace"], r["workflow"], r["status"]) for r in rows]


def confirm(count: int, described: str, *, verb: str, yes: bool) -> bool:
    """Say how many runs match; go on (``True``) with ``yes``, or if the person at the
    terminal answers y. No match, or no: ``False``. No terminal to ask and no ``yes``: a
    :class:`ConfigError` that names ``--yes`` (nothing done)."""
    if count == 0:
        print(f"no runs match ({described})")
        return False
    runs = f"{count:,} run{'' if count == 1 else 's'}"
    print(f"{runs} match ({described})")
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(
            f"not going to {verb.lower()} {runs} without asking, and stdin is not a terminal"
            " to ask: pass --yes"
        )
    try:
        answer = input(f"{verb} {runs}? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("nothing done")
    return False


Act = Callable[[Sequence[RunRef]], Awaitable[Sequence[BaseException | None]]]


async def act_on_each(runs: Sequence[RunRef], act: Act, *, did: str, batch: int = BATCH) -> int:
    """``act`` on ``runs``, ``batch`` at a time (a batch it raises a natchet error for
    counts as failed, run by run); progress on stderr for more than one batch; then one
    line: ``{did} N runs, M failed (first: RUN: error)``. Exit code 1 if any failed."""
    done, failed = 0, 0
    first: str | None = None
    meter = _Meter(len(runs), did) if len(runs) > batch else None
    try:
        for start in range(0, len(runs), batch):
            chunk = runs[start : start + batch]
            try:
                errors: Sequence[BaseException | None] = await act(chunk)
            except NatchetError as exc:
                errors = [exc] * len(chunk)
            for run, error in zip(chunk, errors, strict=True):
                if error is None:
                    done += 1
                else:
                    failed += 1
                    first = first or f"{run.id}: {error}"
            if meter is not None:
                meter.update(done + failed)
    finally:
        if meter is not None:
            meter.close()
    tail = f" (first: {first})" if first else ""
    print(f"{did} {done:,} run{'' if done == 1 else 's'}, {failed:,} failed{tail}")
    return 1 if failed else 0


async def append_each(
    args: argparse.Namespace,
    tenant: str,
    runs: Sequence[RunRef],
    request: Callable[[RunRef], Append],
    *,
    did: str,
) -> int:
    """Append ``request(run)`` for each of ``runs`` to the tenant's log, pipelined a batch at
    a time (:func:`act_on_each`: progress, summary, exit code)."""
    async with open_nats(args, role="log", tenant=tenant) as nc:
        appender = Appender(nc)
        try:
            return await act_on_each(
                runs, lambda batch: _append_all(nc, appender, [request(r) for r in batch]), did=did
            )
        finally:
            await appender.close()


async def _append_all(
    nc: Connection, appender: Appender, requests: Sequence[Append]
) -> list[BaseException | None]:
    """``requests``, pipelined; if that fails, one by one, to tell which (their dedup ids
    make a request sent twice count once)."""
    try:
        await appender.append_all(requests)
        return [None] * len(requests)
    except NatchetError:
        pass
    errors: list[BaseException | None] = []
    for item in requests:
        try:
            await append(nc, item)
            errors.append(None)
        except NatchetError as exc:
            errors.append(exc)
    return errors


class _Meter:
    """Progress on stderr: a bar on a terminal, else a line every ~2 s."""

    def __init__(self, total: int, did: str) -> None:
        self.total, self.did = total, did
        self.bar: tqdm.tqdm[Any] | None = None
        if sys.stderr.isatty():
            self.bar = tqdm.tqdm(total=total, unit="run", file=sys.stderr)
        self.last_line = time.monotonic()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n - self.bar.n)
            return
        now = time.monotonic()
        if now - self.last_line >= PLAIN_EVERY_S:
            self.last_line = now
            note(f"{self.did} {n:,}/{self.total:,} runs")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
