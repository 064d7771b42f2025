"""Engagements: the rows behind each engagement orchestration, the steps its activities
take, and the hooks other capabilities call to wake a waiting engagement.

Every step is safe to repeat (activities run at least once): rows are keyed by the
engagement, notifications by an idempotency key, the Stripe invoice by a key derived from
the engagement.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from shared.adapters import postgres
from shared.adapters import stripe as stripe_adapter
from shared.config import get_settings
from shared.domain.engagements import engagement_type, requirement_met_by
from shared.errors import ConfigError, NotFound, ValidationError
from shared.services import audit, clients

log = logging.getLogger(__name__)

ORCHESTRATOR = "engagement_v1"
DOCUMENT_CLASSIFIED_EVENT = "document_classified"
INVOICE_PAID_EVENT = "invoice_paid"
REVIEW_EVENT = "review"
_NAMESPACE = uuid.UUID("7f0f5e0e-4c1b-4b57-9a43-0c2f4d9a1e55")


@dataclass(frozen=True, slots=True)
class Engagement:
    """One engagement row."""

    id: uuid.UUID
    client_id: uuid.UUID
    engagement_type: str
    period: str
    instance_id: str
    status: str

    def to_json(self) -> dict[str, Any]:
        return {
            "engagement_id": str(self.id),
            "client_id": str(self.client_id),
            "engagement_type": self.engagement_type,
            "period": self.period,
            "instance_id": self.instance_id,
            "status": self.status,
        }


def engagement_id_for(client_id: uuid.UUID, type_key: str, period: str) -> uuid.UUID:
    """The engagement's id, derived from what identifies it, so starting twice finds it."""
    return uuid.uuid5(_NAMESPACE, f"{client_id}:{type_key}:{period}")


def instance_id_for(engagement_id: uuid.UUID) -> str:
    """The orchestration instance id of an engagement."""
    return f"engagement-{engagement_id}"


def open_engagement(client_id: uuid.UUID, type_key: str, period: str, actor: str) -> Engagement:
    """Create the engagement row (once) with an audit entry; a repeat returns the same row.

    Raises:
        ValidationError: unknown type or an empty period.
        NotFound: no such client.
    """
    with postgres.transaction() as conn:
        return open_engagement_in(conn, client_id, type_key, period, actor)


def open_engagement_in(
    conn: psycopg.Connection, client_id: uuid.UUID, type_key: str, period: str, actor: str
) -> Engagement:
    """`open_engagement` in the caller's transaction (the portal's, under row-level
    security): the row and its audit entry commit with the caller's work, or not at all.

    Raises:
        ValidationError: unknown type or an empty period.
        NotFound: no such client, or not one the transaction may see.
    """
    kind = engagement_type(type_key)
    if not period.strip() or len(period) > 32 or not period.isprintable():
        raise ValidationError(
            "period must be 1 to 32 printable characters, such as 2026 or 2026-11"
        )
    engagement_id = engagement_id_for(client_id, type_key, period)
    clients.require_client(conn, client_id)
    inserted = conn.execute(
        "INSERT INTO engagements (id, client_id, engagement_type, period, instance_id,"
        " fee_minor, currency) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        (
            engagement_id,
            client_id,
            kind.key,
            period,
            instance_id_for(engagement_id),
            kind.fee_minor,
            kind.currency,
        ),
    ).fetchone()
    if inserted is not None:
        audit.record(
            conn,
            actor=actor,
            action="engagement.opened",
            client_id=client_id,
            subject=str(engagement_id),
            details={"engagement_type": kind.key, "period": period},
        )
    return _load(conn, engagement_id)


def get(engagement_id: uuid.UUID) -> Engagement:
    """The engagement row.

    Raises:
        NotFound: no such engagement.
    """
    with postgres.transaction() as conn:
        return _load(conn, engagement_id)


def get_in(conn: psycopg.Connection, engagement_id: uuid.UUID) -> Engagement:
    """`get` in the caller's transaction; under row-level security another client's
    engagement is as missing as one that does not exist.

    Raises:
        NotFound: no such engagement, or not one the transaction may see.
    """
    return _load(conn, engagement_id)


def waiting_review(custom_status: Any) -> tuple[str, str] | None:
    """The review an orchestration's custom status says it waits for, as (step, event
    name); None when it waits for something else."""
    if not isinstance(custom_status, dict):
        return None
    step, event = custom_status.get("step"), custom_status.get("event")
    if not (isinstance(step, str) and step.startswith("review:") and isinstance(event, str)):
        return None
    return step.removeprefix("review:"), event


def record_review(
    conn: psycopg.Connection,
    engagement: Engagement,
    step: str,
    event: str,
    decision: dict[str, Any],
    actor: str,
) -> bool:
    """Audit an advisor's decision on one review (``event``, the review's own event name),
    once, in the transaction that sends it on.

    Decisions on one engagement are serialised by a lock on its row, so of two at once the
    second finds the first's audit row.

    Returns:
        False, recording nothing, when that review was decided already.
    """
    conn.execute("SELECT 1 FROM engagements WHERE id = %s FOR UPDATE", (engagement.id,))
    decided = conn.execute(
        "SELECT 1 FROM audit_log WHERE subject = %s AND action LIKE 'engagement.review.%%'"
        " AND details->>'event' = %s",
        (str(engagement.id), event),
    ).fetchone()
    if decided is not None:
        return False
    audit.record(
        conn,
        actor=actor,
        action=f"engagement.review.{decision['decision']}",
        client_id=engagement.client_id,
        subject=str(engagement.id),
        details={"step": step, "event": event, **decision},
    )
    return True


