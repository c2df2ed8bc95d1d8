"""``projector.apply._names``: the runs, runs with durable waits, crons and scheduled runs
a batch's operations name, as four ``isinstance`` passes over the batch name them."""

from __future__ import annotations

import datetime as dt

from eventstore import Record
from projector import ops
from projector.apply import Planned, _names

AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class _Later(ops.Queued):  # a subclass is still a run's operation
    pass


def _passes(
    planned: list[Planned],
) -> tuple[list[str], list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    every = [op for _, p in planned for op in p]
    return (
        sorted({op.run_id for op in every if isinstance(op, ops.RunOp)}),
        sorted({op.run_id for op in every if isinstance(op, ops.Waiting | ops.Woken)}),
        sorted({(o.namespace, o.name) for o in every if isinstance(o, ops.CronChange)}),
        sorted({(o.namespace, o.id) for o in every if isinstance(o, ops.ScheduleChange)}),
    )


def test_names_are_those_of_four_passes() -> None:
    record = Record(1, "t.default.runs.r.created", b"{}")
    planned: list[Planned] = [
        (
            record,
            [ops.Queued(1, "r2", "a", 1, AT), ops.Finished(2, "r1", "SUCCEEDED", True, None, AT)],
        ),
        (record, [ops.Event(3, "default", "k", "{}", None, True, AT)]),
        (
            record,
            [
                ops.Workflow(4, "default", "w", "v1", "{}", "{}", AT),
                ops.Rejection(5, "s", "why", AT),
            ],
        ),
        (record, [ops.CronChange(6, "ns", "c1", "created", "id", AT, run_id="not-a-run")]),
        (record, [ops.ScheduleChange(7, "ns", "s1", "fired", AT, run_id="r9")]),
        (record, [ops.CronChange(8, "a", "c0", "fired", "id", AT), _Later(9, "r0", "a", 1, AT)]),
        (record, []),
        (record, [ops.Queued(10, "r2", "b", 1, AT)]),
        (record, [ops.Woken(11, "r1", "a", 1, 0, 0, "sleep", None, None, None, AT)]),
    ]
    assert _names(planned) == _passes(planned)
    assert _names(planned) == (
        ["r0", "r1", "r2"],
        ["r1"],
        [("a", "c0"), ("ns", "c1")],
        [("ns", "s1")],
    )
    assert _names([]) == ([], [], [], [])
