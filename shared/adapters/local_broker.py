"""A Service Bus stand-in kept in Postgres (schema ``local_broker``), for local runs and tests.

Queues behave as Service Bus queues with the properties of their ``QueueSpec``: peek-lock
with a lock token and expiry, lock renewal, a delivery count, dead-lettering at the maximum
delivery count (``MaxDeliveryCountExceeded``) and on expiry, duplicate detection by
MessageId within the window, sessions delivered in order to one consumer at a time, and
scheduled messages. Everything is in tables, so it survives restarts and every process on
the database sees the same queues. The app's sender (no namespace configured) and the
devhost's Service Bus triggers both use this module.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from shared.errors import NotFound, UpstreamError, ValidationError
from shared.messaging import (
    ORIGINAL_MESSAGE_ID_PROPERTY,
    QUEUES,
    DeadLetter,
    OutboundMessage,
    QueueSpec,
    ResubmitOutcome,
    resubmitted_message_id,
)

log = logging.getLogger(__name__)

MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
TTL_EXPIRED = "TTLExpiredException"
LOCK_EXPIRED_ERROR = "the lock expired before the message was settled"
_SCHEMA_LOCK_KEY = 0x0B05_B0CE
# Sessions tried per receive call before it reports that nothing is available.
_SESSION_CANDIDATES = 16

_Cursor = psycopg.Cursor[dict[str, Any]]

Settlement = Literal["completed", "abandoned", "dead-lettered", "lost"]
"""How a settlement ended; ``lost`` means the lock had expired or passed to another consumer."""

# Limitation: the tables are created when missing and never altered; after a change to
# their columns, drop the schema ``local_broker`` (it only holds local messages).
SCHEMA_DDL = """
CREATE SCHEMA IF NOT EXISTS local_broker;
CREATE TABLE IF NOT EXISTS local_broker.queues (
    name  text PRIMARY KEY,
    spec  jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS local_broker.messages (
    seq                     bigserial PRIMARY KEY,
    queue                   text NOT NULL,
    message_id              text NOT NULL,
    session_id              text,
    body                    bytea NOT NULL,
    content_type            text,
    subject                 text,
    application_properties  jsonb NOT NULL DEFAULT '{}',
    enqueued_at             timestamptz NOT NULL DEFAULT now(),
    scheduled_at            timestamptz,
    visible_at              timestamptz NOT NULL,
    retry_at                timestamptz NOT NULL DEFAULT now(),
    expires_at              timestamptz NOT NULL,
    delivery_count          integer NOT NULL DEFAULT 0,
    state                   text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'dead')),
    lock_token              uuid,
    locked_until            timestamptz,
    last_error              text,
    dead_letter_reason      text,
    dead_letter_description text,
    dead_lettered_at        timestamptz
);
CREATE INDEX IF NOT EXISTS messages_active_idx
    ON local_broker.messages (queue, session_id, seq) WHERE state = 'active';
CREATE INDEX IF NOT EXISTS messages_dead_idx
    ON local_broker.messages (queue, seq) WHERE state = 'dead';
-- Every receive looks for expired messages and expired last deliveries; without these two
-- indexes each look reads every active message of the queue.
CREATE INDEX IF NOT EXISTS messages_expiry_idx
    ON local_broker.messages (queue, expires_at) WHERE state = 'active';
CREATE INDEX IF NOT EXISTS messages_locked_idx
    ON local_broker.messages (queue, locked_until) WHERE state = 'active';
CREATE UNIQUE INDEX IF NOT EXISTS messages_lock_idx
    ON local_broker.messages (lock_token) WHERE lock_token IS NOT NULL;
