"""The Postgres read model: migrations, idempotent checkpointed apply, the tailing service
and the queries the CLI and the dashboard use. The only door to Postgres."""

from projector.apply import apply_records
from projector.fold import PENDING
from projector.migrations import TABLES, migrate
from projector.queries import (
    CursorError,
    Page,
    dump_tables,
    events_page,
    get_run,
    list_events,
    list_runs,
    runs_page,
)
from projector.runner import Projector, read_checkpoint

__all__ = [
    "PENDING",
    "TABLES",
    "CursorError",
    "Page",
    "Projector",
    "apply_records",
    "dump_tables",
    "events_page",
    "get_run",
    "list_events",
    "list_runs",
    "migrate",
    "read_checkpoint",
    "runs_page",
]
