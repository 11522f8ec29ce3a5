"""The Temporal SDK's buffered metrics keep their own labels when Core reuses an attribute object's id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from temporalio.runtime import BUFFERED_METRIC_KIND_HISTOGRAM

from infra.telemetry.temporal_metrics import TemporalMetricsExporter


@dataclass
class Metric:  # the shape of Core's BufferedMetric
    name: str
    kind: int = BUFFERED_METRIC_KIND_HISTOGRAM
    description: str | None = None
    unit: str | None = "s"


@dataclass
class Update:  # the shape of Core's BufferedMetricUpdate
    metric: Metric
    value: float
    attributes: dict[str, Any]


class RecordingBuffer:
    """A stand-in for MetricBuffer that hands out the updates it is given."""

    def __init__(self) -> None:
        self.updates: list[Update] = []

    def retrieve_updates(self) -> list[Update]:
        updates, self.updates = self.updates, []
        return updates


def labels(reader: InMemoryMetricReader, name: str) -> list[dict[str, Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        dict(point.attributes or {})
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_an_attribute_set_freed_and_its_id_reused_keeps_its_own_labels() -> None:
    reader = InMemoryMetricReader()
    buffer = RecordingBuffer()
    exporter = TemporalMetricsExporter(buffer, MeterProvider(metric_readers=[reader]))  # type: ignore[arg-type]
    latency = Metric("temporal_activity_execution_latency")

    # A poll's attribute set is exported, then freed (its owner went), as Core does.
    poll = {"namespace": "default", "task_queue": "q"}
    freed_id = id(poll)
    buffer.updates.append(Update(latency, 0.1, poll))
    exporter._drain_once()
    buffer.updates.clear()
    del poll
    # The next set often lands at the freed address; make sure it does, as Core's did on the dev server.
    kept = []
    activity = {"namespace": "default", "task_queue": "q", "activity_type": "retrieve"}
    while id(activity) != freed_id and len(kept) < 10_000:
        kept.append(activity)
        activity = {"namespace": "default", "task_queue": "q", "activity_type": "retrieve"}
    assert id(activity) == freed_id, "could not reproduce an id reuse"
    buffer.updates.append(Update(latency, 0.2, activity))
    exporter._drain_once()

    points = labels(reader, "temporal_activity_execution_latency")
    assert {"namespace": "default", "task_queue": "q", "activity_type": "retrieve"} in points
    assert {"namespace": "default", "task_queue": "q"} in points
