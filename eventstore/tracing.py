"""Tracing, optional: OpenTelemetry spans for a run, its steps and their attempts, with the
W3C trace context carried in NATS message headers (``traceparent``, ``tracestate``), so
that one trace spans whoever published the event or asked for the run, the dispatcher that
started the run and queued its steps, and the workers that ran them.

Off unless ``NATCHET_TRACING`` says otherwise (and ``pip install 'natchet[tracing]'``):

- ``on``: spans go to the global tracer provider, which the application configures (or
  ``opentelemetry-instrument``);
- ``otlp``: natchet configures one that exports over OTLP/HTTP, as the standard
  ``OTEL_EXPORTER_OTLP_*`` variables say (for ``natchet engine``, which runs no code of
  yours; a worker started with ``worker.start()`` does the same).

Off, nothing of OpenTelemetry is imported and no header is written. A tenant's headers are
only ever parsed by OpenTelemetry's own W3C propagator (a malformed one is no parent), and
only these two are carried on, the state cut when it is long.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from eventstore.errors import ConfigError

ENV = "NATCHET_TRACING"
MODES = ("off", "on", "otlp")
HEADERS = ("traceparent", "tracestate")
MAX_STATE = 256  # a longer tracestate is not carried on (room in a message's headers)
Headers = tuple[tuple[str, str], ...]


def mode(env: Mapping[str, str] | None = None) -> str:
    value = ((os.environ if env is None else env).get(ENV) or "off").lower()
    if value not in MODES:
        raise ConfigError(f"{ENV}={value!r}: use off, on or otlp")
    return value


def tracer() -> Any | None:
    """natchet's tracer, or None when tracing is off."""
    if mode() == "off":
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigError(
            f"{ENV} is on but OpenTelemetry is not installed: pip install 'natchet[tracing]'"
        ) from None
    return trace.get_tracer("natchet")


def configure(service: str) -> None:
    """With ``NATCHET_TRACING=otlp``: a tracer provider exporting over OTLP/HTTP in
    batches, for this process (``service``: its ``service.name``)."""
    if mode() != "otlp":
        return
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            f"{ENV}=otlp needs OpenTelemetry's SDK and OTLP exporter: "
            "pip install 'natchet[tracing]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def parent_of(headers: Mapping[str, str] | None) -> Any | None:
    """The trace context a message's headers carry, or None."""
    if not headers or "traceparent" not in headers:
        return None
    from opentelemetry.propagate import extract

    return extract({k: v for k, v in headers.items() if k in HEADERS})


def headers_of(span: Any) -> Headers:
    """The headers that carry ``span``'s context to whoever reads the message."""
    from opentelemetry import trace
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier, context=trace.set_span_in_context(span))
    if len(carrier.get("tracestate", "")) > MAX_STATE:
        del carrier["tracestate"]
    return tuple((k, v) for k, v in carrier.items() if k in HEADERS)


def point(tracer_: Any, name: str, parent: Any | None, attributes: Mapping[str, Any]) -> Headers:
    """A span for a decision that takes no time worth measuring (the dispatcher's): started
    and ended at once; the headers that make it the parent of what follows."""
    from opentelemetry.trace import SpanKind

    span = tracer_.start_span(name, context=parent, kind=SpanKind.INTERNAL, attributes=attributes)
    span.end()
    return headers_of(span)


@contextlib.contextmanager
def producing(name: str, attributes: Mapping[str, Any]) -> Iterator[Headers]:
    """A span around publishing a message (an event, a run request), and the headers that
    carry it in the message; ``()`` when tracing is off."""
    tracer_ = tracer()
    if tracer_ is None:
        yield ()
        return
    from opentelemetry.trace import SpanKind

    with tracer_.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes) as span:
        yield headers_of(span)
