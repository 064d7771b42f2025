"""The webhook endpoints over real HTTP: the app's function_app.py served by the local host's
HTTP server, with real Postgres; only the Service Bus sender is a recording stand-in."""

from __future__ import annotations

import hashlib
import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from devhost.discovery import LoadedApp, load_app
from devhost.http_server import HttpServer
from devhost.invoke import InvocationContext, Invoker
from devhost.settings import DEFAULT_MASTER_KEY
from shared.messaging import STRIPE_EVENTS_QUEUE
from tests.conftest import REPO, free_port
from tests.devhost.conftest import LoopThread, fast_settings
from tests.webhook_support import (
    QBO_CORPUS,
    QBO_TOKENS,
    STRIPE_CORPUS,
    STRIPE_SECRET,
    TRACEPARENT,
    RecordingSender,
    database_down,
    inbox_count,
    intuit_signature,
    outbox_rows,
    rows,
    stripe_event,
    stripe_header,
    webhook_settings,  # noqa: F401 - fixture
    with_event_id,
)

pytestmark = pytest.mark.usefixtures("webhook_settings")

STRIPE_FILES = sorted(STRIPE_CORPUS.glob("srm__*.json"))


@pytest.fixture(scope="module")
def app(services: dict[str, str]) -> LoadedApp:
    return load_app(REPO, module_name="function_app")


@pytest.fixture(scope="module")
def server(app: LoadedApp) -> Iterator[HttpServer]:
    loop = LoopThread()
    settings = fast_settings()
    invoker = Invoker(settings.thread_count, str(REPO))
    srv = HttpServer(app, invoker, settings)
    loop.run(srv.start())
    yield srv
    loop.run(srv.stop())
    invoker.shutdown(wait=False)
    loop.close()


@pytest.fixture()
def sender(monkeypatch: pytest.MonkeyPatch) -> RecordingSender:
    import functions.webhooks

    recorder = RecordingSender()
    monkeypatch.setattr(functions.webhooks, "_sender", lambda: recorder)
    return recorder


