"""A worker's Prometheus metrics, served on ``/metrics`` when the health endpoint is on.

Each worker has its own registry (several workers may share a process, as tests do), with
the process and GC collectors Hatchet's ``/metrics`` also shows. Labels are bounded: the
tenant, namespace and worker name are fixed for the worker's life, and workflows and steps
are those registered on it (known at start); no run ids, no worker ids (a new one each
start) but in ``natchet_worker_info``.

| metric | type | labels |
|---|---|---|
| ``natchet_worker_info`` | info | tenant, namespace, worker, worker_id, sdk_version, protocol |
| ``natchet_worker_slots`` | gauge: ``max_runs`` | tenant, namespace, worker |
| ``natchet_worker_slots_used`` | gauge: steps running | tenant, namespace, worker |
| ``natchet_worker_slots_available`` | gauge | tenant, namespace, worker |
| ``natchet_worker_steps_started_total`` | counter | ... and workflow, step |
| ``natchet_worker_steps_finished_total`` | counter | ... and workflow, step, outcome |
| ``natchet_worker_step_duration_seconds`` | histogram | ... and workflow, step |
| ``natchet_worker_event_loop_blocked_seconds`` | gauge | tenant, namespace, worker |
| ``natchet_worker_nats_connected`` | gauge: 1 or 0 | tenant, namespace, worker |
| ``natchet_worker_healthy`` | gauge: 1 or 0, as ``/health`` | tenant, namespace, worker |

``outcome`` is ``succeeded``, ``failed``, ``cancelled`` (the run ended first) or
``handed_back`` (the worker stopped first; another worker runs it) or ``suspended`` (a
durable step waits, its slot given back).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from worker.vitals import Vitals

OUTCOMES = ("succeeded", "failed", "cancelled", "handed_back", "suspended")
WORKER_LABELS = ("tenant", "namespace", "worker")
STEP_LABELS = (*WORKER_LABELS, "workflow", "step")


class WorkerMetrics:
    def __init__(
        self,
        *,
        tenant: str,
        namespace: str,
        worker: str,
        worker_id: str,
        sdk_version: str,
        protocol: int,
        max_runs: int,
        running: Callable[[], int],
        vitals: Vitals,
    ) -> None:
        self.registry = r = CollectorRegistry()
        process_collector.ProcessCollector(registry=r)
        gc_collector.GCCollector(registry=r)
        platform_collector.PlatformCollector(registry=r)
        self._worker = (tenant, namespace, worker)
        info = Info("natchet_worker", "The worker and the versions it runs", registry=r)
        info.info(
            {
                "tenant": tenant,
                "namespace": namespace,
                "worker": worker,
                "worker_id": worker_id,
                "sdk_version": sdk_version,
                "protocol": str(protocol),
            }
        )

        def gauge(name: str, doc: str, value: Callable[[], float]) -> None:
            Gauge(name, doc, WORKER_LABELS, registry=r).labels(*self._worker).set_function(value)

        gauge("natchet_worker_slots", "Steps the worker runs at once (max_runs)", lambda: max_runs)
        gauge("natchet_worker_slots_used", "Steps running now", running)
        gauge(
            "natchet_worker_slots_available",
            "Slots free for more steps",
            lambda: max(0, max_runs - running()),
        )
        gauge(
            "natchet_worker_event_loop_blocked_seconds",
            "How long the event loop has not run (0 when it runs)",
            lambda: vitals.check().loop_blocked_s,
        )
        gauge(
            "natchet_worker_nats_connected",
            "1 while connected to NATS",
            lambda: float(vitals.check().nats_connected),
        )
        gauge(
            "natchet_worker_healthy",
            "1 when /health answers 200",
            lambda: float(vitals.check().healthy),
        )
        self.started = Counter(
            "natchet_worker_steps_started", "Step attempts started", STEP_LABELS, registry=r
        )
        self.finished = Counter(
            "natchet_worker_steps_finished",
            "Step attempts ended, by outcome",
            (*STEP_LABELS, "outcome"),
            registry=r,
        )
        self.duration = Histogram(
            "natchet_worker_step_duration_seconds",
            "How long step attempts ran",
            STEP_LABELS,
            registry=r,
        )

    def step_started(self, workflow: str, step: str) -> None:
        self.started.labels(*self._worker, workflow, step).inc()

    def step_ended(self, workflow: str, step: str, outcome: str, seconds: float) -> None:
        if outcome not in OUTCOMES:
            return
        self.finished.labels(*self._worker, workflow, step, outcome).inc()
        self.duration.labels(*self._worker, workflow, step).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
