"""OpenTelemetry tracing (NATCHET_TRACING=on), with the SDK's in-memory exporter: one trace
from the publisher through the dispatcher to the worker, run -> step -> attempt, the
context carried in message headers; and off by default, no header written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import eventstore
from natchet.config import EngineSettings
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import stream_name
from tests.conftest import eventually, running
from tests.support import hatchet_for
from worker import Context, NonRetryableError, WorkflowRunError

EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into the in-memory exporter (one provider per process, as OpenTelemetry
    allows: set once, cleared for each test)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    monkeypatch.setenv("NATCHET_TRACING", "on")
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def traced(hatchet: Any) -> Any:
    @hatchet.workflow(name="Traced", on_events=["order:traced"])
    class Traced:
        @hatchet.step()
        async def first(self, context: Context) -> dict[str, Any]:
            with trace.get_tracer("user-code").start_as_current_span("inside first"):
                return {"n": context.workflow_input()["n"]}

        @hatchet.step(parents=["first"])
        def second(self, context: Context) -> dict[str, Any]:  # a sync step: a thread
            with trace.get_tracer("user-code").start_as_current_span("inside second"):
                return {"m": context.step_output("first")["n"] + 1}

    return Traced()


def failing(hatchet: Any) -> Any:
    @hatchet.workflow(name="TracedFailure")
    class TracedFailure:
        @hatchet.step()
        def only(self, context: Context) -> None:
            raise NonRetryableError("no luck")

    return TracedFailure()


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    named = {s.name: s for s in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_from_the_event_through_the_dispatcher_to_each_attempt(
    nats_server: NatsServer, dsn: str, tenant_name: str, spans: InMemorySpanExporter
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("traced-worker", max_runs=2)
    worker.register_workflow(traced(hatchet))
    worker.register_workflow(failing(hatchet))
    async with Engine(EngineSettings(nats_server.url, dsn, (tenant_name,))), running(worker):
        pushed = await hatchet.event.aio_push("order:traced", {"n": 1})
        ref = await hatchet.admin.aio_run_workflow("TracedFailure", {})
        with pytest.raises(WorkflowRunError):
            await ref.result()
        await hatchet.admin.aio_run_workflow("Traced", {"n": 2})  # a second run, by request

        def all_ended() -> bool:
            names = [s.name for s in spans.get_finished_spans()]
            assert sum(n.startswith("natchet.attempt") for n in names) == 5, names
            return True

        await eventually(all_ended, timeout_s=30)
    hatchet.close()

    finished = list(spans.get_finished_spans())
    [event] = [s for s in finished if s.name == "natchet.event order:traced"]
    trace_id = event.context.trace_id
    one = by_name([s for s in finished if s.context.trace_id == trace_id])
    assert set(one) == {
        "natchet.event order:traced",
        "natchet.run Traced",
        "natchet.step first",
        "natchet.attempt first",
        "inside first",
        "natchet.step second",
        "natchet.attempt second",
        "inside second",
    }
    assert event.kind is SpanKind.PRODUCER
    assert event.attributes is not None and event.attributes["natchet.tenant"] == tenant_name
    run = one["natchet.run Traced"]
    assert parent_of(run) == event.context.span_id
    for step in ("first", "second"):
        queued, attempt = one[f"natchet.step {step}"], one[f"natchet.attempt {step}"]
        assert parent_of(queued) == run.context.span_id
        assert parent_of(attempt) == queued.context.span_id
        assert parent_of(one[f"inside {step}"]) == attempt.context.span_id
        assert attempt.kind is SpanKind.CONSUMER
        assert attempt.attributes is not None
        assert attempt.attributes["natchet.step"] == step
        assert attempt.attributes["natchet.worker"] == "traced-worker"
        assert attempt.attributes["natchet.run_id"] == run.attributes["natchet.run_id"]  # type: ignore[index]
        assert attempt.status.status_code is not StatusCode.ERROR
    assert pushed.event_id  # the event the trace began with

    # A run asked for by the admin client: its trace begins with the request, and the
    # failing attempt says so.
    [request] = [s for s in finished if s.name == "natchet.request TracedFailure"]
    other = by_name([s for s in finished if s.context.trace_id == request.context.trace_id])
    assert set(other) == {
        "natchet.request TracedFailure",
        "natchet.run TracedFailure",
        "natchet.step only",
        "natchet.attempt only",
    }
    failed = other["natchet.attempt only"]
    assert failed.status.status_code is StatusCode.ERROR
    assert "no luck" in (failed.status.description or "")
    assert parent_of(other["natchet.run TracedFailure"]) == request.context.span_id


async def test_tracing_is_off_by_default_and_writes_no_header(
    nats_server: NatsServer, dsn: str, tenant_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NATCHET_TRACING", raising=False)
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("untraced-worker", max_runs=2)
    worker.register_workflow(traced(hatchet))
    async with Engine(EngineSettings(nats_server.url, dsn, (tenant_name,))), running(worker):
        ref = await hatchet.admin.aio_run_workflow("Traced", {"n": 1})
        assert await ref.result() == {"first": {"n": 1}, "second": {"m": 2}}
    hatchet.close()
    nc = await eventstore.connect(eventstore.NatsOptions(nats_server.url, name="t"))
    try:
        records = [r async for r in eventstore.read_to_end(nc, stream_name(tenant_name))]
    finally:
        await nc.close()
    assert records
    assert not [r for r in records if "traceparent" in (r.headers or {})]


async def test_a_malformed_trace_header_is_no_parent_and_the_run_goes_on(
    nats_server: NatsServer, dsn: str, tenant_name: str, spans: InMemorySpanExporter
) -> None:
    """Headers are the publisher's to write: garbage in ``traceparent`` and an oversized
    ``tracestate`` start the run in a trace of its own, and nothing long is carried on."""
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("traced-worker", max_runs=2)
    worker.register_workflow(traced(hatchet))
    nc = await eventstore.connect(eventstore.NatsOptions(nats_server.url, name="publisher"))
    subject = f"{tenant_name}.default.events.order:traced"
    bad = {"traceparent": "00-zz-not-a-trace-01", "tracestate": "k=" + "v" * 5000}
    async with Engine(EngineSettings(nats_server.url, dsn, (tenant_name,))), running(worker):
        await nc.publish(subject, b'{"n": 7}', headers=bad)

        def ended() -> bool:
            names = [s.name for s in spans.get_finished_spans()]
            assert names.count("natchet.attempt second") == 1, names
            return True

        await eventually(ended, timeout_s=30)
        records = [r async for r in eventstore.read_to_end(nc, stream_name(tenant_name))]
    await nc.close()
    hatchet.close()
    run = by_name(list(spans.get_finished_spans()))["natchet.run Traced"]
    assert run.parent is None  # no parent from a header that is not one
    ours = [r for r in records if ".events." not in r.subject]  # the event is the publisher's
    carried = [r.headers for r in ours if r.headers and "traceparent" in r.headers]
    assert carried, "the run's own context is carried on"
    assert all(len(h.get("tracestate", "")) <= 256 for h in carried)