CREATE TABLE IF NOT EXISTS local_broker.sent_ids (
    queue       text NOT NULL,
    message_id  text NOT NULL,
    sent_at     timestamptz NOT NULL,
    PRIMARY KEY (queue, message_id)
);
-- Each send purges the ids older than the window; without it the purge reads them all.
CREATE INDEX IF NOT EXISTS sent_ids_age_idx ON local_broker.sent_ids (queue, sent_at);
CREATE TABLE IF NOT EXISTS local_broker.sessions (
    queue         text NOT NULL,
    session_id    text NOT NULL,
    lock_token    uuid NOT NULL,
    locked_until  timestamptz NOT NULL,
    PRIMARY KEY (queue, session_id)
);
"""

# ``send``'s two steps for many messages in one statement (see ``enqueue_sql``): record each
# MessageId unless it was sent within its queue's window, and enqueue the messages whose id
# was recorded, with their queue's time to live.
_ENQUEUE_OUTGOING_SQL = """
fresh AS (
    INSERT INTO local_broker.sent_ids AS s (queue, message_id, sent_at)
    SELECT o.queue, o.message_id, now() FROM outgoing o ORDER BY o.n
    ON CONFLICT (queue, message_id) DO UPDATE SET sent_at = EXCLUDED.sent_at
    WHERE s.sent_at < now() - make_interval(secs => (
        SELECT (q.spec ->> 'duplicate_detection_window_s')::int
        FROM local_broker.queues q WHERE q.name = s.queue))
    RETURNING queue, message_id
), enqueued AS (
    INSERT INTO local_broker.messages (
        queue, message_id, session_id, body, content_type, subject,
        application_properties, scheduled_at, visible_at, expires_at)
    SELECT o.queue, o.message_id, o.session_id, o.body, o.content_type, o.subject,
           o.properties, o.scheduled, greatest(now(), coalesce(o.scheduled, now())),
           greatest(now(), coalesce(o.scheduled, now()))
               + make_interval(secs => (q.spec ->> 'default_message_ttl_s')::int)
    FROM outgoing o
    JOIN fresh f ON f.queue = o.queue AND f.message_id = o.message_id
    JOIN local_broker.queues q ON q.name = o.queue
    ORDER BY o.n
    RETURNING queue, message_id
)
"""

# ``outgoing`` for messages to one queue, passed as arrays.
_OUTGOING_FROM_ARRAYS = """
outgoing AS (
    SELECT %(queue)s::text AS queue, m.*
    FROM unnest(%(ids)s::text[], %(sessions)s::text[], %(bodies)b::bytea[], %(types)s::text[],
                %(subjects)s::text[], %(properties)s::jsonb[], %(scheduled)s::timestamptz[])
        WITH ORDINALITY
        AS m (message_id, session_id, body, content_type, subject, properties, scheduled, n)
)
"""

_MESSAGE_COLUMNS = """
    seq, queue, message_id, session_id, body, content_type, subject, application_properties,
    enqueued_at, scheduled_at, expires_at, delivery_count, lock_token, locked_until
"""


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message received in peek-lock mode: settle it with its ``lock_token``.

    Attributes:
        delivery_count: deliveries so far, this one included (1 on the first delivery).
        locked_until: when the lock expires unless renewed (database clock, UTC).
    """

    queue: str
    sequence_number: int
    message_id: str
    session_id: str | None
    body: bytes
    content_type: str | None
    subject: str | None
    application_properties: Mapping[str, str]
    enqueued_time: datetime
    scheduled_enqueue_time: datetime | None
    expires_at: datetime
    delivery_count: int
    lock_token: str
    locked_until: datetime


@dataclass(frozen=True, slots=True)
class SessionBatch:
    """Messages of one session received together; the session is locked with
    ``lock_token`` until the batch is settled (each message has its own token as well)."""

    queue: str
    session_id: str
    lock_token: str
    messages: list[ReceivedMessage]


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Counts of one queue's messages by where they stand."""

    queue: str
    active: int
    scheduled: int
    locked: int
    dead_lettered: int


