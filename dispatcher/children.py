"""Child runs (issue 14): whether a step may spawn the run a request asks for, and which
runs a parent's cancellation ends with it. Pure: reads the folded state, decides nothing.

A child is requested like any run (``runs.<id>.requested``, which tenants may append) with
a CHILD trigger naming its parent run, the parent's step and a key. Since anyone holding the
namespace's credentials can write that, the request is checked, not trusted: the parent
must be a run in flight in the request's own namespace (a message on one namespace's
subjects never reaches another's runs, and ``state.run`` sees only the subject's scope),
its step must exist and not be over, and the run id must be the one
:func:`schemas.children.child_run_id` derives, so a child has exactly one possible id and a
retried parent re-attaches to it. Anything else is rejected, with the reason recorded in
the child's ``rejected``.

A parent cancelled takes its children in flight with it (and theirs), in the same decision:
each child's ``finished`` (CANCELLED) before the parent's, deepest first, so every prefix of
the decision is one the cancel request, delivered again, completes. A parent that fails or
succeeds leaves its children running, as Hatchet does: a child is a run of its own, and
whoever awaited it is gone.
"""

from __future__ import annotations

from dispatcher.state import RunState, State
from schemas.children import child_run_id
from schemas.messages import RunRequested, Trigger, TriggerKind
from schemas.subjects import Scope


def is_spawn(req: RunRequested) -> bool:
    return req.trigger is not None and req.trigger.kind is TriggerKind.CHILD


def spawn_refusal(state: State, scope: Scope, req: RunRequested) -> str | None:
    """Why the child run ``req`` asks for cannot be created, or None when it can."""
    by = req.trigger
    if by is None or not by.run_id or not by.step or by.key is None:
        return "a child run's request must name its parent run, the parent's step and a key"
    parent = state.run(scope, by.run_id)
    if parent is None:
        return (
            f"no run {by.run_id} in flight in {scope.prefix} to be the parent of run "
            f"{req.run_id} (unknown, over, or of another namespace)"
        )
    step = parent.steps.get(by.step)
    if step is None:
        return f"parent run {by.run_id} has no step {by.step!r}"
    if step.terminal:
        return f"step {by.step!r} of parent run {by.run_id} is over ({step.status})"
    expected = child_run_id(scope, by.run_id, by.step, by.key)
    if req.run_id != expected:
        return (
            f"the child of run {by.run_id}, step {by.step!r}, key {by.key!r} has run id "
            f"{expected}, not {req.run_id}"
        )
    return None


def child_trigger(req: RunRequested) -> Trigger:
    """The ``created`` trigger of an accepted spawn: the link, and nothing else."""
    by = req.trigger
    assert by is not None
    return Trigger(TriggerKind.CHILD, run_id=by.run_id, step=by.step, key=by.key)


def descendants(state: State, run: RunState) -> list[RunState]:
    """``run``'s children in flight and theirs, each after its own descendants (deepest
    first), in creation order: the runs its cancellation ends before it."""
    out: list[RunState] = []
    seen = {run.run_id}

    def visit(parent: RunState) -> None:
        for child_id in parent.children:
            child = state.run(parent.scope, child_id)
            if child is None or child_id in seen:
                continue
            seen.add(child_id)
            visit(child)
            out.append(child)

    visit(run)
    return out
