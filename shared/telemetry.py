"""Logging and telemetry set-up: structured log lines everywhere, Application Insights when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set (through azure-monitor-opentelemetry).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
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
