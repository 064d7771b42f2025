"""Billing consumer: each Stripe event from the ``stripe-events`` queue, applied to the billing
mirror and the firm's ledger.
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
    arg_name="msg",
    queue_name=STRIPE_EVENTS_QUEUE,
    connection=SERVICE_BUS_CONNECTION,
    is_sessions_enabled=True,
)
def stripe_event_received(msg: func.ServiceBusMessage) -> None:
    """Apply one Stripe event, once.

    A malformed event or one for an unlinked account raises ``EventRejected``: the message
    is retried, then dead-lettered with the error's text, which says what a person must fix.
    Any other failure (the database) is retried the same way.
    """
    # Limitation: the trigger cannot dead-letter a message itself, so a rejected event is
    # tried max_delivery_count times (10) before Service Bus dead-letters it.
    properties: dict[str, Any] = dict(msg.application_properties or {})
    traceparent = properties.get("traceparent")
    fields = {"event_id": msg.message_id or "", "event_type": msg.subject or ""}
    with telemetry.consumer_span(
        "billing.apply_stripe_event",
        traceparent if isinstance(traceparent, str) else None,
        {"messaging.message.id": fields["event_id"], "stripe.event_type": fields["event_type"]},
    ) as trace_id:
        try:
            outcome = billing.apply_event(_decode(msg))
        except billing.EventRejected as exc:
            log.error(
                "stripe event %s rejected: %s",
                exc.event_id,
                exc,
                extra={**fields, "outcome": "rejected", "trace_id": trace_id},
            )
            raise
        except Exception as exc:
            log.warning(
                "stripe event %s failed, will retry: %s",
                fields["event_id"],
                exc,
                extra={**fields, "outcome": "retry", "trace_id": trace_id},
            )
            raise
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


def _decode(msg: func.ServiceBusMessage) -> Any:
    try:
        return json.loads(msg.get_body())
    except (ValueError, UnicodeDecodeError):
        event_id = msg.message_id or "(no message id)"
        raise billing.InvalidEvent(event_id, "(body)", "is not JSON") from None
