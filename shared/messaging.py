"""Queues the app uses, defined once: the code, the local broker and the Bicep parameters
all read this table, so a queue's session, lock and retry settings cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

STRIPE_EVENTS_QUEUE = "stripe-events"
QUICKBOOKS_EVENTS_QUEUE = "quickbooks-events"
QUICKBOOKS_SYNC_QUEUE = "quickbooks-sync"

SERVICE_BUS_CONNECTION = "ServiceBusConnection"
"""Name of the connection setting the Service Bus triggers use (``connection=``)."""


@dataclass(frozen=True)
class QueueSpec:
    """The properties of one Service Bus queue, as Service Bus names them."""

    name: str
    requires_session: bool
    lock_duration_s: int = 60
    max_delivery_count: int = 10
    duplicate_detection_window_s: int = 600
    default_message_ttl_s: int = 14 * 24 * 3600
    dead_lettering_on_message_expiration: bool = True


QUEUES: Mapping[str, QueueSpec] = {
    spec.name: spec
    for spec in (
        # Per Stripe customer (or account) order: events about one customer apply in turn.
        QueueSpec(STRIPE_EVENTS_QUEUE, requires_session=True),
        # Per QuickBooks realm order.
        QueueSpec(QUICKBOOKS_EVENTS_QUEUE, requires_session=True),
        # Outbound QuickBooks sync requests, per client in turn (month-end close).
        QueueSpec(QUICKBOOKS_SYNC_QUEUE, requires_session=True),
    )
}


@dataclass(frozen=True)
class OutboundMessage:
    """One message to send. ``message_id`` is what duplicate detection keys on."""

    message_id: str
    body: bytes
    session_id: str | None = None
    content_type: str = "application/json"
    subject: str | None = None
    application_properties: Mapping[str, str] = field(default_factory=dict)
    scheduled_enqueue_time: datetime | None = None


class MessageSender(Protocol):
    """Sends messages to a queue of ``QUEUES``; raises ``UpstreamError`` when it cannot."""

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message in a queue's dead-letter sub-queue, as peeked (not locked, not removed)."""

    message_id: str
    sequence_number: int
    session_id: str | None
    body: bytes
    content_type: str | None
    subject: str | None
    application_properties: Mapping[str, str]
    enqueued_time: datetime | None
    delivery_count: int
    dead_letter_reason: str | None
    dead_letter_description: str | None


@dataclass(frozen=True, slots=True)
class ResubmitOutcome:
    """What a resubmission did: the ids sent back to the queue, and the ids not in the DLQ."""

    resubmitted: tuple[str, ...]
    not_found: tuple[str, ...]


MAX_MESSAGE_ID_LENGTH = 128
ORIGINAL_MESSAGE_ID_PROPERTY = "original_message_id"
"""Application property a resubmitted copy carries: the MessageId it was dead-lettered under."""


def resubmitted_message_id(message_id: str, sequence_number: int) -> str:
    """The MessageId of the copy sent back from the dead-letter queue.

    The copy cannot keep the original id: within the duplicate detection window Service Bus
    would drop it as a duplicate. The id is derived from the dead-lettered message's
    sequence number, so resubmitting the same dead letter twice still sends one copy.
    """
    copy_id = f"{message_id}|resubmit-{sequence_number}"
    if len(copy_id) <= MAX_MESSAGE_ID_LENGTH:
        return copy_id
    return hashlib.sha256(copy_id.encode()).hexdigest()


def iso_duration(seconds: int) -> str:
    """An ISO 8601 duration as Azure Resource Manager writes it (``PT1M``, ``P14D``)."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    text = "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")
    return text if text != "P" else "PT0S"


def queues_json() -> list[dict[str, object]]:
    """``QUEUES`` with the property names of the Service Bus queue resource, for Bicep."""
    return [
        {
            "name": spec.name,
            "requiresSession": spec.requires_session,
            "lockDuration": iso_duration(spec.lock_duration_s),
            "maxDeliveryCount": spec.max_delivery_count,
            "requiresDuplicateDetection": True,
            "duplicateDetectionHistoryTimeWindow": iso_duration(spec.duplicate_detection_window_s),
            "defaultMessageTimeToLive": iso_duration(spec.default_message_ttl_s),
            "deadLetteringOnMessageExpiration": spec.dead_lettering_on_message_expiration,
        }
        for spec in QUEUES.values()
    ]


if __name__ == "__main__":
    # ``python -m shared.messaging > bicep/queues.json`` (or ``make queues``) keeps the
    # Bicep parameters in step with this table; a test fails when they differ.
    print(json.dumps(queues_json(), indent=2))
