"""``natchet schemas export [--dir DIR] [--check]``: the JSON Schemas of every message kind
(:mod:`schemas.jsonschema`) written to ``schemas/json/``, or, with ``--check``, whether the
files there are what the code would write (CI runs it: a changed message type with stale
schemas fails)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import schemas
from schemas.jsonschema import documents

DEFAULT_DIR = Path(schemas.__file__).parent / "json"
COMMAND = "natchet schemas export"


def add_parser(sub: Any) -> None:
    group = sub.add_parser("schemas", help="the JSON Schemas of natchet's wire messages")
    actions = group.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")
    export = actions.add_parser("export", help=f"write them to {DEFAULT_DIR.name}/ (or --check)")
    export.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"where (default: {DEFAULT_DIR})"
    )
    export.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming the stale or missing files when they differ",
    )
    export.set_defaults(handler=export_schemas)


def differences(directory: Path) -> list[str]:
    """The files of ``directory`` that differ from what the generator writes: missing,
    stale, or schemas of kinds that no longer exist."""
    wanted = documents()
    names = [n for n, body in wanted.items() if _read(directory / n) != body]
    extra = {p.name for p in directory.glob("*.json")} - set(wanted) if directory.is_dir() else ()
    return sorted([*names, *extra])


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write(directory: Path) -> list[str]:
    """Write every schema file that differs (and delete those of kinds gone): their names."""
    wanted = documents()
    changed = differences(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in changed:
        path = directory / name
        if name in wanted:
            path.write_bytes(wanted[name])
        else:
            path.unlink()
    return changed


async def export_schemas(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    if args.check:
        stale = differences(directory)
        if stale:
            where = "" if directory == DEFAULT_DIR else f" --dir {directory}"
            print(f"stale or missing in {directory}: {', '.join(stale)}; run: {COMMAND}{where}")
            return 1
        print(f"{directory}: current ({len(documents())} files)")
        return 0
    changed = write(directory)
    print(f"{directory}: {'wrote ' + ', '.join(changed) if changed else 'already current'}")
    return 0