class LocalBroker:
    """Service Bus queues in Postgres; thread-safe, one instance per pool is enough.

    Args:
        pool: connections to the database that holds (or will hold) schema ``local_broker``.
        queues: the queues to declare on first use; default ``shared.messaging.QUEUES``.
            Queues declared by other processes (``declare``) are found in the database.
    """

    def __init__(self, pool: ConnectionPool, queues: Mapping[str, QueueSpec] = QUEUES) -> None:
        self._pool = pool
        self._specs: dict[str, QueueSpec] = dict(queues)
        self._pending = list(queues.values())
        self._ready = False
        self._lock = threading.Lock()

    # -- queues ---------------------------------------------------------------------------

    def declare(self, spec: QueueSpec) -> None:
        """Create or update a queue (as creating the entity in a namespace would)."""
        with self._transaction() as cur:
            _upsert_spec(cur, spec)
        self._specs[spec.name] = spec

    def spec(self, queue: str) -> QueueSpec:
        """The properties of a declared queue.

        Raises:
            NotFound: no queue of that name was declared.
        """
        found = self._specs.get(queue)
        if found is not None:
            return found
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT spec FROM local_broker.queues WHERE name = %s", (queue,)
            ).fetchone()
        if row is None:
            raise NotFound(f"queue {queue!r} does not exist")
        found = QueueSpec(**row["spec"])
        self._specs[queue] = found
        return found

    def queue_names(self) -> list[str]:
        """Every declared queue, by name."""
        with self._transaction() as cur:
            rows = cur.execute("SELECT name FROM local_broker.queues ORDER BY name").fetchall()
        return [str(r["name"]) for r in rows]

    # -- sending --------------------------------------------------------------------------

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        """Enqueue messages in one transaction; a MessageId seen within the window is dropped.

        Raises:
            NotFound: the queue does not exist.
            ValidationError: the queue requires sessions and a message has no session id.
            UpstreamError: the database is unavailable (retryable).
        """
        spec = self.spec(queue)
        _check_sessions(spec, messages)
        with self._transaction() as cur:
            cur.execute(
                "DELETE FROM local_broker.sent_ids WHERE queue = %s"
                " AND sent_at < now() - make_interval(secs => %s)",
                (queue, spec.duplicate_detection_window_s),
            )
            for message in messages:
                if not _first_within_window(cur, spec, message.message_id):
                    _log_duplicate(queue, message.message_id)
                    continue
                _insert(cur, spec, message)

    def enqueues_in_transaction(self) -> bool:
        """Always: the queues are tables of the app's database (see ``send_in_transaction``)."""
        return True

    def send_in_transaction(
        self, conn: psycopg.Connection, queue: str, messages: Sequence[OutboundMessage]
    ) -> None:
        """Enqueue messages inside the caller's transaction, as ``send`` does in its own.

        The messages become deliverable when the caller commits, and vanish if it rolls
        back. ``conn`` must be a connection to this broker's database. Expired MessageIds
        are left for ``send`` to purge: the window check ignores them anyway.

        Raises:
            NotFound: the queue does not exist.
            ValidationError: the queue requires sessions and a message has no session id.
            UpstreamError: the broker's schema cannot be created (database unavailable).
        """
        unique: dict[str, OutboundMessage] = {}
        for message in messages:
            if message.message_id in unique:
                _log_duplicate(queue, message.message_id)
            else:
                unique.setdefault(message.message_id, message)
        kept = list(unique.values())
        ctes = self.enqueue_sql([(queue, m) for m in kept])
        rows = conn.execute(
            f"WITH {_OUTGOING_FROM_ARRAYS}, {ctes} SELECT message_id FROM enqueued",
            {
                "queue": queue,
                "ids": [m.message_id for m in kept],
                "sessions": [m.session_id for m in kept],
                "bodies": [m.body for m in kept],
                "types": [m.content_type for m in kept],
                "subjects": [m.subject for m in kept],
                "properties": [json.dumps(dict(m.application_properties)) for m in kept],
                "scheduled": [m.scheduled_enqueue_time for m in kept],
            },
        ).fetchall()
        enqueued = {str(row[0]) for row in rows}
        for message in kept:
            if message.message_id not in enqueued:
                _log_duplicate(queue, message.message_id)

    def enqueue_sql(self, messages: Sequence[tuple[str, OutboundMessage]]) -> str:
        """Common table expressions that enqueue the rows of a relation ``outgoing``, for
        a caller that writes its own rows and enqueues them in one statement.

        ``outgoing`` must be defined earlier in the same ``WITH`` and have the columns
        queue, message_id, session_id, body, content_type, subject, properties (jsonb),
        scheduled (timestamptz) and n (the order), one row per MessageId of a queue. The
        CTEs are named ``fresh`` and ``enqueued``; ``enqueued`` returns the queue and
        message_id of each message enqueued (those sent within the window are dropped).

        Args:
            messages: the queue and message of each row ``outgoing`` will hold, checked
                here as ``send`` checks them.

        Raises:
            NotFound: a queue does not exist.
            ValidationError: a queue requires sessions and a message has no session id.
            UpstreamError: the broker's schema cannot be created (database unavailable).
        """
        for queue, message in messages:
            _check_sessions(self.spec(queue), [message])
        self._ensure_schema()
        return _ENQUEUE_OUTGOING_SQL

    # -- receiving and settling -----------------------------------------------------------

    def receive(self, queue: str, *, session_id: str | None = None) -> ReceivedMessage | None:
        """Lock and return the next deliverable message, or None when there is none.

        On a session queue the message's session is locked with it: no other consumer gets
        a message of that session until this one is settled or its lock expires, and a
        session's messages come in sequence order. ``session_id`` asks for one session only
        (as a receiver for a named session does); by default any free session is taken.

        Raises:
            NotFound: the queue does not exist.
            UpstreamError: the database is unavailable (retryable).
        """
        spec = self.spec(queue)
        token = str(uuid.uuid4())
        with self._transaction() as cur:
            _dead_letter_exhausted(cur, spec)
            _expire(cur, spec)
            if spec.requires_session:
                row = _receive_from_session(cur, spec, token, session_id)
            else:
                row = _lock_next(cur, spec, token, session_id=None)
        return _received(row) if row else None

    def receive_session_batches(
        self, queue: str, max_sessions: int, max_count: int, *, session_id: str | None = None
    ) -> list[SessionBatch]:
        """Lock up to ``max_sessions`` free sessions, each with up to ``max_count`` of its
        deliverable messages in order.

        As ``receive`` on a session queue, but each session stays locked for its whole batch
        (as a Service Bus session receiver holds it), and one search for free sessions serves
        several: the search is what a receive costs. A batch runs from its session's head
        and stops before the first message that waits out a retry delay. Settle each batch
        with ``settle_session_batch``.

        Raises:
            NotFound: the queue does not exist.
            ValidationError: the queue does not use sessions.
            UpstreamError: the database is unavailable (retryable).
        """
        spec = self.spec(queue)
        if not spec.requires_session:
            raise ValidationError(f"queue {queue} does not use sessions")
        batches: list[SessionBatch] = []
        with self._transaction() as cur:
            _dead_letter_exhausted(cur, spec)
            _expire(cur, spec)
            for candidate in _free_sessions(cur, spec, session_id):
                if len(batches) >= max_sessions:
                    break
                token = str(uuid.uuid4())
                rows = _lock_session_run(cur, spec, candidate, token, max_count)
                if rows:
                    received = [_received(r) for r in rows]
                    batches.append(SessionBatch(queue, candidate, token, received))
        return batches

    def renew_session_batch(self, batch: SessionBatch) -> datetime | None:
        """Extend the locks of a batch's messages still held, and of its session.

        Returns:
            The new expiry, or None when the session lock was already lost.
        """
        spec = self.spec(batch.queue)
        with self._transaction() as cur:
            row = cur.execute(
                """
                UPDATE local_broker.sessions
                SET locked_until = now() + make_interval(secs => %(lock)s)
                WHERE queue = %(q)s AND session_id = %(s)s AND lock_token = %(t)s
                  AND locked_until >= now()
                RETURNING locked_until
                """,
                {
                    "q": batch.queue,
                    "s": batch.session_id,
                    "t": batch.lock_token,
                    "lock": spec.lock_duration_s,
                },
            ).fetchone()
            if row is None:
                return None
            cur.execute(
                "UPDATE local_broker.messages SET locked_until = %s"
                " WHERE queue = %s AND lock_token = ANY(%s) AND locked_until >= now()",
                (row["locked_until"], batch.queue, [m.lock_token for m in batch.messages]),
            )
        until: datetime = row["locked_until"]
        return until

    def settle_session_batch(
        self,
        batch: SessionBatch,
        completed: Sequence[str],
        *,
        failed: tuple[str, str, float] | None = None,
    ) -> dict[str, Settlement]:
        """Settle a batch in one transaction and release its session.

        Args:
            batch: what ``receive_session_batch`` returned.
            completed: lock tokens of the messages handled; they are removed.
            failed: ``(lock_token, error, redeliver_after_s)`` of the message whose attempt
                failed; it is abandoned as ``abandon`` does (dead-lettered at the maximum
                delivery count).

        Every other message of the batch was not tried: it is unlocked with its delivery
        count as it was before this batch, so a failing predecessor never uses up its
        deliveries.

        Returns:
            The settlement of each completed or failed token (``lost`` when its lock had
            expired).
        """
        spec = self.spec(batch.queue)
        tried = set(completed) | ({failed[0]} if failed else set())
        untried = [m.lock_token for m in batch.messages if m.lock_token not in tried]
        outcome: dict[str, Settlement] = {token: "lost" for token in tried}
        with self._transaction() as cur:
            done = cur.execute(
                "DELETE FROM local_broker.messages"
                " WHERE queue = %s AND lock_token = ANY(%s) AND locked_until >= now()"
                " RETURNING lock_token",
                (batch.queue, list(completed)),
            ).fetchall()
            outcome.update({str(r["lock_token"]): "completed" for r in done})
            if failed is not None:
                token, error, delay = failed
                row = _abandon_row(cur, spec, token, error, delay)
                if row is not None:
                    dead = row["state"] == "dead"
                    outcome[token] = "dead-lettered" if dead else "abandoned"
            cur.execute(
                """
                UPDATE local_broker.messages
                SET lock_token = NULL, locked_until = NULL,
                    delivery_count = greatest(delivery_count - 1, 0)
                WHERE queue = %s AND lock_token = ANY(%s)
                """,
                (batch.queue, untried),
            )
            _release_session(cur, batch.queue, batch.session_id, batch.lock_token)
        return outcome

    def renew_lock(self, queue: str, lock_token: str) -> datetime | None:
        """Extend a held lock by the queue's lock duration (the session's too).

        Returns:
            The new expiry, or None when the lock was already lost.
        """
        spec = self.spec(queue)
        with self._transaction() as cur:
            row = cur.execute(
                """
                UPDATE local_broker.messages
                SET locked_until = now() + make_interval(secs => %(lock)s)
                WHERE queue = %(q)s AND lock_token = %(t)s AND locked_until >= now()
                RETURNING locked_until, session_id
                """,
                {"q": queue, "t": lock_token, "lock": spec.lock_duration_s},
            ).fetchone()
            if row is None:
                return None
            if row["session_id"] is not None:
                cur.execute(
                    "UPDATE local_broker.sessions SET locked_until = %s"
                    " WHERE queue = %s AND session_id = %s AND lock_token = %s",
                    (row["locked_until"], queue, row["session_id"], lock_token),
                )
        until: datetime = row["locked_until"]
        return until

    def complete(self, queue: str, lock_token: str) -> Settlement:
        """Remove a message whose lock is held; ``lost`` when the lock has expired."""
        with self._transaction() as cur:
            row = cur.execute(
                """
                DELETE FROM local_broker.messages
                WHERE queue = %s AND lock_token = %s AND locked_until >= now()
                RETURNING session_id
                """,
                (queue, lock_token),
            ).fetchone()
            if row is None:
                return "lost"
            _release_session(cur, queue, row["session_id"], lock_token)
        return "completed"

    def abandon(
        self, queue: str, lock_token: str, error: str, *, redeliver_after_s: float = 0.0
    ) -> Settlement:
        """Give a message back after a failed attempt; at the maximum delivery count it is
        dead-lettered with reason ``MaxDeliveryCountExceeded`` and a description naming
        ``error``.

        Args:
            queue: the queue the message came from.
            lock_token: the lock held on it.
            error: why the attempt failed, kept as the last error.
            redeliver_after_s: seconds before the message may be delivered again (Service
                Bus redelivers at once; the devhost waits to spare a failing dependency).

        Returns:
            ``abandoned``, ``dead-lettered``, or ``lost`` when the lock had expired.
        """
        spec = self.spec(queue)
        with self._transaction() as cur:
            row = _abandon_row(cur, spec, lock_token, error, redeliver_after_s)
            if row is None:
                return "lost"
            _release_session(cur, queue, row["session_id"], lock_token)
        return "dead-lettered" if row["state"] == "dead" else "abandoned"

    # -- dead letters ---------------------------------------------------------------------

    def peek_dead_letters(self, queue: str, max_count: int) -> list[DeadLetter]:
        """The oldest ``max_count`` dead-lettered messages of a queue, left where they are.

        Raises:
            NotFound: the queue does not exist.
        """
        self.spec(queue)
        with self._transaction() as cur:
            rows = cur.execute(
                """
                SELECT seq, message_id, session_id, body, content_type, subject,
                       application_properties, enqueued_at, delivery_count,
                       dead_letter_reason, dead_letter_description
                FROM local_broker.messages
                WHERE queue = %s AND state = 'dead' ORDER BY seq LIMIT %s
                """,
                (queue, max_count),
            ).fetchall()
        return [_dead_letter(r) for r in rows]

    def resubmit_dead_letters(self, queue: str, message_ids: Sequence[str]) -> ResubmitOutcome:
        """Send a copy of each named dead letter to its queue and remove it from the DLQ.

        The copy gets a new MessageId (see ``resubmitted_message_id``) and keeps the
        original one in the application property ``original_message_id``.

        Raises:
            NotFound: the queue does not exist.
        """
        spec = self.spec(queue)
        with self._transaction() as cur:
            rows = cur.execute(
                """
                DELETE FROM local_broker.messages
                WHERE queue = %s AND state = 'dead' AND message_id = ANY(%s)
                RETURNING seq, message_id, session_id, body, content_type, subject,
                          application_properties, enqueued_at, delivery_count,
                          dead_letter_reason, dead_letter_description
                """,
                (queue, list(message_ids)),
            ).fetchall()
            for dead in sorted((_dead_letter(r) for r in rows), key=lambda d: d.sequence_number):
                copy = resubmission(dead)
                if _first_within_window(cur, spec, copy.message_id):
                    _insert(cur, spec, copy)
        found = {str(r["message_id"]) for r in rows}
        return ResubmitOutcome(
            resubmitted=tuple(i for i in dict.fromkeys(message_ids) if i in found),
            not_found=tuple(i for i in dict.fromkeys(message_ids) if i not in found),
        )

    def depths(self) -> list[QueueDepth]:
        """Message counts of every declared queue."""
        with self._transaction() as cur:
            rows = cur.execute(
                """
                SELECT q.name,
                  count(m.seq) FILTER (WHERE m.state = 'active' AND m.visible_at <= now()
                      AND (m.locked_until IS NULL OR m.locked_until < now())) AS active,
                  count(m.seq) FILTER (WHERE m.state = 'active' AND m.visible_at > now())
                      AS scheduled,
                  count(m.seq) FILTER (WHERE m.state = 'active' AND m.locked_until >= now())
                      AS locked,
                  count(m.seq) FILTER (WHERE m.state = 'dead') AS dead
                FROM local_broker.queues q
                LEFT JOIN local_broker.messages m ON m.queue = q.name
                GROUP BY q.name ORDER BY q.name
                """
            ).fetchall()
        return [
            QueueDepth(r["name"], r["active"], r["scheduled"], r["locked"], r["dead"])
            for r in rows
        ]

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[_Cursor]:
        self._ensure_schema()
        try:
            with (
                self._pool.connection() as conn,
                conn.transaction(),
                conn.cursor(row_factory=dict_row) as cur,
            ):
                yield cur
        except psycopg.OperationalError as exc:
            raise UpstreamError(
                "the local broker's database is unavailable",
                provider="local-broker",
                retryable=True,
            ) from exc

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                with (
                    self._pool.connection() as conn,
                    conn.transaction(),
                    conn.cursor(row_factory=dict_row) as cur,
                ):
                    # Two processes starting at once would otherwise race on the DDL.
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                    cur.execute(SCHEMA_DDL)
                    for spec in self._pending:
                        _upsert_spec(cur, spec)
            except psycopg.OperationalError as exc:
                raise UpstreamError(
                    "the local broker's database is unavailable",
                    provider="local-broker",
                    retryable=True,
                ) from exc
            self._ready = True


