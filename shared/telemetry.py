"""Logging and telemetry set-up: structured log lines everywhere, Application Insights when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set (through azure-monitor-opentelemetry).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.propagate import extract

from shared.config import Settings

# Fields that services pass in ``extra=`` and that log lines show as key=value.
STRUCTURED_FIELDS = (
    "client_id",
    "import_id",
    "blob",
    "event_id",
    "event_type",
    "trace_id",
    "realm_id",
    "source",
    "queue",
    "message_id",
    "sent",
    "failed",
    "count",
    "instance_id",
    "system",
    "operation",
    "attempt",
    "outcome",
    "duration_ms",
)

_configured = False

_TRACER = "advisoros"
_meter = metrics.get_meter("advisoros")

# The app's own metrics. Instruments made now bind to the meter provider set up later
# (Application Insights in Azure, an in-memory reader in tests); with none, they cost nothing.
_webhook_events = _meter.create_counter(
    "advisoros.webhook.events",
    unit="{event}",
    description="Webhook events received, by source and outcome (accepted, duplicate).",
)
_import_rows = _meter.create_counter(
    "advisoros.ledger_import.rows",
    unit="{row}",
    description="Ledger import rows, by outcome (imported, duplicate, rejected).",
)
_dead_letters = _meter.create_gauge(
    "advisoros.servicebus.dead_letters",
    unit="{message}",
    description="Messages waiting in a queue's dead-letter queue.",
)
_sync_lag = _meter.create_gauge(
    "advisoros.quickbooks.sync_lag",
    unit="s",
    description="Age of the oldest QuickBooks change not yet applied, per realm.",
)
_classification_confidence = _meter.create_histogram(
    "advisoros.documents.classification_confidence",
    unit="1",
    description="Confidence (0 to 1) of each document classification, by document type.",
)

# W3C trace context, version 00: trace id and parent id in lower-case hex, neither all zeros.
_TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")

# Long digit runs (account numbers, tax ids) are masked to their last four digits; ids
# (UUIDs) are left whole, so that logs stay searchable by client.
_DIGIT_RUN = re.compile(r"\b\d{3,}(?:[ -]\d{3,})*\b")
_MIN_MASKED_DIGITS = 8
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b")


def traceparent(*candidates: str | None) -> str:
    """Return the first valid W3C ``traceparent`` among ``candidates``, else a new trace's.

    Messages carry it in their application properties, so one trace spans the request that
    produced a message, the queue and its consumer. Pass the invocation's
    ``context.trace_context.trace_parent`` first, then the request's own header.
    """
    for candidate in candidates:
        if candidate and _TRACEPARENT.match(candidate.strip()):
            return candidate.strip()
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def redact(message: str) -> str:
    """Return ``message`` with long digit runs masked, UUIDs kept."""
    parts, last = [], 0
    for found in _UUID.finditer(message):
        parts.append(_mask_digits(message[last : found.start()]))
        parts.append(found.group())
        last = found.end()
    parts.append(_mask_digits(message[last:]))
    return "".join(parts)


def _mask_digits(text: str) -> str:
    def mask(found: re.Match[str]) -> str:
        run = found.group()
        if sum(ch.isdigit() for ch in run) < _MIN_MASKED_DIGITS:
            return run
        return "*" * (len(run) - 4) + run[-4:]

    return _DIGIT_RUN.sub(mask, text)


class RedactingFilter(logging.Filter):
    """Masks long digit runs in the rendered message, so no account number reaches a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class KeyValueFormatter(logging.Formatter):
    """``time level logger message key=value ...`` with the structured fields that are set."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = []
        for name in STRUCTURED_FIELDS:
            value: Any = getattr(record, name, None)
            if value is not None:
                pairs.append(f"{name}={value}")
        return f"{line} {' '.join(pairs)}" if pairs else line


def configure(settings: Settings) -> None:
    """Set up logging once per process (later calls do nothing)."""
    global _configured
    if _configured:
        return
    _configured = True

    # The Functions worker installs its own root handler; elsewhere (local host, scripts)
    # we add one. Either way every root handler masks what it writes.
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    for existing in root.handlers:
        existing.addFilter(RedactingFilter())
    for name in ("shared", "functions"):
        logging.getLogger(name).setLevel(settings.log_level)

    if settings.applicationinsights_connection_string:
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(
            connection_string=settings.applicationinsights_connection_string,
            logger_name="shared",
        )
        logging.getLogger("shared").info("Application Insights telemetry enabled")


@contextmanager
def consumer_span(
    name: str, traceparent: str | None, attributes: Mapping[str, str]
) -> Iterator[str | None]:
    """Run a block as one span of the trace that ``traceparent`` (W3C) names, so one trace
    spans the producer, the queue and the consumer; yield the trace id, for log lines.

    Without a ``traceparent`` the span starts a trace of its own (or none, when telemetry
    is off).
    """
    carrier = {"traceparent": traceparent} if traceparent else {}
    tracer = trace.get_tracer("advisoros")
    with tracer.start_as_current_span(
        name, context=extract(carrier), kind=trace.SpanKind.CONSUMER, attributes=dict(attributes)
    ) as span:
        context = span.get_span_context()
        yield format(context.trace_id, "032x") if context.trace_id else None


def _tracing() -> bool:
    # Until a tracer provider is set (Application Insights, or the tests' in-memory one),
    # spans record nothing; a hot path then skips making them.
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextmanager
def consumer_batch_span(
    name: str, traceparents: Sequence[str | None], attributes: Mapping[str, str | int]
) -> Iterator[str | None]:
    """Run a block as the one span of a batch of messages; yield its trace id, for log lines.

    The span continues the trace of the batch's first message (a batch of one is one trace
    from producer to consumer, as ``consumer_span`` makes it) and links to the span of every
    message that names one, as OpenTelemetry's messaging conventions have batch receivers do.
    """
    links = []
    for traceparent in traceparents:
        if traceparent:
            linked = trace.get_current_span(extract({"traceparent": traceparent}))
            if linked.get_span_context().is_valid:
                links.append(trace.Link(linked.get_span_context()))
    first = traceparents[0] if traceparents else None
    carrier = {"traceparent": first} if first else {}
    tracer = trace.get_tracer("advisoros")
    with tracer.start_as_current_span(
        name,
        context=extract(carrier),
        kind=trace.SpanKind.CONSUMER,
        attributes=dict(attributes),
        links=links,
    ) as span:
        context = span.get_span_context()
        yield format(context.trace_id, "032x") if context.trace_id else None


@contextmanager
def request_span(name: str, traceparent: str, attributes: Mapping[str, str]) -> Iterator[str]:
    """Run a block as the server span of one HTTP request, continuing the trace that
    ``traceparent`` (W3C) names; yield the ``traceparent`` that names this span, for the
    messages the block sends, so their consumers join the same trace.

    With telemetry off, the span records nothing and ``traceparent`` is yielded unchanged.
    """
    if not _tracing():
        yield traceparent
        return
    tracer = trace.get_tracer(_TRACER)
    with tracer.start_as_current_span(
        name,
        context=extract({"traceparent": traceparent}),
        kind=trace.SpanKind.SERVER,
        attributes=dict(attributes),
    ) as span:
        context = span.get_span_context()
        if not context.is_valid:
            yield traceparent
            return
        yield f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


@contextmanager
def producer_span(queue: str, message_count: int) -> Iterator[None]:
    """Run a send to a queue as one producer span of the current trace."""
    tracer = trace.get_tracer(_TRACER)
    with tracer.start_as_current_span(
        f"{queue} publish",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "servicebus",
            "messaging.destination.name": queue,
            "messaging.batch.message_count": message_count,
        },
    ):
        yield


@contextmanager
def database_span(operation: str) -> Iterator[None]:
    """Run a block of Postgres work as one client span of the current trace.

    azure-monitor-opentelemetry instruments psycopg2 but not psycopg 3, hence this span;
    calls made through the Azure SDKs and ``requests`` get their spans from its own
    instrumentations once ``configure`` has switched it on.
    """
    if not _tracing():
        yield
        return
    tracer = trace.get_tracer(_TRACER)
    with tracer.start_as_current_span(
        f"postgres {operation}",
        kind=trace.SpanKind.CLIENT,
        attributes={"db.system.name": "postgresql", "db.operation.name": operation},
    ):
        yield


def record_webhook(source: str, *, duplicate: bool) -> None:
    """Count one webhook event, accepted or duplicate."""
    _webhook_events.add(1, {"source": source, "outcome": "duplicate" if duplicate else "accepted"})


def record_import_rows(*, imported: int, duplicates: int, rejected: int) -> None:
    """Count the rows of one ledger import file by outcome."""
    for outcome, count in (
        ("imported", imported),
        ("duplicate", duplicates),
        ("rejected", rejected),
    ):
        if count:
            _import_rows.add(count, {"outcome": outcome})


def record_dead_letters(queue: str, depth: int) -> None:
    """Record how many messages wait in ``queue``'s dead-letter queue."""
    _dead_letters.set(depth, {"queue": queue})


def record_sync_lag(realm_id: str, lag_s: float) -> None:
    """Record how far behind QuickBooks sync is for one realm, in seconds."""
    _sync_lag.set(lag_s, {"realm_id": realm_id})


def record_classification_confidence(document_type: str, confidence: float) -> None:
    """Record the confidence (0 to 1) of one document classification."""
    _classification_confidence.record(confidence, {"document_type": document_type})
