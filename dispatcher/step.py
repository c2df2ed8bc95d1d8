"""The dispatcher's whole transition, pure: decide on an input, keep the decision within
what the log can store, fold it all into state.

The service does the same in parts: it folds each decision at once (the next input of its
batch must see it), appends the batch's outputs together, and stops if an append fails, so
its state is rebuilt from what the log holds; tests and property checks call :func:`step`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from dispatcher.admission import admissions
from dispatcher.crons import TRIGGER_MESSAGES
from dispatcher.decide import Output, decide, finish_run
from dispatcher.firing import Fire, decide_trigger
from dispatcher.flowgates import FLOW_GATES
from dispatcher.folding import fold
from dispatcher.holds import Gate, Seen, gate, release
from dispatcher.placing import placement_gate
from dispatcher.policy import iso
from dispatcher.ratelimits import rate_limit_gate
from dispatcher.replay import Replay, decide_replay
from dispatcher.state import State
from schemas.messages import RunCreated, RunRejected
from schemas.subjects import Scope, parse

# Flow control's gates, in order (``dispatcher.holds``): every task offered passes them.
# The order matters: step concurrency and priority (``dispatcher.flowgates``), then rate
# limits (a task they hold takes no units: units are taken when its task is folded), then
# placement last (it counts the slot it takes on the worker it picks as it lets the task go).
GATES: Sequence[Gate] = (*FLOW_GATES, rate_limit_gate, placement_gate)


def fold_all(
    state: State, scope: Scope | None, message: object, outputs: list[Output], seq: int = 0
) -> None:
    """Fold an input (when there is one: a tick has none; ``seq``: its stream sequence, 0
    when not known) and then its decision."""
    if scope is not None:
        fold(state, scope, message, seq)
    for out in outputs:
        fold(state, parse(out.subject).scope, out.message)


def live(state: State, outputs: list[Output]) -> list[Output]:
    """``outputs`` but those of runs already over. A tick's decisions (``due``), a
    restart's (``complete``) and moves are all made before the first is folded; folding
    one can end another run (a step key's ``CANCEL_*`` strategy), whose decision made
    before that is then stale: a second end, or a task, of a run over. (A decision on an
    input is made just before it is folded: never stale, not filtered.)"""
    done = state.done
    if not done:
        return outputs
    return [o for o in outputs if getattr(o.message, "run_id", None) not in done]


def fit(state: State, outputs: list[Output], max_bytes: int, now: dt.datetime) -> list[Output]:
    """``outputs``, unless a message of some run is larger than ``max_bytes`` (the log
    would refuse it forever, and every input behind it would wait): then that run's part of
    the decision becomes its recorded end instead. A run this decision creates is rejected;
    a run in flight ends FAILED. The reason names the size and the limit."""
    too_large: dict[str, Output] = {}
    for out in outputs:
        if len(out.body) > max_bytes:
            too_large.setdefault(getattr(out.message, "run_id", ""), out)
    if not too_large:
        return outputs
    kept: list[Output] = []
    replaced: set[str] = set()
    for out in outputs:
        run_id = getattr(out.message, "run_id", None)
        if run_id not in too_large:
            kept.append(out)
        elif run_id not in replaced:
            replaced.add(run_id)
            kept += _refused(state, outputs, too_large[run_id], max_bytes, now)
    return kept


def _refused(
    state: State, outputs: list[Output], big: Output, max_bytes: int, now: dt.datetime
) -> list[Output]:
    run_id = big.message.run_id
    kind = big.subject.rsplit(".", 1)[-1] if ".runs." in big.subject else "task"
    what = getattr(big.message, "step", None)
    reason = (
        f"its {kind} message{f' for step {what!r}' if what else ''} would be "
        f"{len(big.body):,} bytes, over the {max_bytes:,}-byte limit of one message: the "
        "run's input or a step's output is too large to record"
    )
    scope = parse(big.subject).scope
    created = next(
        (
            o.message
            for o in outputs
            if isinstance(o.message, RunCreated) and o.message.run_id == run_id
        ),
        None,
    )
    run = state.run(scope, run_id)
    if created is not None or run is None:
        workflow = created.workflow if created is not None else ""
        rejected = RunRejected(run_id=run_id, workflow=workflow, reason=reason, at=iso(now))
        return [Output(scope.run(run_id, "rejected"), rejected, f"{run_id}:rejected")]
    return finish_run(run, reason, now)


def decide_on(state: State, scope: Scope, message: object, now: dt.datetime) -> list[Output]:
    """``decide``, or, for a replay request resolved by the service, ``decide_replay``; for
    a cron's or schedule's record or a timer's fire, ``decide_trigger``."""
    if isinstance(message, (*TRIGGER_MESSAGES, Fire)):
        return decide_trigger(state, scope, message, now)
    if isinstance(message, Replay):
        return decide_replay(state, scope, message, now)
    return decide(state, scope, message, now)


def step(
    state: State, scope: Scope, message: object, now: dt.datetime, max_bytes: int, seq: int = 0
) -> list[Output]:
    """Decide on ``message`` (of ``scope``, at stream sequence ``seq``), keep the decision
    storable, fold both; return what to append."""
    outputs = decide_on(state, scope, message, now)
    return settle(state, scope, message, outputs, max_bytes, now, seq)


def settle(
    state: State,
    scope: Scope | None,
    message: object,
    outputs: list[Output],
    max_bytes: int,
    now: dt.datetime,
    seq: int = 0,
    seen: Seen | None = None,
    fitted: Callable[[list[Output]], None] | None = None,
) -> list[Output]:
    """Keep a decision storable (``fit``) and fold it, with its input, into state, its
    tasks through the gates; return what to append. The second half of :func:`step`, which
    the service calls after deciding (a tick's decisions have no input: ``scope`` None).
    ``fitted`` is shown the decision once storable, before anything of it is folded;
    ``seen`` what the gates and admissions add to it, before each is folded
    (``dispatcher.holds.gate``)."""
    if message is None:  # made with others before any was folded: it may be stale
        outputs = live(state, outputs)
    outputs = fit(state, outputs, max_bytes, now)
    if fitted is not None:
        fitted(outputs)
    outputs = fold_gated(state, scope, message, outputs, now, seq, seen)
    return outputs + admit(state, max_bytes, now, seen)


def fold_gated(
    state: State,
    scope: Scope | None,
    message: object,
    outputs: list[Output],
    now: dt.datetime,
    seq: int = 0,
    seen: Seen | None = None,
) -> list[Output]:
    """Fold the input (if any), then the decision, each task through the gates
    (``dispatcher.holds.gate``); return what to append."""
    if scope is not None:
        fold(state, scope, message, seq)
    return gate(state, outputs, now, GATES, seen)


def admit(state: State, max_bytes: int, now: dt.datetime, seen: Seen | None = None) -> list[Output]:
    """The held tasks that may go now (``release``), then the admissions a folded decision
    makes room for (``dispatcher.admission``), kept storable and folded in turn; appended
    after the decision that made the room. Held tasks first: they were in line before the
    runs admitted now (room back in a rate limit's window went to a run admitted in the
    same decision, ahead of an older run of its key held by the limit). ``seen`` is shown
    each admission before it is gated, and what gating adds."""
    out: list[Output] = []
    for decision in release(state, now, GATES, seen):
        out += decision
    for decided in admissions(state, now):
        fitted = fit(state, decided, max_bytes, now)
        if seen is not None:
            seen(fitted, [])
        out += gate(state, fitted, now, GATES, seen)
    return out