def resubmission(dead: DeadLetter) -> OutboundMessage:
    """The copy of a dead letter that goes back to its queue."""
    return OutboundMessage(
        message_id=resubmitted_message_id(dead.message_id, dead.sequence_number),
        body=dead.body,
        session_id=dead.session_id,
        content_type=dead.content_type or "application/json",
        subject=dead.subject,
        application_properties={
            **dead.application_properties,
            ORIGINAL_MESSAGE_ID_PROPERTY: dead.message_id,
        },
    )


def _upsert_spec(cur: _Cursor, spec: QueueSpec) -> None:
    cur.execute(
        "INSERT INTO local_broker.queues (name, spec) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec",
        (spec.name, json.dumps(dataclasses.asdict(spec))),
    )


def _check_sessions(spec: QueueSpec, messages: Sequence[OutboundMessage]) -> None:
    for message in messages:
        if spec.requires_session and not message.session_id:
            raise ValidationError(
                f"queue {spec.name} requires a session id; message {message.message_id} has none"
            )


def _log_duplicate(queue: str, message_id: str) -> None:
    log.warning("duplicate message dropped", extra={"queue": queue, "message_id": message_id})


def _first_within_window(cur: _Cursor, spec: QueueSpec, message_id: str) -> bool:
    """Record a MessageId as sent; False when it was already sent within the window."""
    row = cur.execute(
        """
        INSERT INTO local_broker.sent_ids AS s (queue, message_id, sent_at)
        VALUES (%(q)s, %(id)s, now())
        ON CONFLICT (queue, message_id) DO UPDATE SET sent_at = EXCLUDED.sent_at
        WHERE s.sent_at < now() - make_interval(secs => %(window)s)
        RETURNING 1
        """,
        {"q": spec.name, "id": message_id, "window": spec.duplicate_detection_window_s},
    ).fetchone()
    return row is not None


