"""``natchet audit``'s entries, from stored records: no input stops the audit."""

from __future__ import annotations

from eventstore import Record
from natchet.audit import decoded, entries
from schemas import encode
from schemas.messages import StepLog, StepResult


def record(seq: int, subject: str, data: bytes) -> Record:
    return Record(seq, subject, data)


def test_an_event_that_is_not_json_and_a_message_that_does_not_decode_are_still_shown() -> None:
    stored = [
        record(1, "acme.default.events.user:create", b"not json"),
        record(2, "acme.default.runs.r1.result", b'{"run_id": "other"}'),
    ]
    [event, bad], _ = entries((r, decoded(r)) for r in stored)
    assert event["actor"]["role"] == "publisher" and "not json" in event["summary"]
    assert bad["kind"] == "result" and bad["actor"] is None and bad["error"]


def test_a_log_line_is_credited_to_the_worker_its_attempts_result_names() -> None:
    log = StepLog(run_id="r1", step="s", attempt=1, delivery=2, line="hi")
    result = StepResult(
        run_id="r1", step="s", attempt=1, delivery=2, worker_id="w9", ok=True, worker_name="nine"
    )
    stored = [
        record(1, "acme.default.runs.r1.log", encode(log)),
        record(2, "acme.default.runs.r1.result", encode(result)),
    ]
    lines, attempts = entries((r, decoded(r)) for r in stored)
    assert lines[0]["actor"] == {"role": "worker", "id": "w9", "name": "nine"}
    [row] = attempts.rows.values()
    assert (row["delivery"], row["assignment_from"], row["status"]) == (2, "result", "SUCCEEDED")
