"""A worker's own task consumer (issue 15): tasks the engine placed on that worker
(``<t>.<ns>.tasks.~direct.<worker_id>.<workflow>.<step>``, :mod:`dispatcher.placement`).

The engine creates it (tenants cannot create consumers) when it first hears a heartbeat of a
worker that says it takes directed tasks (``WorkerHeartbeat.directed``). It lives in the
tenant's task queues beside the workflows' queue groups; its filter never overlaps theirs
(``~direct`` is no workflow's name), as a work-queue stream requires. It goes with its
worker: after ``inactive_s`` without a pull request the server deletes it.
"""

from __future__ import annotations

from nats.aio.client import Client as Connection

from eventstore.provision import TaskConsumerSettings, task_consumer_config
from eventstore.snapshot import translated
from schemas.subjects import Scope, check_name, tasks_stream_name

# A worker pulls every 2 s while it runs; a minute without a request and it is gone.
INACTIVE_S = 60.0
DEFAULT_SETTINGS = TaskConsumerSettings()


def directed_consumer_name(scope: Scope, worker_id: str) -> str:
    """``<namespace>~direct~<worker_id>``: ``~`` is in no namespace, workflow or worker id,
    so it is never a queue group's name (``<namespace>~<workflow>``) nor another worker's."""
    return f"{scope.namespace}~direct~{check_name('worker id', worker_id)}"


async def ensure_directed_consumer(
    conn: Connection,
    scope: Scope,
    worker_id: str,
    settings: TaskConsumerSettings = DEFAULT_SETTINGS,
    inactive_s: float = INACTIVE_S,
) -> str:
    """Create (or keep) ``worker_id``'s directed consumer; return its name."""
    name = directed_consumer_name(scope, worker_id)
    config = task_consumer_config(
        name, f"tasks placed on worker {worker_id} in {scope.prefix}",
        scope.directed_filter(worker_id), settings, max_waiting=64, inactive_s=inactive_s,
    )  # fmt: skip
    async with translated(f"creating the directed consumer of worker {worker_id}"):
        await conn.jetstream().add_consumer(tasks_stream_name(scope.tenant), config)
    return name