def _insert(cur: _Cursor, spec: QueueSpec, message: OutboundMessage) -> None:
    cur.execute(
        """
        INSERT INTO local_broker.messages (
            queue, message_id, session_id, body, content_type, subject,
            application_properties, scheduled_at, visible_at, expires_at)
        VALUES (%(q)s, %(id)s, %(session)s, %(body)s, %(ct)s, %(subject)s, %(props)s,
                %(scheduled)s, greatest(now(), coalesce(%(scheduled)s, now())),
                greatest(now(), coalesce(%(scheduled)s, now()))
                    + make_interval(secs => %(ttl)s))
        """,
        {
            "q": spec.name,
            "id": message.message_id,
            "session": message.session_id,
            "body": message.body,
            "ct": message.content_type,
            "subject": message.subject,
            "props": json.dumps(dict(message.application_properties)),
            "scheduled": message.scheduled_enqueue_time,
            "ttl": spec.default_message_ttl_s,
        },
    )


def _dead_letter_exhausted(cur: _Cursor, spec: QueueSpec) -> None:
    """Dead-letter messages whose last allowed delivery ended with an expired lock."""
    cur.execute(
        """
        UPDATE local_broker.messages
        SET state = 'dead', dead_letter_reason = %(reason)s,
            dead_letter_description = 'Message could not be consumed after '
                || delivery_count || ' delivery attempts. Last error: ' || %(error)s,
            dead_lettered_at = now(), last_error = %(error)s,
            lock_token = NULL, locked_until = NULL
        WHERE queue = %(q)s AND state = 'active' AND locked_until < now()
          AND delivery_count >= %(max)s
        """,
        {
            "q": spec.name,
            "max": spec.max_delivery_count,
            "reason": MAX_DELIVERY_COUNT_EXCEEDED,
            "error": LOCK_EXPIRED_ERROR,
        },
    )


