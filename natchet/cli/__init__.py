"""The ``natchet`` command: the parser, and ``main``, the one place a natchet process exits.

One module per command group, each adding its parser and naming its handler (an ``async``
function of the parsed arguments that returns the exit code):

* :mod:`natchet.cli.serve`: ``dev``, ``engine``, ``demo`` (long-running; signals);
* :mod:`natchet.cli.runs`: ``runs list|get|cancel`` (:mod:`natchet.cli.bulk`: acting on
  the runs filters select); :mod:`natchet.cli.events`:
  ``events list``; :mod:`natchet.cli.event`: ``event push``; :mod:`natchet.cli.triggers`:
  ``cron`` and ``schedule`` (``create|list|delete``); :mod:`natchet.cli.ratelimits`:
  ``ratelimits put|list``;
  :mod:`natchet.cli.workers`: ``workers list``; :mod:`natchet.cli.version`: ``version``;
  :mod:`natchet.cli.audit`: ``audit``
  (a run's history from the log, not Postgres); :mod:`natchet.cli.replay`: ``replay``
  (rebuild the read model from the log, compare it with the live one);
  :mod:`natchet.cli.schema_export`: ``schemas export`` (the wire messages' JSON Schemas);
* :mod:`natchet.cli.tenancy`: ``tenant``, ``token``, ``nats-config``;
* :mod:`natchet.cli.dashboard`: ``dashboard``, ``admin-token create``;
* :mod:`natchet.cli.connection`: how each of them reaches NATS and Postgres.

Exit codes: 0 done, 1 a command's own "no" (``runs get`` of an unknown run, a failed
demo), 2 a user error, told in one line on stderr without a traceback (bad input, a server
that cannot be reached, a data directory in use), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from eventstore import logs, run_main, tracing
from schemas.errors import NatchetError

__all__ = ["COMMANDS", "build_parser", "main"]

USER_ERROR = 2

# The module (of natchet.cli) that adds each command's parser and its handlers. A command
# line imports its command's module alone: importing all of them (the engine, the
# projector, the audit, Postgres's driver) took ~1 s, longer than most commands run.
# Help, or a command line this cannot read at a glance, builds the whole parser.
COMMANDS = {
    "dev": "serve",
    "engine": "serve",
    "demo": "serve",
    "dashboard": "dashboard",
    "admin-token": "dashboard",
    "runs": "runs",
    "audit": "audit",
    "replay": "replay",
    "events": "events",
    "workers": "workers",
    "event": "event",
    "cron": "triggers",
    "schedule": "triggers",
    "ratelimits": "ratelimits",
    "tenant": "tenancy",
    "token": "tenancy",
    "nats-config": "tenancy",
    "version": "version",
    "schemas": "schema_export",
}


def command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first word that is no option of ``natchet`` itself),
    if it is one of :data:`COMMANDS`."""
    words = iter(argv)
    for word in words:
        if word == "--log-format":
            next(words, None)
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or (``command``) of that command's module's alone."""
    p = argparse.ArgumentParser(prog="natchet", description="a durable task engine on NATS")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, full errors")
    p.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help=f"text (the default) or one JSON object a line (also ${logs.ENV})",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [COMMANDS[command]] if command else list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        importlib.import_module(f"natchet.cli.{module}").add_parser(sub)
    return p


def _configure_logging(args: argparse.Namespace) -> None:
    """Servers log what they do; a one-shot command speaks through its output and its
    error line, so the log's retries and warnings stay quiet unless ``-v``."""
    if args.verbose:
        level = logging.DEBUG
    elif getattr(args, "long_running", False):
        level = logging.INFO
    else:
        level = logging.ERROR
    fmt = logs.log_format(args.log_format)
    # The engine's child processes (the projector) log as it does.
    os.environ[logs.ENV] = fmt
    logs.configure(level, fmt)


def _fail(message: str, *, verbose: bool) -> int:
    """``message`` as one line on stderr (all of it with ``-v``); the user-error code."""
    lines = [line for line in message.strip().splitlines() if line.strip()] or ["failed"]
    if verbose:
        print("natchet: " + "\n".join(lines), file=sys.stderr)
    else:
        more = " (-v shows the details)" if len(lines) > 1 else ""
        print(f"natchet: {lines[0]}{more}", file=sys.stderr)
    return USER_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(command_of(words)).parse_args(words)
    try:
        _configure_logging(args)
        if getattr(args, "long_running", False):
            tracing.configure(f"natchet-{args.command}")  # NATCHET_TRACING=otlp
    except NatchetError as exc:  # a NATCHET_LOG_FORMAT or NATCHET_TRACING it does not know
        return _fail(str(exc), verbose=args.verbose)
    command = args.handler(args)
    if getattr(args, "long_running", False):
        from natchet.cli.serve import until_signal

        command = until_signal(command)
    try:
        return int(run_main(command))
    except NatchetError as exc:
        return _fail(str(exc), verbose=args.verbose)
    except OSError as exc:  # a file the command reads or writes: missing, not allowed, ...
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", verbose=args.verbose)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Postgres went away after the connection (at connect, open_database says more);
        # only a command that imported Postgres's driver can raise its errors.
        pg = sys.modules.get("psycopg")
        if pg is not None and isinstance(exc, pg.OperationalError):
            return _fail(f"PostgreSQL: {exc}", verbose=args.verbose)
        raise
