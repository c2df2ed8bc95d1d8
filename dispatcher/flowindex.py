"""What priority and step-level concurrency count (issue 15): an index over the folded
runs, kept as they are folded (``dispatcher.folding.fold`` calls :func:`track`) and rebuilt
from them after a snapshot is loaded. Not state: it takes no part in equality.

Only runs that use flow control are indexed (a priority, or a step with a concurrency
key): the runs of every other workflow cost one check per message folded.

- **offered** (per scope and workflow): the steps of prioritized runs whose task is out
  with the workers (queued, not held, or running), result not yet folded; a durable step
  waiting in a wait gave its slot back and is not counted.
- **keyed** (per scope, workflow, step and key): the runs whose step with that concurrency
  key is in flight: offered, running, or waiting in a durable wait.
- **held** (per scope and workflow, by priority): the steps of prioritized runs held back.
- **key_held** (per scope, workflow, step and key): the runs whose keyed step is held.
- **age** (per run): the order the indexed runs were created in (the order ``state.runs``
  keeps, a snapshot too), which a step key's ``CANCEL_*`` strategy ranks tasks by: the same
  after a restart as before it, whatever order ``complete`` makes their tasks in.

Whenever a step leaves *offered* or *keyed* (its result folded, its run ended), the held
tasks may go: ``state.holds.dirty`` is set (``dispatcher.holds.release``).
Pure (duck-typed over ``dispatcher.state``'s runs and steps, which import this module).
"""

from __future__ import annotations

import itertools
from typing import Any

from schemas.subjects import Scope

WorkflowId = tuple[Scope, str]  # (scope, workflow)
KeyId = tuple[Scope, str, str, str]  # (scope, workflow, step, key)
StepRef = tuple[str, str]  # (run id, step)

_ACTIVE = ("QUEUED", "RUNNING")


