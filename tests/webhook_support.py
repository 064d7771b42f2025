"""What the webhook tests share: signing as Stripe and Intuit do, senders that record or fail,
and reads of the inbox and outbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from shared.errors import UpstreamError
from shared.messaging import OutboundMessage
from tests.conftest import CORPUS

STRIPE_SECRET = "whsec_test_current"
STRIPE_OLD_SECRET = "whsec_test_previous"
QBO_TOKENS = ("00faeec4-08d0-4996-bb37-698ae19f0149", "b5771f19b12ddb4bcdb9f08bdc50bc63878a")
QBO_CORPUS = CORPUS / "qbo"
STRIPE_CORPUS = CORPUS / "stripe"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def stripe_header(
    body: bytes, secret: str = STRIPE_SECRET, timestamp: int | None = None, extra: str = ""
) -> str:
    """A Stripe-Signature header, computed as Stripe documents it (not with the library)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}{extra}"


def intuit_signature(body: bytes, token: str = QBO_TOKENS[0]) -> str:
    return base64.b64encode(hmac.new(token.encode(), body, hashlib.sha256).digest()).decode()


def stripe_event(
    event_type: str = "invoice.paid",
    *,
    customer: str | None = "cus_test",
    livemode: bool = False,
    event_id: str | None = None,
) -> bytes:
    """A small Stripe event, pretty-printed with a trailing newline as Stripe sends them."""
    obj: dict[str, Any] = {"id": "in_test", "object": "invoice", "amount_paid": 2000}
    if customer:
        obj["customer"] = customer
    event = {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": event_type,
        "livemode": livemode,
        "created": 1700000000,
        "data": {"object": obj},
    }
    return (json.dumps(event, indent=2) + "\n").encode()


def with_event_id(raw: bytes, event_id: str) -> bytes:
    """The same bytes with the event's own id replaced (the corpus files share ids)."""
    original = json.loads(raw)["id"]
    needle = f'"id": "{original}"'.encode()
    assert raw.count(needle) >= 1, "event id not found in the expected layout"
    return raw.replace(needle, f'"id": "{event_id}"'.encode(), 1)


class RecordingSender:
    """A MessageSender that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, OutboundMessage]] = []
        self._lock = threading.Lock()

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        with self._lock:
            self.sent.extend((queue, m) for m in messages)

    def ids(self, prefix: str = "") -> list[str]:
        return [m.message_id for _, m in self.sent if m.message_id.startswith(prefix)]

    def of(self, message_id: str) -> list[tuple[str, OutboundMessage]]:
        return [(q, m) for q, m in self.sent if m.message_id == message_id]


class FailingSender:
    """A MessageSender whose namespace is unreachable."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        self.calls += 1
        raise UpstreamError("the namespace did not answer", provider="servicebus", retryable=True)


def rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        return conn.execute(sql, params).fetchall()


def inbox_count(source: str, event_id: str) -> int:
    found = rows(
        "SELECT count(*) FROM inbox WHERE source = %s AND event_id = %s", source, event_id
    )
    return int(found[0][0])


def outbox_rows(message_id_prefix: str) -> list[dict[str, Any]]:
    keys = ("id", "queue", "message_id", "session_id", "sent_at", "attempts", "last_error",
            "next_attempt_at", "replay_no")  # fmt: skip
    found = rows(
        f"SELECT {', '.join(keys)} FROM outbox WHERE message_id LIKE %s ORDER BY id",
        message_id_prefix.replace("%", r"\%") + "%",
    )
    return [dict(zip(keys, row, strict=True)) for row in found]


@pytest.fixture()
def webhook_settings(services: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Test secrets and tokens in the environment, read afresh by the settings."""
    from shared.config import get_settings

    monkeypatch.setenv("STRIPE_WEBHOOK_SECRETS", f"{STRIPE_OLD_SECRET},{STRIPE_SECRET}")
    monkeypatch.setenv("QUICKBOOKS_WEBHOOK_VERIFIER_TOKENS", ",".join(QBO_TOKENS))
    monkeypatch.setenv("STRIPE_LIVEMODE", "false")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@contextmanager
def database_down(monkeypatch: pytest.MonkeyPatch, free_port: int) -> Iterator[None]:
    """Point the app at a port where no database listens, for the length of the block."""
    from shared.adapters import postgres
    from shared.config import get_settings

    real = os.environ["DATABASE_URL"]
    postgres.close_pool()
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port}/advisoros")
    monkeypatch.setenv("DB_POOL_TIMEOUT_S", "1")
    get_settings.cache_clear()
    try:
        yield
    finally:
        postgres.close_pool()
        monkeypatch.setenv("DATABASE_URL", real)
        monkeypatch.delenv("DB_POOL_TIMEOUT_S")
        get_settings.cache_clear()
