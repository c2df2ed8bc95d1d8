"""The natchet worker SDK: Hatchet's Python API on NATS JetStream.

```python
from worker import Hatchet, Context

hatchet = Hatchet()
```

Both Hatchet APIs: v0 (``@hatchet.workflow`` on a class of ``@hatchet.step`` methods) and
v1 (``wf = hatchet.workflow(name=...)``, ``@wf.task``, ``@hatchet.task``).
"""

from worker.bulk import BulkError
from worker.client import (
    AdminClient,
    ClientConfig,
    EventClient,
    Hatchet,
    PushedEvent,
    WorkflowRunRef,
)
from worker.concurrency import ConcurrencyExpression, ConcurrencyLimitStrategy
from worker.context import Context
from worker.durable import OrGroup, SleepCondition, UserEventCondition, or_
from worker.errors import InvalidInputError, NonRetryableError, WorkerFatalError
from worker.labels import DesiredWorkerLabel, StickyStrategy, WorkerContext, WorkerLabelComparator
from worker.models import EmptyModel
from worker.outcome import WorkflowRunError
from worker.ratelimits import RateLimit, RateLimitDuration
from worker.runtime import Worker
from worker.settings import ClientSettings, WorkerSettings
from worker.tasks import Standalone, Task, TaskRunRef, Workflow

__all__ = [
    "AdminClient",
    "BulkError",
    "ClientConfig",
    "ClientSettings",
    "ConcurrencyExpression",
    "ConcurrencyLimitStrategy",
    "Context",
    "DesiredWorkerLabel",
    "DurableContext",
    "EmptyModel",
    "EventClient",
    "Hatchet",
    "InvalidInputError",
    "NonRetryableError",
    "OrGroup",
    "PushedEvent",
    "RateLimit",
    "RateLimitDuration",
    "SleepCondition",
    "Standalone",
    "StickyStrategy",
    "Task",
    "TaskRunRef",
    "UserEventCondition",
    "Worker",
    "WorkerContext",
    "WorkerFatalError",
    "WorkerLabelComparator",
    "WorkerSettings",
    "Workflow",
    "WorkflowRunError",
    "WorkflowRunRef",
    "or_",
]

DurableContext = Context  # Hatchet's name for a durable task's context: the same one
