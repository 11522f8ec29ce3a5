"""Traces and metrics for one process, set up once: OpenTelemetry SDK providers, the libraries'
instrumentation, Temporal's plugin and its SDK metrics, and where it all goes.

Spans go to the Postgres trace store (so `turnflow trace` works with no collector) and, when an OTLP
endpoint is configured, to the collector too. Metrics are read by Prometheus from `/metrics` (the
API's route, a worker's own port) and pushed over OTLP when configured.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

import sqlalchemy.engine.base
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from temporalio.contrib.opentelemetry import ReplaySafeMeterProvider, create_tracer_provider
from temporalio.runtime import MetricBuffer, MetricBufferDurationFormat, Runtime, TelemetryConfig

from infra.config.settings import Settings
from infra.telemetry.metrics import LATENCY_BUCKETS_S
from infra.telemetry.span_store import PostgresSpanExporter
from infra.telemetry.temporal_metrics import TemporalMetricsExporter
from infra.telemetry.temporal_spans import TurnflowTemporalTracing

log = logging.getLogger("turnflow.telemetry")

# The stable HTTP conventions (http.server.request.duration in seconds, labelled by route, not by
# URL): read by the instrumentations when they first instrument, so set before any of them does.
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")

SERVICE_API = "turnflow-api"
SERVICE_WORKER = "turnflow-worker"


@dataclass
class Telemetry:
    runtime: Runtime
    metric_buffer: MetricBuffer
    _temporal_metrics: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def temporal_plugins(self) -> list[TurnflowTemporalTracing]:
        # Temporal-specific spans too (StartWorkflow, RunWorkflow, RunActivity): each step of a turn
        # is a span of its own, with the workflow's real duration.
        return [TurnflowTemporalTracing()]

    def start_temporal_metrics(self) -> None:
        """Drain the Temporal SDK's own metrics (task latencies, schedule-to-start, slots) into ours."""
        if self._temporal_metrics is None or self._temporal_metrics.done():
            exporter = TemporalMetricsExporter(self.metric_buffer, metrics.get_meter_provider())
            self._temporal_metrics = asyncio.get_running_loop().create_task(exporter.run())


_current: Telemetry | None = None


def setup_telemetry(settings: Settings, database_url: str, service: str) -> Telemetry | None:
    """Once per process (later calls return the first setup); None when telemetry is off."""
    global _current
    if not settings.telemetry:
        return None
    if _current is not None:
        return _current
    resource = Resource.create({"service.name": service, "service.namespace": "turnflow"})
    # Parent-based: a caller's sampling decision (its traceparent) is kept; new traces by the ratio.
    sampler = ParentBased(TraceIdRatioBased(settings.trace_sample_ratio))
    tracer_provider = create_tracer_provider(resource=resource, sampler=sampler)
    if settings.trace_store:
        store = PostgresSpanExporter(
            database_url, role=settings.database_role or None, retention_h=settings.trace_retention_h
        )
        tracer_provider.add_span_processor(BatchSpanProcessor(store))
    readers: list[MetricReader] = [PrometheusMetricReader()]
    if settings.otlp_endpoint:
        base = settings.otlp_endpoint.rstrip("/")
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics")))
    trace.set_tracer_provider(tracer_provider)
    # Temporal's SDK metrics in seconds, as Prometheus expects, with buckets that suit them.
    temporal_latencies = View(
        instrument_name="temporal_*",
        instrument_type=Histogram,
        aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS_S),
    )
    meter_provider = MeterProvider(metric_readers=readers, resource=resource, views=[temporal_latencies])
    # Replay-safe: a workflow replaying its history must not count its metrics twice.
    metrics.set_meter_provider(ReplaySafeMeterProvider(meter_provider))
    # Redis commands are not spans: each takes well under a millisecond, a turn made fourteen, and
    # spans were a fifth of a turn's CPU (bench/REPORT.md, issue 17). Their step's span holds them.
    HTTPXClientInstrumentor().instrument()
    # Every engine made from now on is traced (db/engine.py creates them through the wrapped
    # function). The instrumentation declares SQLAlchemy < 2.1 though it works with 2.1 (the same
    # event hooks); without skipping the check it silently instruments nothing.
    SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    # Statements stay spans of the step that ran them; taking a pooled connection does not need one
    # (it was a span per transaction, about as costly as the statement's own).
    unwrap(sqlalchemy.engine.base.Engine, "connect")
    buffer = MetricBuffer(100_000, MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    _current = Telemetry(runtime=runtime, metric_buffer=buffer)
    log.info("telemetry (%s): trace store %s, OTLP %s", service, settings.trace_store, settings.otlp_endpoint)
    return _current
