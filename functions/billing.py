"""Billing consumer: the Stripe events of the ``stripe-events`` queue, a session's batch at a
time, applied to the billing mirror and the firm's ledger.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from shared import telemetry
from shared.messaging import SERVICE_BUS_CONNECTION, STRIPE_EVENTS_QUEUE
from shared.services import billing

log = logging.getLogger(__name__)

billing_bp = func.Blueprint()  # type: ignore[no-untyped-call]


@billing_bp.service_bus_queue_trigger(
    arg_name="msgs",
    queue_name=STRIPE_EVENTS_QUEUE,
    connection=SERVICE_BUS_CONNECTION,
    is_sessions_enabled=True,
    cardinality=func.Cardinality.MANY,
)
def stripe_events_received(msgs: list[func.ServiceBusMessage]) -> None:
    """Apply a batch of one session's Stripe events, in order, each once.

    The events before a failing one are applied and committed; then the function raises
    that event's error, so the batch is given back. Delivered again, the events already
    applied are duplicates and change nothing. A malformed event or one for an unlinked
    account raises ``EventRejected``, whose text says what a person must fix; any other
    failure (the database) is retried the same way.
    """
    # Limitation: the trigger cannot settle a message itself, so a rejected event is tried
    # max_delivery_count times (10) before Service Bus dead-letters it; and the Functions
    # host abandons a failed batch whole, so there the events behind a rejected one are
    # dead-lettered beside it (already applied; resubmitting them changes nothing). The
    # devhost tries a failed batch again one message at a time, and dead-letters it alone.
    events: list[Any] = []
    undecodable: billing.EventRejected | None = None
    for msg in msgs:
        try:
            events.append(_decode(msg))
        except billing.EventRejected as exc:
            undecodable = exc
            break
    with telemetry.consumer_batch_span(
        "billing.apply_stripe_events",
        [_traceparent(msg) for msg in msgs],
        {"messaging.batch.message_count": len(msgs)},
    ) as trace_id:
        batch = billing.apply_events(events)
    for outcome in batch.applied:
        log.info(
            "stripe event %s %s: %s, %s posting(s)",
            outcome.event_id,
            outcome.event_type,
            outcome.status,
            len(outcome.postings),
            extra={
                "event_id": outcome.event_id,
                "event_type": outcome.event_type,
                "outcome": outcome.status,
                "client_id": str(outcome.books_client_id),
                "trace_id": trace_id,
            },
        )
    error = batch.error or undecodable
    if error is None:
        return
    failed = msgs[len(batch.applied)]
    fields = {"event_id": failed.message_id or "", "event_type": failed.subject or ""}
    if isinstance(error, billing.EventRejected):
        log.error(
            "stripe event %s rejected: %s",
            error.event_id,
            error,
            extra={**fields, "outcome": "rejected", "trace_id": trace_id},
        )
    else:
        log.warning(
            "stripe event %s failed, will retry: %s",
            fields["event_id"],
            error,
            extra={**fields, "outcome": "retry", "trace_id": trace_id},
        )
    raise error


def _traceparent(msg: func.ServiceBusMessage) -> str | None:
    properties: dict[str, Any] = dict(msg.application_properties or {})
    traceparent = properties.get("traceparent")
    return traceparent if isinstance(traceparent, str) else None


def _decode(msg: func.ServiceBusMessage) -> Any:
    try:
        return json.loads(msg.get_body())
    except (ValueError, UnicodeDecodeError):
        event_id = msg.message_id or "(no message id)"
        raise billing.InvalidEvent(event_id, "(body)", "is not JSON") from None
