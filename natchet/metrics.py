"""The engine's Prometheus metrics (``docs/operating.md`` lists them all).

One :class:`EngineMetrics` per engine, on its own registry (two engines in one process, as in
the tests, never share a series). Three kinds of value:

- **Counted from the log.** The task counters, the queue-wait histogram and the decision
  latency are fed by the dispatcher once the log has acknowledged its appends
  (``dispatcher.tally``), so they count what the read model folds. Append errors and the
  auth callout's answers are counted as they happen.
- **Sampled at scrape.** Queue depth, worker slots, pending tasks per workflow and how far
  the dispatcher and the projector lag the log are read from NATS and Postgres when
  ``/metrics`` is scraped (``natchet.probe``), and exported as they stand then, so a
  workflow or namespace that is gone leaves no stale series behind.
- **Hatchet's spelling.** Hatchet's ``hatchet_reassigned_tasks`` and
  ``hatchet_scheduling_timed_out`` are counters without the ``_total`` suffix that
  ``prometheus_client`` adds; they are exported under those exact names (typed ``unknown``,
  which PromQL treats like a counter), so Hatchet's dashboards find them.

Process model: ``natchet engine`` runs the dispatcher and the auth callout in its own process
and the projector in a child (``natchet.projector_process``). Everything counted happens in
the parent; what the child does is measured from outside it (its checkpoint in Postgres
against the log), so the parent alone serves ``/metrics`` and needs no multiprocess mode.

Labels are bounded: tenant, namespace and workflow (names registered by the tenant's own
workers), and fixed words (outcome, reason). Never run, step-attempt or worker ids.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dispatcher.tally import Tally

TASK = ("tenant", "namespace", "workflow")

WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 300)
DECISION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# What ``dispatcher.tally`` counts, and the counter each goes to.
_TASK_COUNTERS = {
    "created": ("hatchet_created_tasks", "Tasks created: steps offered to workers (attempt 1)"),
    "succeeded": ("hatchet_succeeded_tasks", "Tasks that succeeded"),
    "failed": ("hatchet_failed_tasks", "Tasks that failed for good (retries not counted)"),
    "retried": ("hatchet_retried_tasks", "Retries decided (one per new attempt)"),
    "cancelled": ("hatchet_cancelled_tasks", "Tasks cancelled (a step offered, then cancelled)"),
    "held": (
        "natchet_held_tasks",
        "Tasks held back by flow control (a rate limit with no room...), once per attempt "
        "and reason",
    ),
    "moved": (
        "natchet_moved_tasks",
        "Tasks moved off a worker that went (dead, or stopping) before their step ended, "
        "offered again in the same attempt",
    ),
}
# Hatchet's counters spelled without ``_total``.
_EXACT = {
    "reassigned": (
        "hatchet_reassigned_tasks",
        "Tasks a worker took after another worker had taken them (a dead worker's "
        "redelivery, or a task handed back on shutdown)",
    ),
    "timed_out": (
        "hatchet_scheduling_timed_out",
        "Tasks failed because no worker picked them up within schedule_timeout",
    ),
}


@attrs.frozen
class Sampled:
    """The gauges of one scrape (``natchet.probe``), by label values."""

    queue_depth: dict[tuple[str, str], int] = attrs.Factory(dict)  # (tenant, namespace)
    pending: dict[tuple[str, str, str], int] = attrs.Factory(dict)  # (tenant, ns, workflow)
    slots: dict[tuple[str, str], tuple[int, int]] = attrs.Factory(dict)  # (total, used)
    dispatcher_lag: dict[str, tuple[int, float]] = attrs.Factory(dict)  # (messages, s)
    projector_lag: dict[str, tuple[int, float]] = attrs.Factory(dict)


class EngineMetrics:
    """The engine's metrics: a :class:`dispatcher.tally.Observer` for its dispatchers, the
    auth callout's ``on_decision``, and the sink of each scrape's samples."""

    def __init__(self) -> None:
        # No ``*_created`` series (process-wide): Hatchet has none, and they double the output.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tasks = {
            what: Counter(name, doc, TASK, registry=r)
            for what, (name, doc) in _TASK_COUNTERS.items()
        }
        self.exact: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        self.queued_to_assigned = Histogram(
            "hatchet_queued_to_assigned_time_seconds",
            "Seconds from a task being queued to a worker starting it (each attempt's first)",
            TASK,
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.decision = Histogram(
            "natchet_dispatcher_decision_seconds",
            "Seconds from the log storing an input (event, request, result) to the log "
            "acknowledging the dispatcher's decision on it",
            ["tenant"],
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.append_errors = Counter(
            "natchet_append_errors",
            "Appends of the dispatcher that failed, by reason (log_full, refused, "
            "permission_denied, unacknowledged)",
            ["tenant", "reason"],
            registry=r,
        )
        self.callout = Counter(
            "natchet_callout_decisions",
            "Answers of the auth callout to connecting clients: outcome accepted or refused, "
            "with the reason",
            ["tenant", "outcome", "reason"],
            registry=r,
        )
        self.sampled = Sampled()
        # The units this engine holds the lease of, as (tenant, component, partition)
        # (natchet.leases; partition "" for a tenant's whole dispatch and its projector).
        self.leases_held: Callable[[], Iterable[tuple[str, str, str]]] = list
        r.register(_Collected(self))

    # dispatcher.tally.Observer
    def stored(self, tenant: str, tally: Tally) -> None:
        for (what, namespace, workflow), n in tally.counts.items():
            counter = self.tasks.get(what)
            if counter is not None:
                counter.labels(tenant, namespace, workflow).inc(n)
            elif what in _EXACT:
                self.exact[what, tenant, namespace, workflow] += n
        for namespace, workflow, seconds in tally.waits:
            self.queued_to_assigned.labels(tenant, namespace, workflow).observe(seconds)

    def decided(self, tenant: str, seconds: Iterable[float]) -> None:
        histogram = self.decision.labels(tenant)
        for s in seconds:
            histogram.observe(s)

    def append_failed(self, tenant: str, reason: str) -> None:
        self.append_errors.labels(tenant, reason).inc()

    # natchet.tenancy.callout.OnDecision
    def callout_decided(self, tenant: str, outcome: str, reason: str) -> None:
        self.callout.labels(tenant, outcome, reason).inc()


class _Collected(Collector):
    """What is not a ``prometheus_client`` metric object: the sampled gauges and Hatchet's
    two counters without ``_total``."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # no fixed set of series: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        for what, (name, doc) in _EXACT.items():
            family = Metric(name, doc, "unknown")
            for (w, tenant, namespace, workflow), n in m.exact.items():
                if w == what:
                    family.add_sample(
                        name, {"tenant": tenant, "namespace": namespace, "workflow": workflow}, n
                    )
            yield family
        yield _gauge(
            "natchet_lease_held",
            "1 for each unit (a tenant's dispatch, a partition of it, or its project) whose "
            "lease this process holds and so runs (natchet engine: its projector process "
            "holds the project leases)",
            ("tenant", "component", "partition"),
            [(unit, 1) for unit in m.leases_held()],
        )
        s = m.sampled
        yield _gauge(
            "natchet_queue_depth",
            "Tasks waiting for a worker (queued, not taken), per tenant and namespace",
            ("tenant", "namespace"),
            s.queue_depth.items(),
        )
        yield _gauge(
            "natchet_workflow_pending_tasks",
            "Tasks waiting in a workflow's queue group (its pull consumer's num_pending)",
            TASK,
            s.pending.items(),
        )
        slots = s.slots.items()
        for name, doc, values in (
            (
                "hatchet_tenant_worker_slots",
                "Slots of the workers alive (each worker's max_runs)",
                [(k, total) for k, (total, _used) in slots],
            ),
            (
                "hatchet_tenant_used_worker_slots",
                "Slots of the workers alive that are running a step",
                [(k, used) for k, (_total, used) in slots],
            ),
            (
                "hatchet_tenant_available_worker_slots",
                "Free slots of the workers alive",
                [(k, max(total - used, 0)) for k, (total, used) in slots],
            ),
        ):
            yield _gauge(name, doc, ("tenant", "namespace"), values)
        for part, lags in (("dispatcher", s.dispatcher_lag), ("projector", s.projector_lag)):
            yield _gauge(
                f"natchet_{part}_lag_messages",
                f"Messages of the log the {part} has not yet "
                + ("decided on" if part == "dispatcher" else "applied to Postgres"),
                ("tenant",),
                [((t,), v[0]) for t, v in lags.items()],
            )
            yield _gauge(
                f"natchet_{part}_lag_seconds",
                f"Age of the oldest message of the log the {part} has not yet handled (0: "
                "caught up)",
                ("tenant",),
                [((t,), v[1]) for t, v in lags.items()],
            )


def _gauge(
    name: str, doc: str, labels: tuple[str, ...], values: Iterable[tuple[tuple[str, ...], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for key, value in sorted(values):
        family.add_metric(list(key), value)
    return family
