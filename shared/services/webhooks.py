"""Webhook intake: Stripe and QuickBooks deliveries verified on their raw bytes, each event
recorded once in the inbox together with its outbox messages, and handed on after the commit.

``accept_stripe`` and ``accept_quickbooks`` take a delivery; ``replay`` sends recorded events
again through the same path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg

from shared.adapters import postgres
from shared.adapters import stripe as stripe_adapter
from shared.config import WEBHOOK_REPLAY_MAX_EVENTS, get_settings
from shared.errors import AdvisorError, ConfigError, ValidationError
from shared.messaging import (
    QUICKBOOKS_EVENTS_QUEUE,
    STRIPE_EVENTS_QUEUE,
    MessageSender,
    OutboundMessage,
)
from shared.services import outbox

log = logging.getLogger(__name__)

STRIPE = "stripe"
QUICKBOOKS = "quickbooks"
SOURCES = (STRIPE, QUICKBOOKS)

STRIPE_SIGNATURE_HEADER = "stripe-signature"
QUICKBOOKS_SIGNATURE_HEADER = "intuit-signature"
# Stripe events of the platform itself (no customer, no connected account) share a session.
PLATFORM_SESSION = "platform"
# Service Bus takes message ids of up to 128 characters; a replay appends ':replay:<n>'.
MESSAGE_ID_MAX_CHARS = 110
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "intuit-t-id", "x-ms-request-id")

# CloudEvents name entities in lower case (``qbo.journalentry.created.v1``); messages use
# the names of the classic notifications and of the QuickBooks API.
_ENTITY_NAMES = (
    "Account Bill BillPayment Budget Class CreditMemo Currency Customer Department Deposit"
    " Employee Estimate Invoice Item JournalCode JournalEntry Payment PaymentMethod"
    " Preferences Purchase PurchaseOrder RefundReceipt SalesReceipt TaxAgency Term"
    " TimeActivity Transfer Vendor VendorCredit"
)
QUICKBOOKS_ENTITIES = {name.lower(): name for name in _ENTITY_NAMES.split(" ")}
QUICKBOOKS_OPERATIONS = {
    "created": "Create",
    "updated": "Update",
    "deleted": "Delete",
    "merged": "Merge",
    "voided": "Void",
    "emailed": "Emailed",
}


@dataclass(frozen=True, slots=True)
class Receipt:
    """What became of one delivery.

    Attributes:
        source: ``stripe`` or ``quickbooks``.
        event_id: the inbox key (Stripe's event id; ``sha256:<hex>`` of a QuickBooks body).
        duplicate: the event was already recorded; nothing new was done.
        messages: outbox messages written for it.
        sent: of those, how many reached Service Bus before the answer (the relay sends
            the rest).
    """

    source: str
    event_id: str
    duplicate: bool
    messages: int = 0
    sent: int = 0


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What a replay did: events replayed, messages written and sent, ids not in the inbox."""

    replayed: int
    messages: int
    sent: int
    not_found: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EntityChange:
    """One QuickBooks entity change, as the QuickBooks events queue carries it."""

    realm_id: str
    entity: str
    entity_id: str
    operation: str
    last_updated: str
    deleted_id: str | None = None

    @property
    def message_id(self) -> str:
        """``realm:entity:id:operation:last_updated``, stable across redeliveries."""
        return ":".join(
            (self.realm_id, self.entity, self.entity_id, self.operation, self.last_updated)
        )

    def to_json(self) -> dict[str, str]:
        """The message body's fields; ``deleted_id`` only when QuickBooks gave one (merges)."""
        body = {
            "realm_id": self.realm_id,
            "entity": self.entity,
            "entity_id": self.entity_id,
            "operation": self.operation,
            "last_updated": self.last_updated,
        }
        if self.deleted_id is not None:
            body["deleted_id"] = self.deleted_id
        return body


@dataclass(frozen=True, slots=True)
class _Arrival:
    source: str
    event_id: str
    event_type: str
    livemode: bool | None
    body: bytes
    signature: str
    headers: Mapping[str, str]
    traceparent: str


def accept_stripe(
    body: bytes,
    headers: Mapping[str, str],
    sender: MessageSender,
    *,
    traceparent: str,
    now: float | None = None,
) -> Receipt:
    """Verify a Stripe delivery, record its event once, and hand it to the Stripe queue.

    See ``accept_quickbooks`` for the QuickBooks endpoint and ``replay`` to send a recorded
    event again.

    Args:
        body: the request body exactly as received.
        headers: the request headers, names in lower case.
        sender: used after the commit; if it fails the outbox relay sends later.
        traceparent: W3C trace context of the request, carried on the message.
        now: the current Unix time in seconds (default: the clock), for the timestamp check.

    Returns:
        The receipt; ``duplicate`` when the event id was already recorded.

    Raises:
        ValidationError: bad or missing signature, a timestamp outside the tolerance
            (``STRIPE_WEBHOOK_TOLERANCE_S``, default 300 s), a body that is no event, or an
            event of the other mode (``STRIPE_LIVEMODE``). Nothing is stored.
        ConfigError: no endpoint secret is configured.
        UpstreamError: the database is unavailable; nothing is stored.
    """
    # Authenticity first: nothing of an unsigned or replayed-late body is read or kept.
    settings = get_settings()
    signature = headers.get(STRIPE_SIGNATURE_HEADER)
    timestamp = stripe_adapter.verify_signature(body, signature, settings.stripe_webhook_secrets)
    _check_age(timestamp, time.time() if now is None else now, settings.stripe_webhook_tolerance_s)

    # A test-mode event at the live endpoint (or the reverse) is a misconfigured endpoint.
    event = _stripe_event(body)
    if event["livemode"] is not settings.stripe_livemode:
        wanted = "live" if settings.stripe_livemode else "test"
        got = "live" if event["livemode"] else "test"
        raise ValidationError(
            f"the event is a {got}-mode event; this endpoint takes {wanted} mode"
        )

    arrival = _Arrival(
        source=STRIPE,
        event_id=event["id"],
        event_type=event["type"],
        livemode=event["livemode"],
        body=body,
        signature=str(signature),
        headers=headers,
        traceparent=traceparent,
    )
    message = stripe_message(event, body, traceparent)
    return _record(arrival, [(STRIPE_EVENTS_QUEUE, message)], sender)


def accept_quickbooks(
    body: bytes, headers: Mapping[str, str], sender: MessageSender, *, traceparent: str
) -> Receipt:
    """Verify a QuickBooks delivery, record it once, and queue one message per entity change.

    Both payload forms are read: the classic ``eventNotifications`` object and the
    CloudEvents array. A delivery has no id of its own, so the inbox keys it by the sha256
    of its body: a retried delivery is a duplicate. See ``accept_stripe`` for Stripe.

    Args:
        body: the request body exactly as received.
        headers: the request headers, names in lower case.
        sender: used after the commit; if it fails the outbox relay sends later.
        traceparent: W3C trace context of the request, carried on the messages.

    Raises:
        ValidationError: bad or missing ``intuit-signature`` (base64 of the HMAC-SHA256 of
            the body under a verifier token), or a body in neither form. Nothing is stored.
        ConfigError: no verifier token is configured.
        UpstreamError: the database is unavailable; nothing is stored.
    """
    signature = headers.get(QUICKBOOKS_SIGNATURE_HEADER)
    verify_quickbooks_signature(body, signature, get_settings().quickbooks_webhook_verifier_tokens)
    kind, changes = parse_quickbooks(body)
    arrival = _Arrival(
        source=QUICKBOOKS,
        event_id="sha256:" + hashlib.sha256(body).hexdigest(),
        event_type=kind,
        livemode=None,
        body=body,
        signature=str(signature),
        headers=headers,
        traceparent=traceparent,
    )
    messages = [(QUICKBOOKS_EVENTS_QUEUE, quickbooks_message(c, traceparent)) for c in changes]
    return _record(arrival, messages, sender)


def verify_quickbooks_signature(body: bytes, signature: str | None, tokens: Sequence[str]) -> None:
    """Check ``intuit-signature``: base64(HMAC-SHA256(verifier token, raw body)), any token.

    Raises:
        ValidationError: the header is missing or matches no token.
        ConfigError: no verifier token is configured.
    """
    if not tokens:
        raise ConfigError(
            "QUICKBOOKS_WEBHOOK_VERIFIER_TOKENS is not set: QuickBooks webhooks cannot be verified"
        )
    if not signature:
        raise ValidationError("the intuit-signature header is missing")
    given = signature.strip().encode("ascii", "replace")
    for token in tokens:
        digest = hmac.new(token.encode(), body, hashlib.sha256).digest()
        if hmac.compare_digest(base64.b64encode(digest), given):
            return
    raise ValidationError("the intuit-signature header matches no configured verifier token")


# Limitation: the message is the whole event, so an event over the queue's message size
# limit (256 KB on the Service Bus Standard tier) fails to send and stays in the outbox,
# retried hourly, until the namespace takes larger messages (Premium).
def stripe_message(event: Mapping[str, Any], body: bytes, traceparent: str) -> OutboundMessage:
    """The Stripe queue message of an event: the raw body, keyed by event id, per customer."""
    return OutboundMessage(
        message_id=str(event["id"]),
        body=body,
        session_id=stripe_session(event),
        subject=str(event["type"]),
        application_properties={
            "source": STRIPE,
            "event_type": str(event["type"]),
            "traceparent": traceparent,
        },
    )


def stripe_session(event: Mapping[str, Any]) -> str:
    """The customer an event is about, else its connected account, else ``platform``."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if isinstance(obj, dict):
        customer = obj.get("customer")
        if isinstance(customer, dict):
            customer = customer.get("id")
        if isinstance(customer, str) and customer:
            return customer
        if obj.get("object") == "customer" and isinstance(obj.get("id"), str) and obj["id"]:
            return str(obj["id"])
    account = event.get("account")
    return account if isinstance(account, str) and account else PLATFORM_SESSION


def quickbooks_message(change: EntityChange, traceparent: str) -> OutboundMessage:
    """The QuickBooks queue message of one entity change, per realm."""
    return OutboundMessage(
        message_id=change.message_id,
        body=json.dumps(change.to_json(), separators=(",", ":")).encode(),
        session_id=change.realm_id,
        subject=f"{change.entity}.{change.operation}",
        application_properties={"source": QUICKBOOKS, "traceparent": traceparent},
    )


def parse_quickbooks(body: bytes) -> tuple[str, list[EntityChange]]:
    """Read a QuickBooks webhook body in either form.

    Returns:
        ``eventNotifications`` or ``cloudevents``, and the entity changes in body order.

    Raises:
        ValidationError: the body is in neither form; the message names the field.
    """
    payload = _json(body)
    if isinstance(payload, dict) and "specversion" in payload:
        payload = [payload]
    if isinstance(payload, dict) and "eventNotifications" in payload:
        kind, changes = "eventNotifications", _classic_changes(payload["eventNotifications"])
    elif isinstance(payload, list):
        kind = "cloudevents"
        changes = [_cloud_event_change(e, f"[{i}]") for i, e in enumerate(payload)]
    else:
        raise ValidationError("the body is neither an eventNotifications object nor CloudEvents")
    for change in changes:
        if len(change.message_id) > MESSAGE_ID_MAX_CHARS:
            raise ValidationError(
                f"the change of {change.entity} {change.entity_id} has ids too long for a"
                f" message id ({MESSAGE_ID_MAX_CHARS} characters)"
            )
    return kind, changes


def replay(
    sender: MessageSender,
    *,
    traceparent: str,
    event_ids: Sequence[str] = (),
    source: str | None = None,
    received_from: datetime | None = None,
    received_to: datetime | None = None,
) -> ReplayOutcome:
    """Send recorded events again: by event id, or all received in ``[from, to)``.

    Each replayed event gets new outbox messages whose ids end in ``:replay:<n>`` (n counts
    the event's replays), so Service Bus duplicate detection does not drop them; consumers
    recognise the event by its id.

    Args:
        sender: used after the commit, as for a delivery.
        traceparent: W3C trace context of the replay request.
        event_ids: inbox event ids; give these or a time range, not both.
        source: only events of this source (``stripe`` or ``quickbooks``).
        received_from: start of the range, inclusive (aware datetime).
        received_to: end of the range, exclusive.

    Raises:
        ValidationError: no or both selections, an unknown source, or a range of more than
            1000 events.
        UpstreamError: the database is unavailable; nothing was replayed.
    """
    by_range = received_from is not None or received_to is not None
    if bool(event_ids) == by_range:
        raise ValidationError("give either event_ids or a received_from/received_to range")
    if source is not None and source not in SOURCES:
        raise ValidationError(f"source {source!r} is unknown; use one of {', '.join(SOURCES)}")

    written: list[int] = []
    with postgres.transaction() as conn:
        rows = _select_for_replay(conn, event_ids, source, received_from, received_to)
        for inbox_id, row_source, _, raw_body, replay_no in rows:
            for queue, message in _messages_of(row_source, bytes(raw_body), traceparent):
                replayed = _as_replay(message, replay_no)
                row_id = outbox.add(conn, queue, replayed, inbox_id=inbox_id, replay_no=replay_no)
                if row_id is not None:
                    written.append(row_id)
    found = {str(row[2]) for row in rows}
    missing = tuple(e for e in event_ids if e not in found)
    log.info(
        "replayed %d event(s) as %d message(s)",
        len(rows),
        len(written),
        extra={"operation": "webhooks.replay", "count": len(rows)},
    )
    sent = _deliver_quietly(sender, written)
    return ReplayOutcome(len(rows), len(written), sent, missing)


def _record(
    arrival: _Arrival, messages: list[tuple[str, OutboundMessage]], sender: MessageSender
) -> Receipt:
    # One statement, one transaction: the event and its messages are kept together or not
    # at all. A sender that enqueues in the same database (the local broker) takes the
    # messages in that statement too, so one commit records and hands off; other senders
    # get them from the outbox after the commit.
    fields = {"source": arrival.source, "event_id": arrival.event_id}
    local = _in_transaction(sender)
    enqueue = local.enqueue_sql(messages) if local is not None else None
    row = postgres.single_statement(_record_sql(enqueue), _record_params(arrival, messages))
    if row is None:
        log.warning("webhook event already recorded; nothing to do", extra=fields)
        return Receipt(arrival.source, arrival.event_id, duplicate=True)
    written = [int(i) for i in row[1]]
    log.info("webhook event recorded with %d message(s)", len(written), extra=fields)
    if local is not None:
        return Receipt(arrival.source, arrival.event_id, False, len(written), len(written))

    # Committed: the hand-off may fail now without losing anything.
    sent = _deliver_quietly(sender, written)
    return Receipt(arrival.source, arrival.event_id, False, len(written), sent)


def _in_transaction(sender: MessageSender) -> outbox.TransactionalSender | None:
    # Duck-typed: an isinstance check against the protocol costs more than the rest of
    # this function on every request.
    enqueues = getattr(sender, "enqueues_in_transaction", None)
    if enqueues is not None and enqueues():
        return cast(outbox.TransactionalSender, sender)
    return None


# The inbox row and its outbox rows: when the event is a duplicate the inbox insert returns
# nothing, and so no outbox row is written either. A message id the queue already had is
# neither kept nor sent again. With ``{enqueue}`` the kept rows are enqueued as well, and
# written as sent after one attempt.
_RECORD_SQL = """
WITH event AS (
    INSERT INTO inbox (source, event_id, event_type, livemode, raw_body, signature_header,
                       content_type, user_agent, request_id, traceparent)
    VALUES (%(source)s, %(event_id)s, %(event_type)s, %(livemode)s, %(body)s, %(signature)s,
            %(content_type)s, %(user_agent)s, %(request_id)s, %(traceparent)s)
    ON CONFLICT (source, event_id) DO NOTHING
    RETURNING id
), kept AS (
    INSERT INTO outbox (queue, message_id, session_id, subject, content_type, body,
                        properties, inbox_id, sent_at, attempts)
    SELECT m.queue, m.message_id, m.session_id, m.subject, m.content_type, m.body,
           m.properties, event.id, {sent_at}, {attempts}
    FROM event CROSS JOIN unnest(%(queues)s::text[], %(ids)s::text[], %(sessions)s::text[],
                                 %(subjects)s::text[], %(types)s::text[], %(bodies)b::bytea[],
                                 %(properties)s::jsonb[]) WITH ORDINALITY
        AS m (queue, message_id, session_id, subject, content_type, body, properties, n)
    ORDER BY m.n
    ON CONFLICT (queue, message_id) DO NOTHING
    RETURNING id, queue, message_id, session_id, subject, content_type, body, properties
){enqueue}
SELECT event.id, array(SELECT id FROM kept ORDER BY id) FROM event
"""

_OUTGOING_FROM_KEPT = """, outgoing AS (
    SELECT queue, message_id, session_id, body, content_type, subject, properties,
           NULL::timestamptz AS scheduled, id AS n
    FROM kept
), """


def _record_sql(enqueue: str | None) -> str:
    if enqueue is None:
        return _RECORD_SQL.format(sent_at="NULL", attempts="0", enqueue="")
    return _RECORD_SQL.format(
        sent_at="now()", attempts="1", enqueue=_OUTGOING_FROM_KEPT + enqueue.strip()
    )


def _record_params(
    arrival: _Arrival, messages: list[tuple[str, OutboundMessage]]
) -> dict[str, Any]:
    headers = arrival.headers
    request_id = next((headers[h] for h in _REQUEST_ID_HEADERS if headers.get(h)), None)
    return {
        "source": arrival.source,
        "event_id": arrival.event_id,
        "event_type": arrival.event_type,
        "livemode": arrival.livemode,
        "body": arrival.body,
        "signature": arrival.signature,
        "content_type": headers.get("content-type"),
        "user_agent": headers.get("user-agent"),
        "request_id": request_id,
        "traceparent": arrival.traceparent,
        "queues": [queue for queue, _ in messages],
        "ids": [m.message_id for _, m in messages],
        "sessions": [m.session_id for _, m in messages],
        "subjects": [m.subject for _, m in messages],
        "types": [m.content_type for _, m in messages],
        "bodies": [m.body for _, m in messages],
        "properties": [json.dumps(dict(m.application_properties)) for _, m in messages],
    }


def _deliver_quietly(sender: MessageSender, ids: list[int]) -> int:
    # The messages are committed: whatever happens now, the relay delivers them later.
    try:
        return outbox.deliver(sender, ids).sent
    except AdvisorError as exc:
        log.warning("immediate hand-off failed (%s); the relay will send", exc)
        return 0


def _select_for_replay(
    conn: psycopg.Connection,
    event_ids: Sequence[str],
    source: str | None,
    received_from: datetime | None,
    received_to: datetime | None,
) -> list[tuple[Any, ...]]:
    # FOR UPDATE: two replays of one event take turns, so each gets its own replay number.
    params: list[object] = []
    if event_ids:
        where = "i.event_id = ANY(%s)"
        params.append(list(event_ids))
    else:
        where = "TRUE"
        if received_from is not None:
            where += " AND i.received_at >= %s"
            params.append(received_from)
        if received_to is not None:
            where += " AND i.received_at < %s"
            params.append(received_to)
    if source is not None:
        where += " AND i.source = %s"
        params.append(source)
    rows = conn.execute(
        f"SELECT i.id, i.source, i.event_id, i.raw_body FROM inbox i WHERE {where}"
        " ORDER BY i.id LIMIT %s FOR UPDATE",
        [*params, WEBHOOK_REPLAY_MAX_EVENTS + 1],
    ).fetchall()
    if len(rows) > WEBHOOK_REPLAY_MAX_EVENTS:
        raise ValidationError(
            f"more than {WEBHOOK_REPLAY_MAX_EVENTS} events match; replay a narrower range"
        )
    numbered = []
    for inbox_id, row_source, event_id, raw_body in rows:
        last = conn.execute(
            "SELECT coalesce(max(replay_no), 0) FROM outbox WHERE inbox_id = %s", (inbox_id,)
        ).fetchone()
        replay_no = int(last[0] if last else 0) + 1
        numbered.append((inbox_id, row_source, event_id, raw_body, replay_no))
    return numbered


def _messages_of(source: str, body: bytes, traceparent: str) -> list[tuple[str, OutboundMessage]]:
    if source == STRIPE:
        return [(STRIPE_EVENTS_QUEUE, stripe_message(_stripe_event(body), body, traceparent))]
    _, changes = parse_quickbooks(body)
    return [(QUICKBOOKS_EVENTS_QUEUE, quickbooks_message(c, traceparent)) for c in changes]


def _as_replay(message: OutboundMessage, replay_no: int) -> OutboundMessage:
    return OutboundMessage(
        message_id=f"{message.message_id}:replay:{replay_no}",
        body=message.body,
        session_id=message.session_id,
        content_type=message.content_type,
        subject=message.subject,
        application_properties={**message.application_properties, "replay": str(replay_no)},
    )


def _check_age(timestamp: int, now: float, tolerance_s: int) -> None:
    age = int(now - timestamp)
    if age > tolerance_s:
        raise ValidationError(
            f"the Stripe-Signature timestamp is {age} s old; the tolerance is {tolerance_s} s"
        )
    if -age > tolerance_s:
        raise ValidationError(
            f"the Stripe-Signature timestamp is {-age} s in the future;"
            f" the tolerance is {tolerance_s} s"
        )


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("the body is not valid JSON") from None


def _stripe_event(body: bytes) -> dict[str, Any]:
    event = _json(body)
    if not isinstance(event, dict):
        raise ValidationError("the body is not a Stripe event object")
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > MESSAGE_ID_MAX_CHARS:
        raise ValidationError("the event has no valid id")
    if not isinstance(event.get("type"), str) or not event["type"]:
        raise ValidationError(f"event {event_id} has no type")
    if not isinstance(event.get("livemode"), bool):
        raise ValidationError(f"event {event_id} has no livemode flag")
    return event


def _classic_changes(notifications: Any) -> list[EntityChange]:
    if not isinstance(notifications, list):
        raise ValidationError("eventNotifications must be a list")
    changes = []
    for n, notification in enumerate(notifications):
        where = f"eventNotifications[{n}]"
        if not isinstance(notification, dict):
            raise ValidationError(f"{where} must be an object")
        realm = _text(notification, "realmId", where)
        event = notification.get("dataChangeEvent")
        entities = event.get("entities") if isinstance(event, dict) else None
        if not isinstance(entities, list):
            raise ValidationError(f"{where}.dataChangeEvent.entities must be a list")
        for e, entity in enumerate(entities):
            at = f"{where}.dataChangeEvent.entities[{e}]"
            if not isinstance(entity, dict):
                raise ValidationError(f"{at} must be an object")
            deleted = entity.get("deletedId")
            changes.append(
                EntityChange(
                    realm_id=realm,
                    entity=_text(entity, "name", at),
                    entity_id=_text(entity, "id", at),
                    operation=_text(entity, "operation", at),
                    last_updated=_text(entity, "lastUpdated", at),
                    deleted_id=str(deleted) if deleted not in (None, "") else None,
                )
            )
    return changes


def _cloud_event_change(event: Any, where: str) -> EntityChange:
    if not isinstance(event, dict):
        raise ValidationError(f"{where} must be a CloudEvent object")
    event_type = _text(event, "type", where)
    parts = event_type.split(".")
    if len(parts) != 4 or parts[0] != "qbo" or parts[2] not in QUICKBOOKS_OPERATIONS:
        raise ValidationError(
            f"{where}.type {event_type!r} is not qbo.<entity>.<operation>.<version>"
        )
    return EntityChange(
        realm_id=_text(event, "intuitaccountid", where),
        entity=QUICKBOOKS_ENTITIES.get(parts[1].lower(), parts[1]),
        entity_id=_text(event, "intuitentityid", where),
        operation=QUICKBOOKS_OPERATIONS[parts[2]],
        last_updated=_text(event, "time", where),
    )


def _text(obj: Mapping[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{where}: field {name!r} is missing or empty")
    if ":" in value and name in ("realmId", "intuitaccountid", "name", "id", "intuitentityid"):
        raise ValidationError(f"{where}: field {name!r} must not contain ':'")
    return value
