"""Declaring workflows: ``@hatchet.workflow`` on a class, ``@hatchet.step`` on its methods;
the wire definition both this and the v1 API (:mod:`worker.tasks`) build."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from eventstore import ConfigError
from eventstore.cronexpr import expression_problem
from schemas.concurrency import ConcurrencyDef
from schemas.definition import workflow_version
from schemas.filters import compile_filter
from schemas.labels import DesiredWorkerLabel, StickyStrategy
from schemas.messages import StepDef, WorkflowDef
from schemas.priority import priority_problem
from schemas.ratelimits import RateLimitDef
from schemas.subjects import SubjectError, check_event_pattern, check_name
from worker.labels import check_desired

STEP_ATTR = "_natchet_step"
WORKFLOW_ATTR = "_natchet_workflow"

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

Duration = float | int | str | dt.timedelta
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(value: Duration, what: str) -> float:
    """``30``, ``"30s"``, ``"5m"`` or a ``timedelta`` as seconds."""
    if isinstance(value, dt.timedelta):
        out = value.total_seconds()
    elif isinstance(value, int | float):
        out = float(value)
    else:
        m = _DURATION_RE.match(value.strip())
        if not m:
            raise ConfigError(f"{what}={value!r}: use seconds, or a string like '30s', '5m', '1h'")
        out = float(m.group(1)) * _UNIT_S[m.group(2)]
    if out <= 0:
        raise ConfigError(f"{what} must be positive, not {value!r}")
    return out


@attrs.frozen
class StepSpec:
    """What ``@hatchet.step(...)`` recorded on a method."""

    parents: tuple[str, ...]
    timeout_s: float
    retries: int
    backoff_factor: float | None
    backoff_max_s: float | None
    on_failure: bool = False
    on_success: bool = False
    rate_limits: tuple[RateLimitDef, ...] = ()
    desired_worker_labels: dict[str, DesiredWorkerLabel] = attrs.field(factory=dict)
    concurrency: ConcurrencyDef | None = None  # the step's own (checked), issue 15


def step(
    parents: Sequence[str] = (),
    timeout: Duration = 60,
    retries: int = 0,
    backoff_factor: float | None = None,
    backoff_max_seconds: float | None = None,
    rate_limits: tuple[RateLimitDef, ...] = (),
    desired_worker_labels: Mapping[str, DesiredWorkerLabel] | None = None,
    concurrency: ConcurrencyDef | None = None,
) -> Callable[[F], F]:
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, not {retries}")
    spec = StepSpec(
        parents=tuple(parents),
        timeout_s=seconds(timeout, "timeout"),
        retries=retries,
        backoff_factor=backoff_factor,
        backoff_max_s=backoff_max_seconds,
        rate_limits=rate_limits,
        desired_worker_labels=check_desired(desired_worker_labels, "step"),
        concurrency=concurrency,
    )

    def mark(fn: F) -> F:
        setattr(fn, STEP_ATTR, spec)
        return fn

    return mark


def on_failure_step(timeout: Duration = 60) -> Callable[[F], F]:
    """The step that runs when the run fails; ``context.step_run_errors()`` says why."""
    spec = StepSpec(
        parents=(),
        timeout_s=seconds(timeout, "timeout"),
        retries=0,
        backoff_factor=None,
        backoff_max_s=None,
        on_failure=True,
    )

    def mark(fn: F) -> F:
        setattr(fn, STEP_ATTR, spec)
        return fn

    return mark


def on_success_step(timeout: Duration = 60, retries: int = 0) -> Callable[[F], F]:
    """The step that runs once every other step succeeded, before the run is SUCCEEDED
    (its failure fails the run); ``context.task_output(step)`` reads any step's output."""
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, not {retries}")
    spec = StepSpec(
        parents=(),
        timeout_s=seconds(timeout, "timeout"),
        retries=retries,
        backoff_factor=None,
        backoff_max_s=None,
        on_success=True,
    )

    def mark(fn: F) -> F:
        setattr(fn, STEP_ATTR, spec)
        return fn

    return mark


def _special(name: str, specs: dict[str, StepSpec], which: str) -> StepDef | None:
    """The workflow's on-failure or on-success step (``which``), taken out of ``specs``."""
    found = [n for n, sp in specs.items() if getattr(sp, which)]
    if len(found) > 1:
        what = which.replace("_", "-")
        raise ConfigError(f"workflow {name} has more than one {what} step: {found}")
    return _step_def(found[0], specs.pop(found[0])) if found else None


def _step_def(name: str, spec: StepSpec) -> StepDef:
    return StepDef(
        name=name,
        parents=spec.parents,
        timeout_s=spec.timeout_s,
        retries=spec.retries,
        backoff_factor=spec.backoff_factor,
        backoff_max_s=spec.backoff_max_s,
        rate_limits=spec.rate_limits,
        desired_worker_labels=spec.desired_worker_labels,
        concurrency=spec.concurrency,
    )


def check_priority(value: int | None, what: str = "default_priority") -> int | None:
    problem = priority_problem(value, what)
    if problem is not None:
        raise ConfigError(problem)
    return value


@attrs.frozen
class WorkflowSpec:
    """What ``@hatchet.workflow(...)`` recorded on a class, with its steps resolved."""

    definition: WorkflowDef
    functions: dict[str, Callable[..., Any]]
    # ``on_crons``: cron expressions the worker keeps as crons of this workflow when it
    # registers (``worker.register.declare_crons``).
    crons: tuple[str, ...] = ()