class FlowIndex:
    def __init__(self) -> None:
        self.offered: dict[WorkflowId, set[StepRef]] = {}
        self.keyed: dict[KeyId, set[str]] = {}
        self.held: dict[WorkflowId, dict[int, set[StepRef]]] = {}
        self.key_held: dict[KeyId, set[str]] = {}
        self._born: dict[str, int] = {}  # run id -> its rank in creation order
        self._ages = itertools.count()
        # What each indexed run is in, to take it out again: (map name, id, member).
        self._of_run: dict[str, list[tuple[str, Any, Any]]] = {}

    def clear(self) -> None:
        self.offered.clear()
        self.keyed.clear()
        self.held.clear()
        self.key_held.clear()
        self._born.clear()
        self._of_run.clear()

    def forget(self, run_id: str) -> bool:
        """Take the run out of the index; return whether it left offered or keyed."""
        freed = False
        for kind, ident, member in self._of_run.pop(run_id, ()):
            if kind == "offered":
                _discard(self.offered, ident, member)
                freed = True
            elif kind == "keyed":
                _discard(self.keyed, ident, member)
                freed = True
            elif kind == "key_held":
                _discard(self.key_held, ident, member)
            else:
                by_priority = self.held.get(ident)
                if by_priority is not None:
                    _discard(by_priority, kind_priority(kind), member)
                    if not by_priority:
                        del self.held[ident]
        return freed

    def index(self, run: Any) -> bool:
        """Index the run (in flight) as it is now; return whether a step of it left
        offered or keyed (room was made)."""
        before = {(k, i, m) for k, i, m in self._of_run.get(run.run_id, ()) if k in _ROOMY}
        self.forget(run.run_id)
        if run.run_id not in self._born:  # ``setdefault`` would draw a number every call
            self._born[run.run_id] = next(self._ages)
        entries: list[tuple[str, Any, Any]] = []
        wid = (run.scope, run.workflow)
        for name, step in run.steps.items():
            if step.terminal or step.status is None or step.status.value not in _ACTIVE:
                continue
            held = bool(getattr(step, "held", ()))
            pending_retry = step.retry_due is not None
            key = run.step_keys.get(name)
            if run.priority is not None and not pending_retry:
                if held:
                    entries.append((f"held:{run.priority}", wid, (run.run_id, name)))
                elif step.waiting is None:
                    entries.append(("offered", wid, (run.run_id, name)))
            if key is not None and not pending_retry:
                kid = (run.scope, run.workflow, name, key)
                entries.append(("key_held" if held else "keyed", kid, run.run_id))
        for kind, ident, member in entries:
            if kind == "offered":
                self.offered.setdefault(ident, set()).add(member)
            elif kind == "keyed":
                self.keyed.setdefault(ident, set()).add(member)
            elif kind == "key_held":
                self.key_held.setdefault(ident, set()).add(member)
            else:
                self.held.setdefault(ident, {}).setdefault(kind_priority(kind), set()).add(member)
        if entries:
            self._of_run[run.run_id] = entries
        return bool(before - {(k, i, m) for k, i, m in entries if k in _ROOMY})

    def outstanding(self, wid: WorkflowId, exclude: StepRef) -> int:
        """How many tasks of the workflow are out with its workers (``exclude`` aside)."""
        offered = self.offered.get(wid, ())
        return len(offered) - (exclude in offered)

    def in_flight(self, kid: KeyId, exclude: str) -> int:
        """How many runs have the key's step in flight (``exclude`` aside)."""
        runs = self.keyed.get(kid, ())
        return len(runs) - (exclude in runs)

    def held_at_least(self, wid: WorkflowId, priority: int, exclude: StepRef) -> int:
        """How many steps of the workflow are held with a priority of ``priority`` or
        more (``exclude`` aside): those a new task of that priority must let go first."""
        total = 0
        for p, refs in self.held.get(wid, {}).items():
            if p >= priority:
                total += len(refs) - (exclude in refs)
        return total

    def keyed_runs(self, kid: KeyId) -> set[str]:
        """The runs that have the key's step in flight."""
        return self.keyed.get(kid, set())

    def age(self, run_id: str) -> int:
        """The run's rank in creation order among the indexed runs (lower: older)."""
        return self._born[run_id]

    def over(self, run_id: str) -> bool:
        """The run ended: take it out for good; return whether it left offered or keyed."""
        self._born.pop(run_id, None)
        return self.forget(run_id) if run_id in self._of_run else False

    def others_held(self, kid: KeyId, exclude: str) -> int:
        runs = self.key_held.get(kid, ())
        return len(runs) - (exclude in runs)


_ROOMY = ("offered", "keyed")


def kind_priority(kind: str) -> int:
    return int(kind.split(":", 1)[1])


def _discard(mapping: dict[Any, set[Any]], ident: Any, member: Any) -> None:
    members = mapping.get(ident)
    if members is not None:
        members.discard(member)
        if not members:
            del mapping[ident]


def indexed(run: Any) -> bool:
    """Whether flow control counts the run at all."""
    return run.priority is not None or bool(run.step_keys)


def track(state: Any, scope: Scope, message: object) -> None:
    """After ``message`` is folded: index its run again, if flow control counts it (or
    take it out, once over); when that made room, the held tasks may go."""
    run_id = getattr(message, "run_id", None)
    if not isinstance(run_id, str):
        return
    flow: FlowIndex = state.flow
    run = state.runs.get(run_id)
    if run is None:
        freed = flow.over(run_id)
    elif run.scope != scope or not indexed(run):
        return
    else:
        freed = flow.index(run)
    if freed:
        holds = getattr(state, "holds", None)
        if holds is not None:
            holds.dirty = True


def rebuild(state: Any) -> None:
    """The index from the runs in flight (a snapshot loaded)."""
    state.flow.clear()
    for run in state.runs.values():
        if indexed(run):
            state.flow.index(run)