def _load(conn: psycopg.Connection, engagement_id: uuid.UUID) -> Engagement:
    row = conn.execute(
        "SELECT id, client_id, engagement_type, period, instance_id, status FROM engagements"
        " WHERE id = %s",
        (engagement_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"engagement {engagement_id} does not exist")
    return Engagement(*row)


def plan(engagement_id: uuid.UUID) -> dict[str, Any]:
    """What the orchestration needs to walk the engagement: its type and the intervals from
    settings, read here so the orchestrator stays deterministic."""
    engagement = get(engagement_id)
    settings = get_settings()
    kind = engagement_type(engagement.engagement_type)
    return {
        **engagement.to_json(),
        "type": kind.to_json(),
        "reminder_interval_s": settings.engagement_reminder_interval_s * kind.reminder_every,
        "dunning_interval_s": settings.engagement_dunning_interval_s,
    }


def record_notification(
    engagement_id: uuid.UUID, kind: str, key: str, body: dict[str, Any]
) -> bool:
    """Record a notification for sending; a repeat with the same key records nothing.

    Returns:
        True when it was recorded now.
    """
    engagement = get(engagement_id)
    with postgres.transaction() as conn:
        row = conn.execute(
            "INSERT INTO engagement_notifications (engagement_id, client_id, kind,"
            " idempotency_key, body) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            (
                engagement_id,
                engagement.client_id,
                kind,
                f"{engagement_id}:{key}",
                json.dumps(body, sort_keys=True),
            ),
        ).fetchone()
    return row is not None


def issue_invoice(engagement_id: uuid.UUID) -> str:
    """Invoice the engagement's fee through Stripe, once; returns the invoice id.

    Raises:
        ConfigError: STRIPE_API_KEY is not set.
        UpstreamError: Stripe failed (retryable or not, as it says).
    """
    engagement = get(engagement_id)
    settings = get_settings()
    if not settings.stripe_api_key:
        raise ConfigError("STRIPE_API_KEY is not set: engagements cannot be invoiced")
    kind = engagement_type(engagement.engagement_type)
    invoice_id = stripe_adapter.create_invoice(
        api_key=settings.stripe_api_key,
        api_base=settings.stripe_api_base,
        customer_key=str(engagement.client_id),
        customer_name=_client_name(engagement.client_id),
        amount_minor=kind.fee_minor,
        currency=kind.currency,
        description=f"{kind.title}, {engagement.period}",
        idempotency_key=f"engagement-{engagement_id}",
        metadata={"engagement_id": str(engagement_id)},
    )
    with postgres.transaction() as conn:
        conn.execute(
            "UPDATE engagements SET stripe_invoice_id = %s WHERE id = %s",
            (invoice_id, engagement_id),
        )
        audit.record(
            conn,
            actor="engagements",
            action="engagement.invoiced",
            client_id=engagement.client_id,
            subject=str(engagement_id),
            details={
                "stripe_invoice_id": invoice_id,
                "fee_minor": kind.fee_minor,
                "currency": kind.currency,
            },
        )
    return invoice_id


def _client_name(client_id: uuid.UUID) -> str:
    with postgres.transaction() as conn:
        row = conn.execute("SELECT name FROM clients WHERE id = %s", (client_id,)).fetchone()
    return str(row[0]) if row else str(client_id)


def set_status(engagement_id: uuid.UUID, status: str, actor: str, **details: Any) -> None:
    """Move the engagement to ``delivered``, ``closed`` or ``cancelled`` (repeat-safe)."""
    with postgres.transaction() as conn:
        engagement = _load(conn, engagement_id)
        if engagement.status == status:
            return
        conn.execute(
            "UPDATE engagements SET status = %s, deliverable = coalesce(%s, deliverable),"
            " closed_at = CASE WHEN %s IN ('closed', 'cancelled') THEN now() END"
            " WHERE id = %s",
            (status, details.get("deliverable"), status, engagement_id),
        )
        audit.record(
            conn,
            actor=actor,
            action=f"engagement.{status}",
            client_id=engagement.client_id,
            subject=str(engagement_id),
            details={k: str(v) for k, v in details.items()},
        )


