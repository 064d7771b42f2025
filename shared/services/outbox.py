"""The outbox: messages written in the same transaction as the change that caused them, and
their delivery to Service Bus after the commit, by the request itself or later by the relay.

Each session's messages leave in the order they were written: only the oldest unsent row of
a session is picked up, and the rows behind it go with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from shared.adapters import postgres
from shared.config import (
    OUTBOX_BACKOFF_FIRST_S,
    OUTBOX_BACKOFF_MAX_S,
    OUTBOX_RELAY_MAX_ROUNDS,
    OUTBOX_RELAY_MESSAGES_PER_SESSION,
    OUTBOX_RELAY_SESSIONS_PER_ROUND,
)
from shared.messaging import MessageSender, OutboundMessage

log = logging.getLogger(__name__)

LAST_ERROR_MAX_CHARS = 1000

# Limitation: a request that finds an older row of its session unsent (another request is
# sending it) leaves its own row to the relay, so under concurrent deliveries of one
# customer's events a message can wait up to one relay period (OUTBOX_RELAY_SCHEDULE).
# The oldest unsent row of each session that is due. SKIP LOCKED: a row another relay (or
# a request delivering its own rows) holds is left to it. The NOT EXISTS keeps a newer row
# of a session waiting while an older one is unsent, whoever holds that one.
_HEADS_SQL = """
SELECT o.id, o.queue, coalesce(o.session_id, '')
FROM outbox o
WHERE o.sent_at IS NULL AND o.next_attempt_at <= now() {only}
  AND NOT EXISTS (
      SELECT 1 FROM outbox e
      WHERE e.sent_at IS NULL AND e.queue = o.queue
        AND coalesce(e.session_id, '') = coalesce(o.session_id, '') AND e.id < o.id)
ORDER BY o.id
LIMIT %(limit)s
FOR UPDATE OF o SKIP LOCKED
"""

_SESSION_ROWS_SQL = """
SELECT id, message_id, session_id, subject, content_type, body, properties
FROM outbox
WHERE sent_at IS NULL AND queue = %s AND coalesce(session_id, '') = %s AND id >= %s
ORDER BY id
LIMIT %s
FOR UPDATE
"""


class TransactionalSender(Protocol):
    """A sender that can enqueue inside the caller's own statement.

    The local broker keeps its queues in the app's own database, so a message can join the
    transaction that caused it: it becomes visible at the commit, or never, and nothing is
    left to hand off afterwards. A real namespace cannot; the outbox carries its messages.
    """

    def enqueues_in_transaction(self) -> bool:
        """True when ``enqueue_sql`` may be used."""
        ...

    def enqueue_sql(self, messages: Sequence[tuple[str, OutboundMessage]]) -> str:
        """CTEs that enqueue the rows of a relation ``outgoing`` (see
        ``LocalBroker.enqueue_sql``), after checking the messages it will hold."""
        ...


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one delivery pass did: messages handed to Service Bus, sessions that failed."""

    sent: int = 0
    failed: int = 0

    def __add__(self, other: DeliveryOutcome) -> DeliveryOutcome:
        return DeliveryOutcome(self.sent + other.sent, self.failed + other.failed)


def add(
    conn: psycopg.Connection,
    queue: str,
    message: OutboundMessage,
    *,
    inbox_id: int | None = None,
    replay_no: int = 0,
    sent: bool = False,
) -> int | None:
    """Write one message to the outbox inside the caller's transaction.

    Args:
        conn: the caller's connection; the row commits with the caller's change.
        queue: a queue of ``shared.messaging.QUEUES``.
        message: the message; its ``message_id`` is unique per queue.
        inbox_id: the inbox row the message came from, if any.
        replay_no: 0 for an original delivery, n for the n-th replay of an event.
        sent: the message is enqueued in this same transaction (see
            ``TransactionalSender``): the row is written as sent, after one attempt.

    Returns:
        The new row's id, or None when the queue already has a message with that id.
    """
    row = conn.execute(
        "INSERT INTO outbox (queue, message_id, session_id, subject, content_type, body,"
        " properties, inbox_id, replay_no, sent_at, attempts)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " CASE WHEN %s THEN now() END, CASE WHEN %s THEN 1 ELSE 0 END)"
        " ON CONFLICT (queue, message_id) DO NOTHING RETURNING id",
        (
            queue,
            message.message_id,
            message.session_id,
            message.subject,
            message.content_type,
            message.body,
            json.dumps(dict(message.application_properties)),
            inbox_id,
            replay_no,
            sent,
            sent,
        ),
    ).fetchone()
    return int(row[0]) if row else None


