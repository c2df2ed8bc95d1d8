"""``natchet runs replay`` and ``natchet events replay``: re-running what the log holds, as
new history linked to it (the original is never changed).

A run replay is a request the engine decides (``dispatcher.replay``): it reads the run from
the log, keeps the outputs upstream of ``--from-step`` and runs the rest, or refuses with
the reason. One run: the command waits a little for that answer and says it. Many (the
filters of :mod:`natchet.cli.bulk`, over runs that ended): counted, confirmed, requested
in pipelined batches.
"""

from __future__ import annotations

import argparse
from typing import Any

from eventstore import (
    ConfigError,
    append,
    publish_again,
)
from natchet.audit import check_run_id
from natchet.cli.bulk import (
    add_selection_flags,
    append_each,
    confirm,
    run_or_selection,
    select,
)
from natchet.cli.connection import add_nats_flags, open_nats, tenant_of
from natchet.cli.output import note
from natchet.runops import replay_answer, replay_request
from schemas import RunRejected, RunStatus, Scope

ANSWER_S = 10.0


def add_runs_replay(runs_sub: Any) -> None:
    rr = runs_sub.add_parser(
        "replay",
        help="run a run that ended again (whole or from a step), as a new linked run",
        description="Start RUN_ID again as a new run linked to it, with its input and the"
        " workflow as registered now; --from-step re-runs that step and everything downstream,"
        " keeping the outputs before it. Or every ended run that --status, --workflow and"
        " --since select (read from Postgres; counted and confirmed first, or --yes).",
    )
    rr.add_argument("run_id", nargs="?", metavar="RUN_ID")
    rr.add_argument("--from-step", metavar="STEP", help="re-run from this step")
    rr.add_argument(
        "--namespace", help="RUN_ID's namespace (default: default); with filters, only this one"
    )
    add_selection_flags(rr, verb="replay")
    add_nats_flags(rr, role="log")
    rr.set_defaults(handler=runs_replay)


def add_events_replay(events_sub: Any) -> None:
    er = events_sub.add_parser(
        "replay",
        help="publish an event again: the workflows listening to its key start new runs",
    )
    er.add_argument("event_id", metavar="EVENT_ID", help="the event's id (its stream sequence)")
    er.add_argument("--namespace", default="default", help="the event's namespace")
    add_nats_flags(er, role="log")
    er.set_defaults(handler=events_replay)


async def runs_replay(args: argparse.Namespace) -> int:
    tenant = tenant_of(args)
    selection = run_or_selection(args, tenant)
    if selection is None:
        return await _replay_one(args, Scope(tenant, args.namespace or "default"))
    ended = [s.value for s in RunStatus if s.terminal]
    if selection.status is not None and selection.status not in ended:
        raise ConfigError(f"only runs that ended can be replayed, not {selection.status} ones")
    runs = await select(args, selection, among=ended)
    if not confirm(len(runs), selection.describe(ended), verb="Replay", yes=args.yes):
        return 0
    return await append_each(
        args,
        tenant,
        runs,
        lambda r: replay_request(Scope(tenant, r.namespace), r.id, args.from_step)[1],
        did="replay requested for",
    )


async def _replay_one(args: argparse.Namespace, scope: Scope) -> int:
    run_id = check_run_id(args.run_id)
    new_id, request = replay_request(scope, run_id, args.from_step)
    async with open_nats(args, role="log", tenant=scope.tenant) as nc:
        await append(nc, request)
        answer = await replay_answer(nc, scope, new_id, ANSWER_S)
    if isinstance(answer, RunRejected):
        note(f"natchet: replay of run {run_id} refused: {answer.reason}")
        return 1
    if answer is None:
        print(
            f"replay of run {run_id} requested as run {new_id}; the engine has not answered"
            f" within {ANSWER_S:g}s (is it running?): `natchet runs get {new_id}` will show it"
        )
        return 0
    start = f" from step {args.from_step}" if args.from_step else ""
    kept = f", keeping {', '.join(sorted(answer.kept))}" if answer.kept else ""
    print(f"run {new_id} replays run {run_id}{start}{kept}: `natchet runs get {new_id}` shows it")
    return 0


async def events_replay(args: argparse.Namespace) -> int:
    scope = Scope(tenant_of(args), args.namespace)
    async with open_nats(args, role="log", tenant=scope.tenant) as nc:
        key, seq = await publish_again(nc, scope, args.event_id)
    print(
        f"event {args.event_id} published again as event {seq} (key {key}):"
        f" `natchet audit --event {seq}` shows the runs it starts"
    )
    return 0
