"""Wire types, codec and subjects for natchet. Pure: no IO."""

from schemas.codec import DecodeError, decode_json, decode_subject, encode, encode_json
from schemas.messages import (
    RunCreated,
    RunFinished,
    RunRejected,
    RunRequested,
    RunStatus,
    StepAssigned,
    StepDef,
    StepFinished,
    StepLog,
    StepQueued,
    StepResult,
    Task,
    TriggeredBy,
    WorkflowDef,
    utcnow,
)
from schemas.subjects import Scope, SubjectError, parse, stream_name

__all__ = [
    "DecodeError",
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
    "SubjectError",
    "Task",
    "TriggeredBy",
    "WorkflowDef",
    "decode_json",
    "decode_subject",
    "encode",
    "encode_json",
    "parse",
    "stream_name",
    "utcnow",
]
