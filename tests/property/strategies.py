"""Hypothesis strategies: workflow DAGs and scripts of dispatcher inputs.

A script is a list of abstract actions; :class:`tests.property.harness.Sim` interprets each
one against the state it has reached (``pick`` chooses among the steps then in flight), so
every generated script is meaningful whatever came before it, and shrinks well.
"""

from __future__ import annotations

import enum

import attrs
from hypothesis import strategies as st

from schemas import StepDef, WorkflowDef
from schemas.concurrency import ConcurrencyDef, LimitStrategy
from schemas.ratelimits import RateLimitDef, RateLimitDuration

NAMES = ("a", "b", "c", "d", "e", "f")
ON_FAILURE = "on_fail"
REGISTERED_AT = "2026-01-01T00:00:00.000000+00:00"
# Rate limits: the static one every Sim sets (``STATIC_LIMIT`` units per second), and a
# dynamic one per request (events share one).
STATIC_KEY, STATIC_LIMIT = "k", 2
DYNAMIC_KEY = 'has(input.i) ? string(input.i) : "event"'


class Outcome(enum.Enum):
    OK = "ok"
    ERROR = "error"  # retryable
    NON_RETRYABLE = "non_retryable"
    HANDED_BACK = "handed_back"  # graceful shutdown: another delivery follows
    TIMEOUT = "timeout"  # drain only: nobody picks the step up before its schedule timeout


@attrs.frozen
class Request:
    """A client asks for run ``r<run>`` (twice for the same ``run``: a duplicate request)."""

    run: int


@attrs.frozen
class Reject:
    """A client asks for a run of a workflow nobody registered."""

    run: int


@attrs.frozen
class Trigger:
    """A user event that the workflow listens to (its stream sequence picks the run id)."""


@attrs.frozen
class Assign:
    """A worker takes the current attempt of a step (a redelivery when already taken).
    ``late``: pick among every step ever queued, finished ones included."""

    pick: int
    late: bool = False


@attrs.frozen
class Result:
    """A worker reports on a step: ``stale`` attempts back, from an older delivery when
    ``zombie`` (a worker presumed dead that still answers). ``fast``: a delivery it takes
    for this is done within the worker's grace, so no ``assigned`` precedes the result
    (which carries the assignment, as every result does)."""

    pick: int
    outcome: Outcome
    late: bool = False
    stale: int = 0
    zombie: bool = False
    fast: bool = False


@attrs.frozen
class Cancel:
    pick: int


@attrs.frozen
class Wait:
    """Time passes (``due()`` runs): backoffs come due, schedule timeouts fire."""

    seconds: float


@attrs.frozen
class Suspend:
    """A worker's durable step waits (its next wait): a sleep of ``seconds`` (None: none)
    or the event ``go``, whichever first (at least one of them)."""

    pick: int
    seconds: float | None
    event: bool


@attrs.frozen
class Again:
    """The dispatcher's consumer redelivers an input it already decided (a crash before
    the ack): it must decide nothing."""

    pick: int


@attrs.frozen
class Restart:
    """The dispatcher restarts: its state is rebuilt by folding the log."""


Action = Request | Reject | Trigger | Assign | Result | Cancel | Wait | Suspend | Again | Restart

picks = st.integers(0, 50)
SECONDS = (0.1, 0.5, 1.0, 2.0, 4.0, 10.0, 31.0, 120.0, 301.0)
# Mostly short waits (backoffs come due), now and then long ones (schedule timeouts fire).
waits = st.builds(Wait, st.sampled_from(SECONDS[:5])) | st.builds(Wait, st.sampled_from(SECONDS))


