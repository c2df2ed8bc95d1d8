"""What the CLI prints: JSON for programs, aligned tables for people, notes on stderr; and
the paging flags of the lists (``--limit``, ``--after``) with the note a cut list ends with."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the projector's package is imported by the commands that list
    from projector.queries import Page

DEFAULT_LIMIT = 100


def dump_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def table(rows: list[dict[str, Any]], *, empty: str = "(none)") -> None:
    """``rows`` as columns named by the first row's keys; ``None`` shows as ``-``."""
    if not rows:
        print(empty)
        return
    cols = list(rows[0])

    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    widths = {c: max(len(c), *(len(cell(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(cell(r[c]).ljust(widths[c]) for c in cols).rstrip())


def note(text: str) -> None:
    """A line for the person at the terminal, kept out of the output programs read."""
    print(text, file=sys.stderr)


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def add_page_flags(sp: argparse.ArgumentParser, what: str) -> None:
    sp.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        help=f"at most this many {what} (default: %(default)s)",
    )
    sp.add_argument(
        "--after",
        metavar="CURSOR",
        help=f"the {what} after those a previous list showed (its `next`)",
    )


def say_if_truncated(page: Page, what: str) -> None:
    """On stderr, when ``page`` is not the whole list: how much it is and how to see more."""
    shown = f"{len(page.rows):,} of {page.total:,} {what}"
    if page.next is not None:
        note(f"showing {shown} (use --limit or --after {page.next})")
    elif len(page.rows) < page.total:
        note(f"showing the last {shown}")
