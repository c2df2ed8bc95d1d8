"""The only door to JetStream: connections, provisioning, appends and replays."""

from eventstore.append import Append, append, append_atomic
from eventstore.connection import NatsOptions, check_server, connect, normalize_url, tls_context
from eventstore.errors import (
    AppendError,
    AppendRefusedError,
    ConfigError,
    ConnectError,
    DuplicateBatchError,
    LogFullError,
    NatchetError,
    PermissionDeniedError,
    ReadError,
)
from eventstore.provision import (
    StreamConfigError,
    StreamLimits,
    TaskConsumerSettings,
    ensure_dispatcher_consumer,
    ensure_task_consumer,
    ensure_tenant_stream,
    task_consumer_name,
)
from eventstore.read import (
    Record,
    direct_history,
    direct_last,
    follow,
    last_seq,
    latest,
    replay,
    to_record,
)

__all__ = [
    "Append",
    "AppendError",
    "AppendRefusedError",
    "ConfigError",
    "ConnectError",
    "DuplicateBatchError",
    "LogFullError",
    "NatchetError",
    "NatsOptions",
    "PermissionDeniedError",
    "ReadError",
    "Record",
    "StreamConfigError",
    "StreamLimits",
    "TaskConsumerSettings",
    "append",
    "append_atomic",
    "check_server",
    "connect",
    "direct_history",
    "direct_last",
    "ensure_dispatcher_consumer",
    "ensure_task_consumer",
    "ensure_tenant_stream",
    "follow",
    "last_seq",
    "latest",
    "normalize_url",
    "replay",
    "task_consumer_name",
    "tls_context",
    "to_record",
]