def notify_document_classified(
    client_id: uuid.UUID,
    document_id: str,
    doc_class: str,
    conn: psycopg.Connection | None = None,
) -> int:
    """Tell the client's open engagements that need ``doc_class`` that a document arrived.

    Call it in the transaction that records the classification (pass ``conn``), so the
    event is kept exactly when the classification is. Documents of a class no engagement
    needs are ignored; the same document twice counts once.

    Returns:
        How many engagements were told.
    """
    if conn is None:
        with postgres.transaction() as own:
            return notify_document_classified(client_id, document_id, doc_class, own)
    rows = conn.execute(
        "SELECT id, engagement_type, instance_id FROM engagements"
        " WHERE client_id = %s AND status = 'open'",
        (client_id,),
    ).fetchall()
    told = 0
    for engagement_id, type_key, instance_id in rows:
        need = requirement_met_by(doc_class, engagement_type(type_key).required_documents)
        if need is None:
            continue
        fresh = conn.execute(
            "INSERT INTO engagement_documents (engagement_id, client_id, document_id,"
            " doc_class) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
            (engagement_id, client_id, document_id, doc_class),
        ).fetchone()
        if fresh is None:
            continue
        # Each document event has its own name (see document_event_name); the count
        # includes this document, and concurrent notifications are serialised by the lock.
        conn.execute("SELECT 1 FROM engagements WHERE id = %s FOR UPDATE", (engagement_id,))
        count = conn.execute(
            "SELECT count(*) FROM engagement_documents WHERE engagement_id = %s",
            (engagement_id,),
        ).fetchone()
        _queue_event(
            conn,
            engagement_id,
            client_id,
            instance_id,
            document_event_name(int(count[0]) if count else 1),
            {"document_id": document_id, "doc_class": need, "document_class": doc_class},
            f"document:{engagement_id}:{document_id}",
        )
        told += 1
    return told


def document_event_name(number: int) -> str:
    """The event name of an engagement's ``number``-th document (1-based).

    Each event name is raised once: the Durable SDK re-delivers an event that arrived
    before its wait to every later wait of the same name, so repeated waits use new names.
    """
    return f"{DOCUMENT_CLASSIFIED_EVENT}_{number}"


def review_event_name(number: int) -> str:
    """The event name of an engagement's ``number``-th review decision (1-based)."""
    return f"{REVIEW_EVENT}_{number}"


def notify_invoice_paid(stripe_invoice_id: str, conn: psycopg.Connection | None = None) -> bool:
    """Tell the engagement whose invoice this is that it was paid (billing calls this when
    it applies ``invoice.paid``, in the same transaction). Other invoices are ignored.

    Returns:
        True when an engagement was told now.
    """
    if conn is None:
        with postgres.transaction() as own:
            return notify_invoice_paid(stripe_invoice_id, own)
    row = conn.execute(
        "SELECT id, client_id, instance_id FROM engagements WHERE stripe_invoice_id = %s",
        (stripe_invoice_id,),
    ).fetchone()
    if row is None:
        return False
    return _queue_event(
        conn,
        row[0],
        row[1],
        row[2],
        INVOICE_PAID_EVENT,
        {"stripe_invoice_id": stripe_invoice_id},
        f"paid:{stripe_invoice_id}",
    )


def queue_invoice_paid(stripe_invoice_id: str, conn: psycopg.Connection) -> None:
    """As ``notify_invoice_paid`` in the caller's transaction, in one statement whose answer
    nobody waits for: for a caller that pipelines its statements (billing)."""
    conn.execute(
        "INSERT INTO engagement_events (engagement_id, client_id, instance_id, event_name,"
        " payload, dedupe_key) SELECT id, client_id, instance_id, %s, %s, %s"
        " FROM engagements WHERE stripe_invoice_id = %s"
        " ON CONFLICT (dedupe_key) DO NOTHING",
        (
            INVOICE_PAID_EVENT,
            json.dumps({"stripe_invoice_id": stripe_invoice_id}),
            f"paid:{stripe_invoice_id}",
            stripe_invoice_id,
        ),
    )


def _queue_event(
    conn: psycopg.Connection,
    engagement_id: uuid.UUID,
    client_id: uuid.UUID,
    instance_id: str,
    name: str,
    payload: dict[str, Any],
    dedupe_key: str,
) -> bool:
    row = conn.execute(
        "INSERT INTO engagement_events (engagement_id, client_id, instance_id, event_name,"
        " payload, dedupe_key) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        (engagement_id, client_id, instance_id, name, json.dumps(payload), dedupe_key),
    ).fetchone()
    return row is not None


def pending_events(limit: int = 100) -> list[tuple[int, str, str, dict[str, Any]]]:
    """Events not yet raised in their orchestrations, oldest first: (id, instance, name,
    payload)."""
    with postgres.transaction() as conn:
        rows = conn.execute(
            "SELECT id, instance_id, event_name, payload FROM engagement_events"
            " WHERE relayed_at IS NULL ORDER BY id LIMIT %s",
            (limit,),
        ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2]), dict(r[3])) for r in rows]


def mark_relayed(event_id: int) -> None:
    """Record that an event was raised (a repeat raise is harmless: see the orchestrator)."""
    mark_all_relayed([event_id])


def mark_all_relayed(event_ids: list[int]) -> None:
    """Record that these events were raised, in one statement; see ``mark_relayed``."""
    if not event_ids:
        return
    with postgres.transaction() as conn:
        conn.execute(
            "UPDATE engagement_events SET relayed_at = now() WHERE id = ANY(%s)"
            " AND relayed_at IS NULL",
            (event_ids,),
        )
