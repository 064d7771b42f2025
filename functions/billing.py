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

    A malformed event, or one for an unlinked account, raises ``EventRejected``, whose text
    says what a person must fix. Such an event is stepped over: the events after it are
    still applied and committed, and then the function raises the first rejection, so the
    batch is given back. Delivered again, the events already applied are duplicates and
    change nothing. Any other failure (the database) raises at once, with the events before
    it committed, and the batch is retried the same way.
    """
    # Limitation: the trigger cannot settle a message itself, so a rejected event is tried
    # max_delivery_count times (10) before Service Bus dead-letters it; and the Functions
    # host abandons a failed batch whole, so there the other events of its batch are
    # dead-lettered beside it, already applied (resubmitting them changes nothing). The
    # devhost tries a failed batch again one message at a time, and dead-letters it alone.
    decoded: list[tuple[int, Any]] = []
    rejected: list[tuple[int, billing.EventRejected]] = []
    for index, msg in enumerate(msgs):
        try:
            decoded.append((index, _decode(msg)))
        except billing.EventRejected as exc:
            rejected.append((index, exc))
    with telemetry.consumer_batch_span(
        "billing.apply_stripe_events",
        [_traceparent(msg) for msg in msgs],
        {"messaging.batch.message_count": len(msgs)},
    ) as trace_id:
        applied, failure = _apply_around_rejections(decoded, rejected)
    for outcome in applied:
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
    rejected.sort(key=lambda pair: pair[0])
    for index, rejection in rejected:
        log.error(
            "stripe event %s rejected: %s",
            rejection.event_id,
            rejection,
            extra={**_fields(msgs[index]), "outcome": "rejected", "trace_id": trace_id},
        )
    if failure is not None:
        index, error = failure
        fields = _fields(msgs[index])
        log.warning(
            "stripe event %s failed, will retry: %s",
            fields["event_id"],
            error,
            extra={**fields, "outcome": "retry", "trace_id": trace_id},
        )
        raise error
    if rejected:
        raise rejected[0][1]


def _apply_around_rejections(
    events: list[tuple[int, Any]], rejected: list[tuple[int, billing.EventRejected]]
) -> tuple[list[billing.ApplyOutcome], tuple[int, Exception] | None]:
    """Apply ``events`` (each with its place in the batch) in order, stepping over each one
    that is rejected (added to ``rejected``); stop at any other failure and return it."""
    applied: list[billing.ApplyOutcome] = []
    remaining = events
    while remaining:
        batch = billing.apply_events([event for _, event in remaining])
        applied.extend(batch.applied)
        if batch.error is None:
            break
        index = remaining[len(batch.applied)][0]
        if not isinstance(batch.error, billing.EventRejected):
            return applied, (index, batch.error)
        rejected.append((index, batch.error))
        remaining = remaining[len(batch.applied) + 1 :]
    return applied, None


def _fields(msg: func.ServiceBusMessage) -> dict[str, str]:
    return {"event_id": msg.message_id or "", "event_type": msg.subject or ""}


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