def _expire(cur: _Cursor, spec: QueueSpec) -> None:
    """Dead-letter (or drop) unlocked messages older than their time to live."""
    unlocked = "(locked_until IS NULL OR locked_until < now())"
    if spec.dead_lettering_on_message_expiration:
        cur.execute(
            f"""
            UPDATE local_broker.messages
            SET state = 'dead', dead_letter_reason = %s,
                dead_letter_description = 'The message expired and was dead lettered.',
                dead_lettered_at = now(), lock_token = NULL, locked_until = NULL
            WHERE queue = %s AND state = 'active' AND expires_at < now() AND {unlocked}
            """,
            (TTL_EXPIRED, spec.name),
        )
    else:
        cur.execute(
            f"DELETE FROM local_broker.messages WHERE queue = %s AND state = 'active'"
            f" AND expires_at < now() AND {unlocked}",
            (spec.name,),
        )


def _lock_next(
    cur: _Cursor, spec: QueueSpec, token: str, *, session_id: str | None
) -> dict[str, Any] | None:
    """Lock the first deliverable message (of one session, when ``session_id`` is given)."""
    if session_id is None:
        pick = """
            SELECT seq FROM local_broker.messages
            WHERE queue = %(q)s AND state = 'active' AND visible_at <= now()
              AND retry_at <= now() AND (locked_until IS NULL OR locked_until < now())
            ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED
        """
    else:
        # A session's head is its first visible message; until it is settled (or waits out a
        # retry delay) nothing behind it is delivered.
        pick = """
            SELECT seq FROM (
                SELECT seq, retry_at FROM local_broker.messages
                WHERE queue = %(q)s AND session_id = %(s)s AND state = 'active'
                  AND visible_at <= now()
                ORDER BY seq LIMIT 1 FOR UPDATE) head
            WHERE head.retry_at <= now()
        """
    row: dict[str, Any] | None = cur.execute(
        f"""
        UPDATE local_broker.messages m
        SET lock_token = %(t)s,
            locked_until = now() + make_interval(secs => %(lock)s),
            delivery_count = m.delivery_count + 1,
            last_error = CASE WHEN m.locked_until IS NOT NULL THEN %(expired)s
                              ELSE m.last_error END
        WHERE m.seq = ({pick})
        RETURNING {_MESSAGE_COLUMNS}
        """,
        {
            "q": spec.name,
            "s": session_id,
            "t": token,
            "lock": spec.lock_duration_s,
            "expired": LOCK_EXPIRED_ERROR,
        },
    ).fetchone()
    return row