def post(
    server: HttpServer, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        try:
            decoded: Any = json.loads(raw)
        except ValueError:
            decoded = raw.decode(errors="replace")
        return response.status, response.headers.get("Content-Type", ""), decoded
    finally:
        conn.close()


def post_stripe(
    server: HttpServer, body: bytes, header: str | None = None
) -> tuple[int, str, Any]:
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Stripe/1.0"}
    headers["Stripe-Signature"] = header if header is not None else stripe_header(body)
    return post(server, "/api/webhooks/stripe", body, headers)


def expected_session(event: dict[str, Any]) -> str:
    obj = event["data"]["object"]
    if obj.get("customer"):
        return str(obj["customer"])
    if obj.get("object") == "customer":
        return str(obj["id"])
    return str(event.get("account") or "platform")


class TestStripeCorpus:
    @pytest.mark.parametrize("path", STRIPE_FILES, ids=lambda p: p.name)
    def test_every_corpus_event_is_recorded_and_queued_once(self, server, sender, path: Path):
        event_id = f"evt_{uuid.uuid4().hex}"
        body = with_event_id(path.read_bytes(), event_id)

        status, _, answer = post_stripe(server, body)
        again = post_stripe(server, body)

        assert (status, answer) == (200, {"received": True, "duplicate": False})
        assert again[0] == 200 and again[2] == {"received": True, "duplicate": True}
        assert inbox_count("stripe", event_id) == 1
        [(queue, message)] = sender.of(event_id)
        event = json.loads(body)
        assert queue == STRIPE_EVENTS_QUEUE
        assert message.body == body
        assert message.subject == event["type"]
        assert message.session_id == expected_session(event)
        assert message.application_properties["event_type"] == event["type"]
        [audit] = rows("SELECT content_type, user_agent FROM inbox WHERE event_id = %s", event_id)
        assert audit == ("application/json; charset=utf-8", "Stripe/1.0")

    def test_the_signed_async_stripe_payload_with_a_connect_account(self, server, sender):
        raw = (STRIPE_CORPUS / "asyncstripe__invoiceitem.created_signed_payload.json").read_bytes()
        event_id = f"evt_{uuid.uuid4().hex}"
        body = with_event_id(raw, event_id)
        assert post_stripe(server, body)[0] == 200
        [(_, message)] = sender.of(event_id)
        assert message.session_id == "cus_123"

    def test_the_dj_stripe_invoice_object_inside_an_event(self, server, sender):
        invoice = (STRIPE_CORPUS / "djstripe__invoice_paid_subscription_object.json").read_bytes()
        event_id = f"evt_{uuid.uuid4().hex}"
        body = (
            b'{\n  "id": "' + event_id.encode() + b'",\n  "object": "event",\n'
            b'  "type": "invoice.paid",\n  "livemode": false,\n  "data": {\n    "object": '
            + invoice.strip()
            + b"\n  }\n}\n"
        )
        assert post_stripe(server, body)[0] == 200
        [(_, message)] = sender.of(event_id)
        assert message.session_id == json.loads(invoice)["customer"]
        assert message.body == body

    def test_the_trace_of_the_request_travels_on_the_message(self, server, sender):
        body = stripe_event()
        event_id = json.loads(body)["id"]
        assert post_stripe(server, body)[0] == 200
        [(_, message)] = sender.of(event_id)
        traceparent = message.application_properties["traceparent"]
        version, trace_id, parent_id, flags = traceparent.split("-")
        assert (version, len(trace_id), len(parent_id), len(flags)) == ("00", 32, 16, 2)


class TestStripeRefusals:
    def test_forged_signature_is_400_problem_and_stores_nothing(self, server, sender):
        body = stripe_event()
        forged = stripe_header(body).split(",v1=")[0] + ",v1=" + "ab" * 32
        status, content_type, problem = post_stripe(server, body, forged)
        assert status == 400 and content_type.startswith("application/problem+json")
        assert problem["detail"] == (
            "the Stripe-Signature header matches no configured endpoint secret"
        )
        assert inbox_count("stripe", json.loads(body)["id"]) == 0 and sender.sent == []

    def test_missing_signature_is_400(self, server, sender):
        body = stripe_event()
        status, _, problem = post(server, "/api/webhooks/stripe", body)
        assert status == 400 and problem["detail"] == "the Stripe-Signature header is missing"

    def test_signature_301_seconds_old_is_400(self, server, sender):
        import time

        body = stripe_event()
        status, _, problem = post_stripe(
            server, body, stripe_header(body, timestamp=int(time.time()) - 301)
        )
        assert status == 400 and "s old; the tolerance is 300 s" in problem["detail"]
        assert inbox_count("stripe", json.loads(body)["id"]) == 0

    def test_reserialised_body_is_400(self, server, sender):
        body = stripe_event()
        header = stripe_header(body)
        compact = json.dumps(json.loads(body)).encode()
        assert post_stripe(server, compact, header)[0] == 400

    def test_livemode_mismatch_is_400_and_stores_nothing(self, server, sender):
        body = stripe_event(livemode=True)
        status, _, problem = post_stripe(server, body)
        assert status == 400
        assert problem["detail"] == "the event is a live-mode event; this endpoint takes test mode"
        assert inbox_count("stripe", json.loads(body)["id"]) == 0

    def test_ten_mebibyte_body_is_413(self, server, sender):
        padding = b" " * (10 * 1024 * 1024)
        body = stripe_event()[:-2] + padding + b"}\n"
        status, _, problem = post_stripe(server, body)
        assert status == 413 and problem["detail"] == "the body is over 1048576 bytes"
        assert inbox_count("stripe", json.loads(body)["id"]) == 0

    def test_body_over_the_limit_without_a_length_header_is_413(self, app):
        spec = next(f for f in app.functions if f.name == "stripe_webhook")
        body = b"{" + b" " * 1048576 + b"}"
        request = func.HttpRequest(
            method="POST", url="http://127.0.0.1/api/webhooks/stripe", headers={}, body=body
        )
        context = InvocationContext(
            invocation_id="i-1", function_name="stripe_webhook", function_directory=str(REPO)
        )
        response = spec.user_function(req=request, context=context)
        assert response.status_code == 413

    def test_database_down_is_503_then_the_retry_is_recorded(self, server, sender, monkeypatch):
        body = stripe_event()
        event_id = json.loads(body)["id"]
        with database_down(monkeypatch, free_port()):
            status, _, problem = post_stripe(server, body)
        assert status == 503 and problem["title"] == "Service unavailable"
        assert inbox_count("stripe", event_id) == 0
        assert post_stripe(server, body)[2] == {"received": True, "duplicate": False}
        assert sender.ids(event_id) == [event_id]


class TestQuickBooksCorpus:
    @pytest.mark.parametrize("index", [0, 1])
    def test_published_bodies_and_signatures_are_accepted(self, server, sender, index):
        vectors = json.loads((QBO_CORPUS / "qbo__webhook_signature_vectors.json").read_text())
        vector = vectors["vectors"][index]
        body = (QBO_CORPUS / vector["body_file"]).read_bytes()
        headers = {"intuit-signature": vector["intuit_signature"]}

        status, _, answer = post(server, "/api/webhooks/quickbooks", body, headers)

        assert (status, answer) == (200, {"received": True, "duplicate": False})
        entities = [
            (n["realmId"], e)
            for n in json.loads(body)["eventNotifications"]
            for e in n["dataChangeEvent"]["entities"]
        ]
        expected = [
            f"{realm}:{e['name']}:{e['id']}:{e['operation']}:{e['lastUpdated']}"
            for realm, e in entities
        ]
        assert [m.message_id for _, m in sender.sent] == expected
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        assert inbox_count("quickbooks", digest) == 1
        assert post(server, "/api/webhooks/quickbooks", body, headers)[2]["duplicate"] is True

    def test_published_invalid_signature_is_400(self, server, sender):
        body = (QBO_CORPUS / "qbojava__webhook_legacy_customer_create.json").read_bytes()
        status, _, problem = post(
            server, "/api/webhooks/quickbooks", body, {"intuit-signature": "1234"}
        )
        assert status == 400
        assert problem["detail"] == (
            "the intuit-signature header matches no configured verifier token"
        )

    def test_cloud_events_body_is_accepted(self, server, sender):
        body = (QBO_CORPUS / "qbodotnet__webhook_cloudevents_class_created.json").read_bytes()
        headers = {"intuit-signature": intuit_signature(body, QBO_TOKENS[1])}
        status, _, _ = post(server, "/api/webhooks/quickbooks", body, headers)
        assert status == 200
        assert sender.ids("310687:Class:1234:Create:") != []


class TestHandOffAndReplay:
    def test_sender_that_cannot_be_built_still_answers_200_and_the_relay_sends(
        self, app, server, monkeypatch
    ):
        import functions.webhooks

        def missing() -> Any:
            raise ModuleNotFoundError("No module named 'shared.adapters.servicebus'")

        monkeypatch.setattr(functions.webhooks, "_sender", missing)
        body = stripe_event(customer=f"cus_{uuid.uuid4().hex[:8]}")
        event_id = json.loads(body)["id"]
        assert post_stripe(server, body)[2] == {"received": True, "duplicate": False}
        [row] = outbox_rows(event_id)
        assert row["sent_at"] is None and row["last_error"].startswith("ModuleNotFoundError")

        recorder = RecordingSender()
        monkeypatch.setattr(functions.webhooks, "_sender", lambda: recorder)
        with_due_rows(event_id)
        relay = next(f for f in app.functions if f.name == "outbox_relay")
        relay.user_function(timer=None)
        relay.user_function(timer=None)
        assert recorder.ids(event_id) == [event_id]

    def test_replay_endpoint_needs_the_admin_key_and_sends_a_new_message(self, server, sender):
        body = stripe_event()
        event_id = json.loads(body)["id"]
        assert post_stripe(server, body)[0] == 200
        request = json.dumps({"event_ids": [event_id]}).encode()

        assert post(server, "/api/ops/webhooks/replay", request)[0] == 401
        status, _, answer = post(
            server,
            "/api/ops/webhooks/replay",
            request,
            {"x-functions-key": DEFAULT_MASTER_KEY, "traceparent": TRACEPARENT},
        )

        assert status == 200
        assert answer == {"replayed": 1, "messages": 1, "sent": 1, "not_found": []}
        assert sender.ids(event_id) == [event_id, f"{event_id}:replay:1"]

    def test_replay_by_range_refuses_a_naive_time(self, server, sender):
        request = json.dumps({"received_from": "2026-01-01T00:00:00"}).encode()
        status, _, problem = post(
            server, "/api/ops/webhooks/replay", request, {"x-functions-key": DEFAULT_MASTER_KEY}
        )
        assert status == 400
        assert problem["detail"] == (
            "field 'received_from': '2026-01-01T00:00:00' needs a UTC offset (such as Z)"
        )


def with_due_rows(message_id: str) -> None:
    import os

    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        conn.execute(
            "UPDATE outbox SET next_attempt_at = now() WHERE message_id = %s", (message_id,)
        )


def test_secret_is_configured_for_these_tests():
    from shared.config import get_settings

    assert STRIPE_SECRET in get_settings().stripe_webhook_secrets
