"""In-memory OpenTelemetry providers for the tests: spans to an exporter, metrics to a reader.

A process can set its tracer and meter providers once, so the first caller sets both and
later callers share them.
"""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

READER = InMemoryMetricReader()


def providers() -> TracerProvider:
    """The process's SDK tracer provider (set with the metric reader on first call)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
    return provider


def points(name: str) -> list[tuple[dict[str, object], float]]:
    """The current data points of one metric: (attributes, value) each."""
    providers()
    found: list[tuple[dict[str, object], float]] = []
    data = READER.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        found.append((dict(point.attributes or {}), float(value or 0)))
    return found
