"""OpenTelemetry traces (contract 11): one trace per run, a span per step attempt, tool call,
model call, ask and sleep, exported over OTLP when `--otel` is given or
OTEL_EXPORTER_OTLP_ENDPOINT is set (the SDK's standard OTEL_* variables configure the
exporter). Off, every call here is a no-op that costs a flag test: nothing is imported.

A run's trace context (W3C `traceparent`) is stored in its `run_started` data (`trace`),
so a run resumed after a restart or a takeover continues the same trace: its new spans
have the run's trace id and the root span as parent. The root span is the start of the
run. Spans follow the run's task and its threads through context variables.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

log = logging.getLogger("runcast.tracing")

_tracer: Any = None  # the SDK's tracer while tracing is on
_provider: Any = None  # and its provider (flushed and shut down on stop)


def wanted(flag: bool) -> bool:
    """Tracing is on with --otel, or when the standard endpoint variable is set."""
    return flag or bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def start(service: str = "runcast") -> None:
    """Export traces from now on (the OpenTelemetry SDK and OTLP exporter: the `otel` extra)."""
    global _tracer, _provider
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(
            f"tracing needs the OpenTelemetry SDK ({exc.name} is missing): pip install 'runcast[otel]'"
        ) from None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider, _tracer = provider, trace.get_tracer("runcast")
    log.info("tracing on: spans go to %s", os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "the OTLP default"))


def stop() -> None:
    """Export what is left (on a clean stop)."""
    global _tracer, _provider
    if _provider is not None:
        with contextlib.suppress(Exception):
            _provider.shutdown()
    _tracer = _provider = None


def on() -> bool:
    return _tracer is not None


def begin_run(run_id: str, workflow: str) -> str | None:
    """The root span of a run (ended at once: the start), and its `traceparent` to store."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    root = _tracer.start_span(f"start {workflow}", attributes={"runcast.run_id": run_id, "runcast.workflow": workflow})
    root.end()
    from opentelemetry import trace

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(root))
    return carrier.get("traceparent")


def enter_run(traceparent: Any, run_id: str) -> None:
    """In a run's own task: the spans made from here on (in the task, and in the threads and
    tasks it starts) belong to the run's trace, with `run_id` on each. Never left: the
    task's context ends with the task."""
    if _tracer is None or not isinstance(traceparent, str):
        return
    from opentelemetry import baggage, context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ctx = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    context.attach(baggage.set_baggage("runcast.run_id", run_id, ctx))


_OFF = contextlib.nullcontext()  # what `span` is while tracing is off: nothing made, nothing kept


def span(
    name: str, attributes: dict[str, Any] | None = None, *, errors: bool = True
) -> contextlib.AbstractContextManager[Any]:
    """A span of the current run, as a context manager giving the span (None, and nothing
    done, when tracing is off). With `errors`, an exception that leaves it sets its status
    to ERROR and is recorded; else (a step: a suspension is no error) the caller says with
    `mark_failed(span, why)`."""
    if _tracer is None:
        return _OFF
    return _tracer.start_as_current_span(
        name, attributes=_run_attributes(attributes), record_exception=errors, set_status_on_exception=errors
    )


def open_span(name: str, attributes: dict[str, Any] | None = None) -> Any:
    """A span that is not made current (for work across an async generator's yields): end
    it with `close_span`. None when tracing is off."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, attributes=_run_attributes(attributes))


def _run_attributes(attributes: dict[str, Any] | None) -> dict[str, Any]:
    """A span's attributes (those set), with the current run's id from the baggage."""
    from opentelemetry import baggage

    run_id = baggage.get_baggage("runcast.run_id")
    attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
    if run_id is not None:
        attrs["runcast.run_id"] = str(run_id)
    return attrs


def close_span(s: Any, error: BaseException | None = None) -> None:
    if s is None:
        return
    if error is not None:
        s.record_exception(error)
        mark_failed(s, str(error) or type(error).__name__)
    s.end()


def mark_failed(s: Any, why: str) -> None:
    """Set a span's status to ERROR, with the failure's text as an exception event."""
    if s is None:
        return
    from opentelemetry.trace import Status, StatusCode

    s.set_status(Status(StatusCode.ERROR, why))
    s.add_event("exception", {"exception.message": why})
