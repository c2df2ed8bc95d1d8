"""The natchet worker SDK: Hatchet's Python API on NATS JetStream.

```python
from worker import Hatchet, Context

hatchet = Hatchet()
```
"""

from worker.client import (
    AdminClient,
    ClientConfig,
    EventClient,
    Hatchet,
    PushedEvent,
    WorkflowRunError,
    WorkflowRunRef,
)
from worker.context import Context
from worker.errors import NonRetryableError, WorkerFatalError
from worker.runtime import Worker
from worker.settings import ClientSettings, WorkerSettings

__all__ = [
    "AdminClient",
    "ClientConfig",
    "ClientSettings",
    "Context",
    "EventClient",
    "Hatchet",
    "NonRetryableError",
    "PushedEvent",
    "Worker",
    "WorkerFatalError",
    "WorkerSettings",
    "WorkflowRunError",
    "WorkflowRunRef",
]