def deliver(sender: MessageSender, ids: Sequence[int]) -> DeliveryOutcome:
    """Send the given committed rows now, with the rest of their sessions, oldest first.

    A row that waits behind an older unsent row of its session, or that another relay holds,
    is left for the relay (see ``relay``). Failures are recorded on the rows, not raised.

    Raises:
        UpstreamError: the database could not be reached; the rows stay for the relay.
    """
    if not ids:
        return DeliveryOutcome()
    return _round(sender, only=list(ids))


def relay(sender: MessageSender) -> DeliveryOutcome:
    """Send every due unsent row, each session in order, and push failed sessions back.

    A failed session's oldest row is retried after 30 s, doubling per attempt up to an
    hour (``next_attempt_at``); its newer rows wait behind it. Runs rounds of up to 100
    sessions until none is due, at most 20 rounds per call.

    Raises:
        UpstreamError: the database could not be reached.
    """
    total = DeliveryOutcome()
    for _ in range(OUTBOX_RELAY_MAX_ROUNDS):
        outcome = _round(sender, only=None)
        total += outcome
        if outcome.sent == 0:
            break
    level = logging.INFO if total.sent or total.failed else logging.DEBUG
    log.log(
        level,
        "outbox relay: %d sent, %d session(s) failed",
        total.sent,
        total.failed,
        extra={"operation": "outbox.relay", "sent": total.sent, "failed": total.failed},
    )
    return total


# Limitation: a round holds its rows' locks and a database connection while Service Bus
# takes each session's messages, so a slow namespace slows the relay and the webhook
# answers (which wait for their own hand-off) as much as the sender's timeout allows.
def _round(sender: MessageSender, only: list[int] | None) -> DeliveryOutcome:
    outcome = DeliveryOutcome()
    with postgres.transaction() as conn:
        sql = _HEADS_SQL.format(only="AND o.id = ANY(%(only)s)" if only is not None else "")
        heads = conn.execute(
            sql, {"limit": OUTBOX_RELAY_SESSIONS_PER_ROUND, "only": only}
        ).fetchall()
        for head_id, queue, session_key in heads:
            rows = conn.execute(
                _SESSION_ROWS_SQL,
                (queue, session_key, head_id, OUTBOX_RELAY_MESSAGES_PER_SESSION),
            ).fetchall()
            outcome += _send_session(conn, sender, queue, head_id, rows)
    return outcome


def _send_session(
    conn: psycopg.Connection,
    sender: MessageSender,
    queue: str,
    head_id: int,
    rows: list[tuple[Any, ...]],
) -> DeliveryOutcome:
    messages = [
        OutboundMessage(
            message_id=message_id,
            body=bytes(body),
            session_id=session_id,
            content_type=content_type,
            subject=subject,
            application_properties=dict(properties),
        )
        for _, message_id, session_id, subject, content_type, body, properties in rows
    ]
    ids = [row[0] for row in rows]
    try:
        sender.send(queue, messages)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the rows for a later retry
        _record_failure(conn, queue, head_id, messages[0].message_id, exc)
        return DeliveryOutcome(failed=1)
    conn.execute(
        "UPDATE outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL"
        " WHERE id = ANY(%s)",
        (ids,),
    )
    return DeliveryOutcome(sent=len(ids))


def _record_failure(
    conn: psycopg.Connection, queue: str, head_id: int, message_id: str, exc: Exception
) -> None:
    row = conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = %s,"
        " next_attempt_at = now() + make_interval(secs => least(%s * power(2, attempts), %s))"
        " WHERE id = %s RETURNING attempts, next_attempt_at",
        (
            f"{type(exc).__name__}: {exc}"[:LAST_ERROR_MAX_CHARS],
            OUTBOX_BACKOFF_FIRST_S,
            OUTBOX_BACKOFF_MAX_S,
            head_id,
        ),
    ).fetchone()
    attempts, retry_at = row if row else (None, None)
    log.warning(
        "sending to %s failed (%s); retrying after %s",
        queue,
        type(exc).__name__,
        retry_at,
        extra={
            "system": "servicebus",
            "operation": "send",
            "queue": queue,
            "message_id": message_id,
            "attempt": attempts,
        },
    )