static_limits = st.builds(
    RateLimitDef, static_key=st.just(STATIC_KEY), units=st.integers(1, STATIC_LIMIT)
)
# One definition for the dynamic key: a key's windows are kept as long as the window of
# the uses recorded, so steps sharing a key declare the same limit (docs/flow-control.md).
dynamic_limits = st.just(
    RateLimitDef(dynamic_key=DYNAMIC_KEY, units=1, limit=2, duration=RateLimitDuration.MINUTE)
)
# Most steps use none.
rate_limits = st.one_of(
    st.just(()),
    st.just(()),
    st.just(()),
    st.lists(static_limits | dynamic_limits, min_size=1, max_size=2).map(tuple),
)


# Concurrency keys: one key for every run, or a key per request (events share one).
KEYS = ('"k"', 'has(input.i) ? string(input.i) : "event"')
concurrency = st.none() | st.builds(
    ConcurrencyDef, st.sampled_from(KEYS), st.integers(1, 2), st.sampled_from(list(LimitStrategy))
)
# A step's own key (issue 15): most steps have none.
step_concurrency = st.one_of(st.none(), st.none(), st.none(), concurrency)


def step_defs(name: str, earlier: tuple[str, ...]) -> st.SearchStrategy[StepDef]:
    return st.builds(
        StepDef,
        name=st.just(name),
        parents=st.lists(st.sampled_from(earlier), unique=True, max_size=3)
        if earlier
        else st.just([]),
        timeout_s=st.just(60.0),
        retries=st.integers(0, 2),
        backoff_factor=st.none() | st.sampled_from([0.5, 1.0, 2.0, 10.0]),
        backoff_max_s=st.none() | st.sampled_from([1.0, 30.0]),
        rate_limits=rate_limits,
        concurrency=step_concurrency,
    )


@st.composite
def workflows(draw: st.DrawFn) -> WorkflowDef:
    """1-6 steps; parents only among earlier names (no cycles), listed in any order."""
    n = draw(st.integers(1, len(NAMES)))
    steps = [draw(step_defs(name, NAMES[:i])) for i, name in enumerate(NAMES[:n])]
    return WorkflowDef(
        name="wf",
        version="v1",
        steps=tuple(draw(st.permutations(steps))),
        on_events=("go",),
        on_failure=draw(st.none() | step_defs(ON_FAILURE, ())),
        schedule_timeout_s=draw(st.sampled_from([5.0, 30.0, 300.0, 300.0])),
        registered_at=REGISTERED_AT,
        concurrency=draw(concurrency),
    )


outcomes = st.sampled_from([Outcome.OK, Outcome.ERROR, Outcome.NON_RETRYABLE, Outcome.HANDED_BACK])

actions: st.SearchStrategy[Action] = st.one_of(
    st.builds(Request, st.integers(0, 1)),
    st.builds(Reject, st.integers(0, 1)),
    st.builds(Trigger),
    st.builds(Assign, picks),
    st.builds(Assign, picks, st.booleans()),
    st.builds(Result, picks, outcomes),
    st.builds(Result, picks, outcomes, fast=st.just(True)),
    st.builds(
        Result, picks, outcomes, st.booleans(), st.integers(0, 2), st.booleans(), st.booleans()
    ),
    st.builds(Result, picks, outcomes, st.just(False), st.integers(1, 2)),  # stale, in flight
    st.builds(Cancel, picks),
    st.builds(Suspend, picks, st.none() | st.sampled_from(SECONDS[:5]), st.booleans()),
    waits,
    waits,
    st.builds(Again, picks),
    st.builds(Restart),
)

# A script starts with a request most of the time, so most examples have a run to drive.
scripts = st.tuples(st.booleans(), st.lists(actions, max_size=60)).map(
    lambda t: [Request(0), *t[1]] if t[0] else t[1]
)

# How the drain answers whatever is still queued, in turn.
drain_outcomes = st.lists(
    st.sampled_from(
        [Outcome.OK, Outcome.OK, Outcome.ERROR, Outcome.NON_RETRYABLE, Outcome.TIMEOUT]
    ),
    min_size=1,
    max_size=6,
)
