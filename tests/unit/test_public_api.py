"""Each package's public API, pinned (as temporalio pins its client's exports): a name
added or dropped is a decision, made here on purpose, not by accident."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "schemas": [
        "ConfigError",
        "DecodeError",
        "NatchetError",
        "RunCancelRequested",
        "RunCreated",
        "RunFinished",
        "RunRejected",
        "RunRequested",
        "RunStatus",
        "Scope",
        "StepAssigned",
        "StepDef",
        "StepFinished",
        "StepLog",
        "StepQueued",
        "StepResult",
        "StepRetryScheduled",
        "SubjectError",
        "Task",
        "Trigger",
        "TriggerKind",
        "WorkerHeartbeat",
        "WorkerStatus",
        "WorkflowDef",
        "decode_json",
        "decode_subject",
        "encode",
        "encode_json",
        "parse",
        "stream_name",
        "utcnow",
    ],
    "eventstore": [
        "RESTART",
        "RETRY",
        "Append",
        "AppendError",
        "Appender",
        "AppendRefusedError",
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
        "direct_get",
        "direct_history",
        "direct_last",
        "dispatcher_filters",
        "ensure_dispatcher_consumer",
        "ensure_snapshot_bucket",
        "ensure_task_consumer",
        "ensure_tenant_stream",
        "follow",
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
        "stream_last_seq",
        "subscribe",
        "task_consumer_name",
        "tls_context",
        "to_record",
    ],
    "dispatcher": [
        "Dispatcher",
        "Event",
        "Output",
        "RunState",
        "State",
        "StepState",
        "complete",
        "decide",
        "due",
        "event_run_id",
        "fit",
        "fold",
        "fold_all",
        "step",
    ],
    "projector": [
        "PENDING",
        "CursorError",
        "Page",
        "TABLES",
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
    ],
    "worker": [
        "AdminClient",
        "ClientConfig",
        "ClientSettings",
        "Context",
        "EventClient",
        "Hatchet",
        "NonRetryableError",
        "PushedEvent",
        "Worker",
        "WorkerSettings",
        "WorkflowRunError",
        "WorkflowRunRef",
    ],
}


@pytest.mark.parametrize("package", list(PUBLIC))
def test_public_api_is_pinned(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(PUBLIC[package])
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.{name} is exported but missing"


def test_every_error_shares_the_root() -> None:
    import eventstore
    import schemas
    import worker

    errors = [getattr(eventstore, n) for n in PUBLIC["eventstore"] if n.endswith("Error")]
    errors += [schemas.DecodeError, schemas.SubjectError, worker.WorkflowRunError]
    for error in errors:
        assert issubclass(error, schemas.NatchetError), error
