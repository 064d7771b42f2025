"""Webhooks as Stripe and Intuit reach them: over HTTP to ``python -m devhost run``, with the
inbox and outbox read back from its database."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from tests.conftest import CORPUS
from tests.e2e.conftest import QUICKBOOKS_TOKEN, STRIPE_SECRET, App, Devhost
from tests.webhook_support import intuit_signature, stripe_event, stripe_header


def recorded(app: App, source: str, event_id: str) -> tuple[int, list[str]]:
    with psycopg.connect(app.database_url) as conn:
        inbox = conn.execute(
            "SELECT count(*) FROM inbox WHERE source = %s AND event_id = %s", (source, event_id)
        ).fetchone()
        messages = conn.execute(
            "SELECT o.message_id FROM outbox o JOIN inbox i ON i.id = o.inbox_id"
            " WHERE i.source = %s AND i.event_id = %s ORDER BY o.id",
            (source, event_id),
        ).fetchall()
    assert inbox is not None
    return int(inbox[0]), [m[0] for m in messages]


def test_a_signed_stripe_event_is_recorded_once_with_its_message(app: App):
    body = stripe_event(customer=f"cus_{uuid.uuid4().hex[:8]}")
    event_id = json.loads(body)["id"]
    headers = {"Stripe-Signature": stripe_header(body, secret=STRIPE_SECRET)}

    first = app.call("POST", "/api/webhooks/stripe", body, key=None, headers=headers)
    second = app.call("POST", "/api/webhooks/stripe", body, key=None, headers=headers)

    assert first == (200, {"received": True, "duplicate": False})
    assert second == (200, {"received": True, "duplicate": True})
    assert recorded(app, "stripe", event_id) == (1, [event_id])


def test_a_forged_stripe_event_is_refused_and_not_stored(app: App):
    body = stripe_event()
    headers = {"Stripe-Signature": stripe_header(body, secret="whsec_not_ours")}
    status, problem = app.call("POST", "/api/webhooks/stripe", body, key=None, headers=headers)
    assert status == 400
    assert problem["detail"] == "the Stripe-Signature header matches no configured endpoint secret"
    assert recorded(app, "stripe", json.loads(body)["id"]) == (0, [])


def test_a_ten_mebibyte_body_is_413(app: App):
    body = b"{" + b" " * (10 * 1024 * 1024) + b"}"
    headers = {"Stripe-Signature": stripe_header(body, secret=STRIPE_SECRET)}
    status, problem = app.call("POST", "/api/webhooks/stripe", body, key=None, headers=headers)
    assert (status, problem["detail"]) == (413, "the body is over 1048576 bytes")


def test_a_quickbooks_notification_queues_one_message_per_change(app: App):
    body = (CORPUS / "qbo" / "qbodotnet__webhook_legacy_vendor_customer.json").read_bytes()
    headers = {"intuit-signature": intuit_signature(body, QUICKBOOKS_TOKEN)}
    status, answer = app.call("POST", "/api/webhooks/quickbooks", body, key=None, headers=headers)
    assert (status, answer) == (200, {"received": True, "duplicate": False})
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert recorded(app, "quickbooks", digest) == (
        1,
        [
            "1269959970:Vendor:40:Update:2016-10-05T03:09:04.000Z",
            "1269959970:Customer:43:Create:2016-10-05T03:07:04.000Z",
        ],
    )


@pytest.fixture(scope="module")
def two_process_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    host = Devhost(tmp_path_factory.mktemp("devhost-2p"), FUNCTIONS_WORKER_PROCESS_COUNT="2")
    try:
        yield host.start()
    finally:
        host.stop()


def test_two_processes_record_and_queue_each_event_once(two_process_app: App):
    # One event delivered five times at once, beside fifty others, each on its own
    # connection: the kernel spreads them over both processes.
    repeated = stripe_event(customer="cus_twoprocesses")
    others = [stripe_event(customer=f"cus_{n % 5}") for n in range(50)]
    bodies = [repeated] * 5 + others

    def deliver(body: bytes) -> tuple[int, Any]:
        headers = {"Stripe-Signature": stripe_header(body, secret=STRIPE_SECRET)}
        return two_process_app.call(
            "POST", "/api/webhooks/stripe", body, key=None, headers=headers
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(deliver, bodies))

    assert all(status == 200 for status, _ in answers), answers
    repeated_answers = [answer["duplicate"] for _, answer in answers[:5]]
    assert sorted(repeated_answers) == [False, True, True, True, True]
    assert all(answer == {"received": True, "duplicate": False} for _, answer in answers[5:])
    for body in [repeated, *others]:
        event_id = json.loads(body)["id"]
        # Answered 200, so committed: in the inbox once, its one message handed to the broker.
        assert recorded(two_process_app, "stripe", event_id) == (1, [event_id])
    with psycopg.connect(two_process_app.database_url) as conn:
        queued = conn.execute(
            "SELECT count(*) FROM local_broker.sent_ids WHERE queue = 'stripe-events'"
            " AND message_id = ANY(%s)",
            ([json.loads(b)["id"] for b in [repeated, *others]],),
        ).fetchone()
    assert queued == (51,)