# Limitation: ``receive`` locks a session for one message, and ``receive_session_batches``
# for one run of messages, not until the session is idle as a Service Bus session receiver
# holds it: between two messages (or runs) another consumer may take the session over.
# Order and one-consumer-at-a-time still hold; only the affinity differs.
def _receive_from_session(
    cur: _Cursor, spec: QueueSpec, token: str, only: str | None
) -> dict[str, Any] | None:
    """Take the lock of a free session with a deliverable head message, and lock that."""
    for session_id in _free_sessions(cur, spec, only):
        if not _take_session(cur, spec, session_id, token):
            continue
        row = _lock_next(cur, spec, token, session_id=session_id)
        if row is not None:
            return row
        _release_session(cur, spec.name, session_id, token)
    return None


def _free_sessions(cur: _Cursor, spec: QueueSpec, only: str | None) -> list[str]:
    """Up to 16 unlocked sessions whose head message is deliverable, oldest head first."""
    # The sessions with active messages are found by skipping through the index one session
    # at a time, and only each session's head is read, so a receive costs in proportion to
    # the number of sessions, not of messages waiting.
    candidates = cur.execute(
        """
        WITH RECURSIVE active AS (
            (SELECT session_id FROM local_broker.messages
             WHERE queue = %(q)s AND state = 'active'
               AND (%(only)s::text IS NULL OR session_id = %(only)s)
             ORDER BY session_id LIMIT 1)
            UNION ALL
            SELECT (SELECT m.session_id FROM local_broker.messages m
                    WHERE m.queue = %(q)s AND m.state = 'active'
                      AND m.session_id > a.session_id
                      AND (%(only)s::text IS NULL OR m.session_id = %(only)s)
                    ORDER BY m.session_id LIMIT 1)
            FROM active a WHERE a.session_id IS NOT NULL
        )
        SELECT a.session_id FROM active a
        CROSS JOIN LATERAL (
            SELECT m.seq, m.retry_at FROM local_broker.messages m
            WHERE m.queue = %(q)s AND m.state = 'active' AND m.session_id = a.session_id
              AND m.visible_at <= now()
            ORDER BY m.seq LIMIT 1) h
        WHERE a.session_id IS NOT NULL AND h.retry_at <= now() AND NOT EXISTS (
            SELECT 1 FROM local_broker.sessions s
            WHERE s.queue = %(q)s AND s.session_id = a.session_id AND s.locked_until >= now())
        ORDER BY h.seq LIMIT %(n)s
        """,
        {"q": spec.name, "n": _SESSION_CANDIDATES, "only": only},
    ).fetchall()
    return [str(c["session_id"]) for c in candidates]


def _take_session(cur: _Cursor, spec: QueueSpec, session_id: str, token: str) -> bool:
    """Lock a session with ``token`` unless another consumer holds it."""
    # Concurrent receivers serialise on the session row; only one sees it free.
    taken = cur.execute(
        """
        INSERT INTO local_broker.sessions AS s (queue, session_id, lock_token, locked_until)
        VALUES (%(q)s, %(s)s, %(t)s, now() + make_interval(secs => %(lock)s))
        ON CONFLICT (queue, session_id) DO UPDATE
            SET lock_token = EXCLUDED.lock_token, locked_until = EXCLUDED.locked_until
        WHERE s.locked_until < now()
        RETURNING 1
        """,
        {"q": spec.name, "s": session_id, "t": token, "lock": spec.lock_duration_s},
    ).fetchone()
    return taken is not None


