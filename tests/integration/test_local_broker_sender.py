"""The app's sender when no namespace is configured: the local broker, fed by webhooks that
hold a connection of the worker's pool while they hand their messages on."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from shared.adapters import postgres, servicebus
from shared.adapters.local_broker import LocalBroker
from shared.config import get_settings
from shared.errors import ValidationError
from shared.messaging import STRIPE_EVENTS_QUEUE, OutboundMessage
from shared.services import webhooks
from tests.webhook_support import (
    TRACEPARENT,
    outbox_rows,
    rows,
    stripe_event,
    stripe_header,
    webhook_settings,  # noqa: F401 - fixture
)


@pytest.fixture
def one_connection_pool(webhook_settings: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811 - the fixture above
    """The worker's pool cut to one connection, with a short wait for it."""
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "1")
    monkeypatch.setenv("DB_POOL_TIMEOUT_S", "2")
    get_settings.cache_clear()
    postgres.close_pool()
    servicebus.reset()
    yield
    postgres.close_pool()
    servicebus.reset()
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_webhook_holding_the_only_pool_connection_still_hands_on_its_message(
    one_connection_pool: None,
):
    sender = servicebus.get_sender()
    assert isinstance(sender, LocalBroker)
    body = stripe_event(customer=f"cus_{uuid.uuid4().hex[:8]}")
    event_id = json.loads(body)["id"]

    receipt = webhooks.accept_stripe(
        body, {"stripe-signature": stripe_header(body)}, sender, traceparent=TRACEPARENT
    )

    assert not receipt.duplicate
    [row] = outbox_rows(event_id)
    assert row["sent_at"] is not None and row["last_error"] is None
    assert rows("SELECT count(*) FROM local_broker.messages WHERE message_id = %s", event_id) == [
        (1,)
    ]


class ConnectionCounter:
    """Counts the worker pool's connections handed out, through the pool's own hook."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken = 0
        pool = postgres.pool()
        original = pool.getconn

        def getconn(*args, **kwargs):
            self.taken += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(pool, "getconn", getconn)


@pytest.fixture
def broker(webhook_settings: None) -> Iterator[LocalBroker]:  # noqa: F811 - the fixture above
    postgres.close_pool()
    servicebus.reset()
    sender = servicebus.get_sender()
    assert isinstance(sender, LocalBroker)
    yield sender
    servicebus.reset()
    postgres.close_pool()


def broker_messages(message_id: str) -> list[tuple[object, ...]]:
    return rows(
        "SELECT session_id, subject, body, application_properties FROM local_broker.messages"
        " WHERE message_id = %s",
        message_id,
    )


class TestHandOffInTheRecordingTransaction:
    def test_event_is_recorded_and_enqueued_by_one_transaction(self, broker, monkeypatch):
        body = stripe_event(customer="cus_onecommit")
        event_id = json.loads(body)["id"]
        counter = ConnectionCounter(monkeypatch)

        receipt = webhooks.accept_stripe(
            body, {"stripe-signature": stripe_header(body)}, broker, traceparent=TRACEPARENT
        )

        assert (receipt.duplicate, receipt.messages, receipt.sent) == (False, 1, 1)
        assert counter.taken == 1
        [row] = outbox_rows(event_id)
        assert row["sent_at"] is not None and row["attempts"] == 1
        [(session, subject, stored, properties)] = broker_messages(event_id)
        assert (session, subject, bytes(stored)) == ("cus_onecommit", "invoice.paid", body)
        assert properties == {
            "source": "stripe",
            "event_type": "invoice.paid",
            "traceparent": TRACEPARENT,
        }

    def test_a_duplicate_enqueues_nothing(self, broker):
        body = stripe_event(customer=f"cus_{uuid.uuid4().hex[:8]}")
        event_id = json.loads(body)["id"]
        header = {"stripe-signature": stripe_header(body)}

        receipts = [
            webhooks.accept_stripe(body, header, broker, traceparent=TRACEPARENT) for _ in range(5)
        ]

        assert [r.duplicate for r in receipts] == [False, True, True, True, True]
        assert len(broker_messages(event_id)) == 1
        assert rows("SELECT count(*) FROM outbox WHERE message_id = %s", event_id) == [(1,)]

    def test_a_failed_transaction_leaves_no_message(self, broker, monkeypatch):
        body = stripe_event(customer=f"cus_{uuid.uuid4().hex[:8]}")
        event_id = json.loads(body)["id"]

        def fail_after_enqueue(messages):
            # A later write of the same statement breaks a constraint of the outbox.
            return LocalBroker.enqueue_sql(broker, messages) + (
                ", broken AS (INSERT INTO outbox (queue, message_id, body)"
                " VALUES (' ', 'broken', ''))"
            )

        monkeypatch.setattr(broker, "enqueue_sql", fail_after_enqueue)
        with pytest.raises(psycopg.errors.CheckViolation):
            webhooks.accept_stripe(
                body, {"stripe-signature": stripe_header(body)}, broker, traceparent=TRACEPARENT
            )

        assert broker_messages(event_id) == []
        assert outbox_rows(event_id) == []
        assert rows("SELECT count(*) FROM inbox WHERE event_id = %s", event_id) == [(0,)]
        assert rows(
            "SELECT count(*) FROM local_broker.sent_ids WHERE message_id = %s", event_id
        ) == [(0,)]

    def test_a_message_id_sent_within_the_window_is_dropped(self, broker):
        session = f"cus_{uuid.uuid4().hex[:8]}"
        first = OutboundMessage(message_id=f"m-{uuid.uuid4().hex}", body=b"{}", session_id=session)
        again = OutboundMessage(message_id=first.message_id, body=b"[]", session_id=session)
        other = OutboundMessage(message_id=f"m-{uuid.uuid4().hex}", body=b"1", session_id=session)

        with postgres.transaction() as conn:
            broker.send_in_transaction(conn, STRIPE_EVENTS_QUEUE, [first, again])
        with postgres.transaction() as conn:
            broker.send_in_transaction(conn, STRIPE_EVENTS_QUEUE, [again, other])

        stored = rows(
            "SELECT message_id, body FROM local_broker.messages WHERE session_id = %s"
            " ORDER BY seq",
            session,
        )
        assert [(m, bytes(b)) for m, b in stored] == [
            (first.message_id, b"{}"),
            (other.message_id, b"1"),
        ]

    def test_a_message_without_session_is_refused_on_a_session_queue(self, broker):
        message = OutboundMessage(message_id=f"m-{uuid.uuid4().hex}", body=b"{}")
        with (
            pytest.raises(ValidationError, match="requires a session id; message m-"),
            postgres.transaction() as conn,
        ):
            broker.send_in_transaction(conn, STRIPE_EVENTS_QUEUE, [message])
