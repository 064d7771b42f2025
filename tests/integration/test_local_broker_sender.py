"""The app's sender when no namespace is configured: the local broker, fed by webhooks that
hold a connection of the worker's pool while they hand their messages on."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from shared.adapters import postgres, servicebus
from shared.adapters.local_broker import LocalBroker
from shared.config import get_settings
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