def _abandon_row(
    cur: _Cursor, spec: QueueSpec, lock_token: str, error: str, delay_s: float
) -> dict[str, Any] | None:
    """Unlock a message after a failed attempt, dead-lettering it at the maximum delivery
    count; its state and session, or None when the lock had expired."""
    row: dict[str, Any] | None = cur.execute(
        """
        UPDATE local_broker.messages
        SET state = CASE WHEN delivery_count >= %(max)s THEN 'dead' ELSE 'active' END,
            dead_letter_reason = CASE WHEN delivery_count >= %(max)s THEN %(reason)s END,
            dead_letter_description = CASE WHEN delivery_count >= %(max)s
                THEN 'Message could not be consumed after ' || delivery_count
                     || ' delivery attempts. Last error: ' || %(error)s END,
            dead_lettered_at = CASE WHEN delivery_count >= %(max)s THEN now() END,
            last_error = %(error)s,
            lock_token = NULL,
            locked_until = NULL,
            retry_at = now() + make_interval(secs => %(delay)s)
        WHERE queue = %(q)s AND lock_token = %(t)s AND locked_until >= now()
        RETURNING state, session_id
        """,
        {
            "q": spec.name,
            "t": lock_token,
            "max": spec.max_delivery_count,
            "reason": MAX_DELIVERY_COUNT_EXCEEDED,
            "error": error,
            "delay": delay_s,
        },
    ).fetchone()
    return row


def _lock_session_run(
    cur: _Cursor, spec: QueueSpec, session_id: str, token: str, max_count: int
) -> list[dict[str, Any]]:
    """Take a session's lock unless another consumer holds it, then lock its first
    ``max_count`` deliverable messages; none (and the session let go) when it has none."""
    if not _take_session(cur, spec, session_id, token):
        return []
    # The run of visible messages from the head, up to the first one that waits out a retry
    # delay; each gets a lock token of its own.
    rows = cur.execute(
        f"""
        WITH head AS (
            SELECT seq, retry_at FROM local_broker.messages
            WHERE queue = %(q)s AND session_id = %(s)s AND state = 'active'
              AND visible_at <= now()
            ORDER BY seq LIMIT %(n)s FOR UPDATE
        ), run AS (
            SELECT seq AS picked, bool_and(retry_at <= now()) OVER (ORDER BY seq) AS ready
            FROM head
        )
        UPDATE local_broker.messages m
        SET lock_token = gen_random_uuid(),
            locked_until = now() + make_interval(secs => %(lock)s),
            delivery_count = m.delivery_count + 1,
            last_error = CASE WHEN m.locked_until IS NOT NULL THEN %(expired)s
                              ELSE m.last_error END
        FROM run WHERE m.seq = run.picked AND run.ready
        RETURNING {_MESSAGE_COLUMNS}
        """,
        {
            "q": spec.name,
            "s": session_id,
            "n": max_count,
            "lock": spec.lock_duration_s,
            "expired": LOCK_EXPIRED_ERROR,
        },
    ).fetchall()
    if not rows:
        _release_session(cur, spec.name, session_id, token)
    return sorted(rows, key=lambda r: int(r["seq"]))


def _release_session(cur: _Cursor, queue: str, session_id: str | None, token: str) -> None:
    if session_id is not None:
        cur.execute(
            "DELETE FROM local_broker.sessions"
            " WHERE queue = %s AND session_id = %s AND lock_token = %s",
            (queue, session_id, token),
        )


def _received(row: Mapping[str, Any]) -> ReceivedMessage:
    return ReceivedMessage(
        queue=row["queue"],
        sequence_number=row["seq"],
        message_id=row["message_id"],
        session_id=row["session_id"],
        body=bytes(row["body"]),
        content_type=row["content_type"],
        subject=row["subject"],
        application_properties=dict(row["application_properties"]),
        enqueued_time=row["enqueued_at"],
        scheduled_enqueue_time=row["scheduled_at"],
        expires_at=row["expires_at"],
        delivery_count=row["delivery_count"],
        lock_token=str(row["lock_token"]),
        locked_until=row["locked_until"],
    )


def _dead_letter(row: Mapping[str, Any]) -> DeadLetter:
    return DeadLetter(
        message_id=row["message_id"],
        sequence_number=row["seq"],
        session_id=row["session_id"],
        body=bytes(row["body"]),
        content_type=row["content_type"],
        subject=row["subject"],
        application_properties=dict(row["application_properties"]),
        enqueued_time=row["enqueued_at"],
        delivery_count=row["delivery_count"],
        dead_letter_reason=row["dead_letter_reason"],
        dead_letter_description=row["dead_letter_description"],
    )
