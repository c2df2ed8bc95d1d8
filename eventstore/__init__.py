"""The only door to JetStream: connections, provisioning, appends, reads and deliveries.

Nothing outside this package imports nats-py: others hold a ``Connection`` opaquely and go
through these functions, which translate every nats-py error into one of ``eventstore``'s
(all :class:`NatchetError`).
"""

from eventstore.append import Append, append, append_atomic
from eventstore.backoff import RESTART, RETRY, Backoff
from eventstore.connection import (
    NatsOptions,
    check_server,
    connect,
    max_message_bytes,
    normalize_url,
    request,
    tls_context,
)
from eventstore.consume import Inputs
from eventstore.directed import directed_consumer_name, ensure_directed_consumer
from eventstore.errors import (
    AppendError,
    AppendRefusedError,
    AuthRefusedError,
    ConfigError,
    ConnectError,
    DuplicateBatchError,
    LogFullError,
    NatchetError,
    PermissionDeniedError,
    ReadError,
    TransportError,
)
from eventstore.lifecycle import Service, run_main
from eventstore.match import Patterns
from eventstore.messages import (
    Connection,
    Delivery,
    Message,
    Subscription,
    ask,
    close,
    publish,
    subscribe,
)
from eventstore.pipeline import Appender
from eventstore.provision import (
    LogGuarantees,
    StreamConfigError,
    StreamLimits,
    TaskConsumerSettings,
    dispatcher_consumer_name,
    dispatcher_filters,
    ensure_dispatcher_consumer,
    ensure_task_consumer,
    ensure_tenant_stream,
    log_guarantees,
    task_consumer_name,
)
from eventstore.pull import Slots, TaskPuller
from eventstore.read import (
    direct_get,
    direct_history,
    direct_last,
    follow,
    last_seq,
    latest,
    replay,
)
from eventstore.records import Record, stream_last_seq, to_record
from eventstore.republish import publish_again
from eventstore.snapshot import SnapshotStore, ensure_snapshot_bucket, snapshot_bucket
from eventstore.stats import (
    QueueStats,
    connected,
    dispatcher_ack_floor,
    heartbeats,
    stored_at,
    task_queues,
)
from eventstore.tail import Tail, read_to_end

__all__ = [
    "RESTART",
    "RETRY",
    "Append",
    "AppendError",
    "AppendRefusedError",
    "Appender",
    "AuthRefusedError",
    "Backoff",
    "ConfigError",
    "ConnectError",
    "Connection",
    "Delivery",
    "DuplicateBatchError",
    "Inputs",
    "LogFullError",
    "LogGuarantees",
    "Message",
    "NatchetError",
    "NatsOptions",
    "Patterns",
    "PermissionDeniedError",
    "QueueStats",
    "ReadError",
    "Record",
    "Service",
    "Slots",
    "SnapshotStore",
    "StreamConfigError",
    "StreamLimits",
    "Subscription",
    "Tail",
    "TaskConsumerSettings",
    "TaskPuller",
    "TransportError",
    "append",
    "append_atomic",
    "ask",
    "check_server",
    "close",
    "connect",
    "connected",
    "direct_get",
    "direct_history",
    "direct_last",
    "directed_consumer_name",
    "dispatcher_ack_floor",
    "dispatcher_consumer_name",
    "dispatcher_filters",
    "ensure_directed_consumer",
    "ensure_dispatcher_consumer",
    "ensure_snapshot_bucket",
    "ensure_task_consumer",
    "ensure_tenant_stream",
    "follow",
    "heartbeats",
    "last_seq",
    "latest",
    "log_guarantees",
    "max_message_bytes",
    "normalize_url",
    "publish",
    "publish_again",
    "read_to_end",
    "replay",
    "request",
    "run_main",
    "snapshot_bucket",
    "stored_at",
    "stream_last_seq",
    "subscribe",
    "task_consumer_name",
    "task_queues",
    "tls_context",
    "to_record",
]