def _check_dag(name: str, steps: dict[str, StepSpec]) -> list[str]:
    """Topological order of the steps; a clear error for unknown parents and cycles."""
    for step_name, spec in steps.items():
        for parent in spec.parents:
            if parent not in steps:
                raise ConfigError(
                    f"workflow {name}: step {step_name!r} has unknown parent {parent!r} "
                    f"(steps: {', '.join(sorted(steps))})"
                )
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(steps):
        ready = [s for s in steps if s not in done and set(steps[s].parents) <= done]
        if not ready:
            cycle = sorted(set(steps) - done)
            raise ConfigError(f"workflow {name}: steps {cycle} form a cycle")
        for s in sorted(ready):
            order.append(s)
            done.add(s)
    return order


def definition_of(
    name: str,
    specs: dict[str, StepSpec],
    events: tuple[str, ...],
    schedule_timeout_s: float,
    event_filter: str | None = None,
    concurrency: ConcurrencyDef | None = None,
    sticky: StickyStrategy | None = None,
    default_priority: int | None = None,
) -> WorkflowDef:
    """The wire definition of workflow ``name`` from its steps' specs (the on-failure and
    on-success steps among them, marked): the same for a v0 class and a v1
    ``hatchet.workflow`` object. ``on_success`` and ``event_filter`` are hashed only when
    set (:mod:`schemas.definition`)."""
    specs = dict(specs)
    on_failure = _special(name, specs, "on_failure")
    on_success = _special(name, specs, "on_success")
    if not specs:
        raise ConfigError(f"workflow {name} has only on-failure or on-success steps")
    order = _check_dag(name, specs)
    steps = tuple(_step_def(s, specs[s]) for s in order)
    body = {
        "name": name,
        "steps": [attrs.asdict(s) for s in steps],
        "on_events": list(events),
        "schedule_timeout_s": schedule_timeout_s,
        "on_failure": attrs.asdict(on_failure) if on_failure else None,
        "on_success": attrs.asdict(on_success) if on_success else None,
        "event_filter": event_filter,
        "concurrency": attrs.asdict(concurrency) if concurrency else None,
        "sticky": None if sticky is None else str(sticky),
        "default_priority": default_priority,
    }
    return WorkflowDef(
        name=name,
        version=workflow_version(body),
        steps=steps,
        on_events=events,
        schedule_timeout_s=schedule_timeout_s,
        on_failure=on_failure,
        on_success=on_success,
        event_filter=event_filter,
        concurrency=concurrency,
        sticky=sticky,
        default_priority=default_priority,
    )


def check_events(on_events: Sequence[str]) -> tuple[str, ...]:
    """Event keys and patterns (``order:*``: ``*`` is one or more of any character)."""
    if isinstance(on_events, str):
        raise ConfigError(f"on_events takes a list of keys, not the string {on_events!r}")
    events = tuple(on_events)
    try:
        for key in events:
            check_event_pattern(key)
    except SubjectError as exc:
        raise ConfigError(str(exc)) from None
    return events


def check_event_filter(event_filter: str | None, events: tuple[str, ...]) -> str | None:
    """A CEL filter compiles (``FilterError``, a ConfigError, names the line and column of
    a syntax error) and has events to filter."""
    if event_filter is None:
        return None
    compile_filter(event_filter)
    if not events:
        raise ConfigError("event_filter filters the events of on_events: give on_events too")
    return event_filter


def check_crons(on_crons: Sequence[str]) -> tuple[str, ...]:
    """``on_crons``, each a cron expression (5 fields, or 6 with seconds first, UTC)."""
    if isinstance(on_crons, str):
        raise ConfigError(f"on_crons is a list of expressions, not the string {on_crons!r}")
    crons = tuple(on_crons)
    for expression in crons:
        problem = expression_problem(expression)
        if problem is not None:
            raise ConfigError(f"on_crons: {problem}")
    return crons


def check_workflow_name(name: str) -> None:
    try:
        check_name("workflow", name)
    except SubjectError as exc:
        raise ConfigError(str(exc)) from None


def workflow(
    name: str | None = None,
    on_events: Sequence[str] = (),
    schedule_timeout: Duration = "5m",
    event_filter: str | None = None,
    on_crons: Sequence[str] = (),
    concurrency: ConcurrencyDef | None = None,
    sticky: StickyStrategy | None = None,
    default_priority: int | None = None,
) -> Callable[[C], C]:
    default_priority = check_priority(default_priority)
    events = check_events(on_events)
    event_filter = check_event_filter(event_filter, events)
    crons = check_crons(on_crons)
    schedule_timeout_s = seconds(schedule_timeout, "schedule_timeout")

    def mark(cls: C) -> C:
        wf_name = name or cls.__name__
        check_workflow_name(wf_name)
        specs: dict[str, StepSpec] = {}
        functions: dict[str, Callable[..., Any]] = {}
        for attr_name in dir(cls):
            fn = getattr(cls, attr_name)
            spec = getattr(fn, STEP_ATTR, None)
            if isinstance(spec, StepSpec):
                specs[attr_name] = spec
                functions[attr_name] = fn
        if not specs:
            raise ConfigError(
                f"workflow {wf_name} has no steps: decorate methods with @hatchet.step()"
            )
        definition = definition_of(
            wf_name,
            specs,
            events,
            schedule_timeout_s,
            event_filter,
            concurrency,
            sticky,
            default_priority,
        )
        setattr(cls, WORKFLOW_ATTR, WorkflowSpec(definition, functions, crons))
        return cls

    return mark


def spec_of(obj: object) -> WorkflowSpec:
    spec = getattr(obj, WORKFLOW_ATTR, None)
    if not isinstance(spec, WorkflowSpec):
        raise ConfigError(
            f"{obj!r} is not a workflow: decorate its class with @hatchet.workflow(...)"
        )
    return spec
