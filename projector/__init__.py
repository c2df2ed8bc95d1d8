"""The Postgres read model: migrations, idempotent checkpointed apply, the tailing service
and the queries the CLI and the dashboard use. The only door to Postgres."""

from projector.apply import apply_records
from projector.migrations import TABLES, migrate
from projector.plan import PENDING
from projector.queries import dump_tables, get_run, list_events, list_runs
from projector.runner import Projector, read_checkpoint

__all__ = [
    "PENDING",
    "TABLES",
    "Projector",
    "apply_records",
    "dump_tables",
    "get_run",
    "list_events",
    "list_runs",
    "migrate",
    "read_checkpoint",
]
