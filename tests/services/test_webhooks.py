"""Webhook intake against real Postgres: verification, once-only recording, the outbox relay
and replays."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from shared.errors import ConfigError, UpstreamError, ValidationError
from shared.messaging import QUICKBOOKS_EVENTS_QUEUE, STRIPE_EVENTS_QUEUE, OutboundMessage
from shared.services import outbox, webhooks
from tests.conftest import free_port
from tests.webhook_support import (
    QBO_CORPUS,
    QBO_TOKENS,
    STRIPE_CORPUS,
    STRIPE_OLD_SECRET,
    STRIPE_SECRET,
    TRACEPARENT,
    FailingSender,
    RecordingSender,
    database_down,
    inbox_count,
    intuit_signature,
    outbox_rows,
    rows,
    stripe_event,
    stripe_header,
    webhook_settings,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.usefixtures("webhook_settings")


def accept(body: bytes, header: str | None, sender=None, now: float | None = None):
    headers = {"stripe-signature": header} if header is not None else {}
    return webhooks.accept_stripe(
        body, headers, sender or RecordingSender(), traceparent=TRACEPARENT, now=now
    )


def event_id_of(body: bytes) -> str:
    return str(json.loads(body)["id"])


def published_vector(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], bytes]:
    """The async-stripe vector, with its secret as the only one configured."""
    from shared.config import get_settings

    vector = json.loads((STRIPE_CORPUS / "asyncstripe__stripe_signature_vector.json").read_text())
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRETS", vector["secret"])
    get_settings.cache_clear()
    return vector, (STRIPE_CORPUS / vector["body_file"]).read_bytes()


class TestStripeSignature:
    def test_accepts_the_published_vector_at_its_own_time(self, monkeypatch):
        vector, body = published_vector(monkeypatch)
        sender = RecordingSender()
        receipt = accept(body, vector["stripe_signature_header"], sender, now=vector["timestamp"])

        assert receipt.event_id == "evt_123" and not receipt.duplicate
        [(queue, message)] = sender.of("evt_123")
        assert queue == STRIPE_EVENTS_QUEUE
        assert message.body == body
        assert message.session_id == "cus_123"
        assert inbox_count("stripe", "evt_123") == 1

    def test_rejects_the_published_vector_301_seconds_later(self, monkeypatch):
        vector, body = published_vector(monkeypatch)
        with pytest.raises(ValidationError, match="is 301 s old; the tolerance is 300 s"):
            accept(body, vector["stripe_signature_header"], now=vector["timestamp"] + 301)

    def test_rejects_the_vector_body_without_its_final_newline(self, monkeypatch):
        vector, body = published_vector(monkeypatch)
        with pytest.raises(ValidationError, match="matches no configured endpoint secret"):
            accept(body.rstrip(b"\n"), vector["stripe_signature_header"], now=vector["timestamp"])

    def test_rejects_signature_older_than_tolerance(self):
        body = stripe_event()
        now = time.time()
        with pytest.raises(ValidationError, match="is 301 s old; the tolerance is 300 s"):
            accept(body, stripe_header(body, timestamp=int(now) - 301), now=int(now))
        assert inbox_count("stripe", event_id_of(body)) == 0

    def test_accepts_signature_exactly_at_the_tolerance(self):
        body = stripe_event()
        now = int(time.time())
        assert not accept(body, stripe_header(body, timestamp=now - 300), now=now).duplicate

    def test_rejects_timestamp_from_the_future_beyond_tolerance(self):
        body = stripe_event()
        now = int(time.time())
        with pytest.raises(ValidationError, match="is 301 s in the future"):
            accept(body, stripe_header(body, timestamp=now + 301), now=now)

    def test_rejects_forged_signature(self):
        body = stripe_event()
        forged = stripe_header(body).rsplit("v1=", 1)[0] + "v1=" + "0" * 64
        with pytest.raises(ValidationError, match="matches no configured endpoint secret"):
            accept(body, forged)
        assert inbox_count("stripe", event_id_of(body)) == 0

    def test_rejects_wrong_secret(self):
        body = stripe_event()
        with pytest.raises(ValidationError, match="matches no configured endpoint secret"):
            accept(body, stripe_header(body, secret="whsec_someone_else"))

    def test_rejects_reserialised_body(self):
        body = stripe_event()
        header = stripe_header(body)
        compact = json.dumps(json.loads(body), separators=(",", ":")).encode()
        with pytest.raises(ValidationError, match="matches no configured endpoint secret"):
            accept(compact, header)
        redecoded = body.decode().replace("\n", "\r\n").encode()
        with pytest.raises(ValidationError, match="matches no configured endpoint secret"):
            accept(redecoded, header)
        assert inbox_count("stripe", event_id_of(body)) == 0

    def test_rejects_missing_header_and_header_without_v1(self):
        body = stripe_event()
        with pytest.raises(ValidationError, match="the Stripe-Signature header is missing"):
            accept(body, None)
        t = int(time.time())
        with pytest.raises(ValidationError, match="has no v1 signature"):
            accept(body, f"t={t},v0=abc")
        with pytest.raises(ValidationError, match="has no valid t= timestamp"):
            accept(body, "v1=abc")

    def test_any_v1_matches_during_rotation(self):
        body = stripe_event()
        t = int(time.time())
        unknown = stripe_header(body, secret="whsec_retired", timestamp=t).split(",")[1]
        header = stripe_header(body, timestamp=t) + "," + unknown
        assert not accept(body, header).duplicate

    def test_every_configured_secret_is_accepted(self):
        for secret in (STRIPE_OLD_SECRET, STRIPE_SECRET):
            body = stripe_event()
            assert not accept(body, stripe_header(body, secret=secret)).duplicate

    def test_refuses_event_of_the_other_mode_and_stores_nothing(self):
        body = stripe_event(livemode=True)
        with pytest.raises(ValidationError, match="a live-mode event; this endpoint takes test"):
            accept(body, stripe_header(body))
        assert inbox_count("stripe", event_id_of(body)) == 0
        assert outbox_rows(event_id_of(body)) == []

    def test_without_secrets_refuses_as_misconfigured(self, monkeypatch):
        from shared.config import get_settings

        monkeypatch.setenv("STRIPE_WEBHOOK_SECRETS", "")
        get_settings.cache_clear()
        body = stripe_event()
        with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRETS is not set"):
            accept(body, stripe_header(body))

    def test_rejects_a_signed_body_that_is_no_event(self):
        body = b'{"object": "event", "livemode": false}'
        with pytest.raises(ValidationError, match="the event has no valid id"):
            accept(body, stripe_header(body))


class TestStripeRecording:
    def test_same_event_five_times_is_one_row_and_one_message(self):
        body = stripe_event()
        sender = RecordingSender()
        receipts = [accept(body, stripe_header(body), sender) for _ in range(5)]

        assert [r.duplicate for r in receipts] == [False, True, True, True, True]
        assert inbox_count("stripe", event_id_of(body)) == 1
        assert len(outbox_rows(event_id_of(body))) == 1
        assert sender.ids(event_id_of(body)) == [event_id_of(body)]

    def test_concurrent_duplicates_record_once(self):
        body = stripe_event()
        sender = RecordingSender()
        results: list[bool] = []
        header = stripe_header(body)

        def post() -> None:
            results.append(accept(body, header, sender).duplicate)

        threads = [threading.Thread(target=post) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False, True, True, True]
        assert sender.ids(event_id_of(body)) == [event_id_of(body)]

    def test_message_carries_the_contract(self):
        body = stripe_event("invoice.paid", customer="cus_contract")
        sender = RecordingSender()
        accept(body, stripe_header(body), sender)

        [(queue, message)] = sender.of(event_id_of(body))
        assert queue == STRIPE_EVENTS_QUEUE
        assert message.body == body
        assert message.session_id == "cus_contract"
        assert message.subject == "invoice.paid"
        assert dict(message.application_properties) == {
            "source": "stripe",
            "event_type": "invoice.paid",
            "traceparent": TRACEPARENT,
        }
        [inbox] = rows(
            "SELECT event_type, livemode, raw_body, signature_header, traceparent FROM inbox"
            " WHERE event_id = %s",
            event_id_of(body),
        )
        assert inbox[0] == "invoice.paid" and inbox[1] is False
        assert bytes(inbox[2]) == body
        assert inbox[3].startswith("t=") and inbox[4] == TRACEPARENT
        [row] = outbox_rows(event_id_of(body))
        assert row["sent_at"] is not None and row["attempts"] == 1

    def test_session_falls_back_to_account_then_platform(self):
        event = {"id": "evt_x", "type": "payout.paid", "data": {"object": {"object": "payout"}}}
        assert webhooks.stripe_session(event) == "platform"
        assert webhooks.stripe_session({**event, "account": "acct_9"}) == "acct_9"
        customer = {"data": {"object": {"object": "customer", "id": "cus_7"}}}
        assert webhooks.stripe_session(customer) == "cus_7"
        expanded = {"data": {"object": {"customer": {"id": "cus_8", "object": "customer"}}}}
        assert webhooks.stripe_session(expanded) == "cus_8"

    def test_send_failure_after_commit_is_delivered_once_by_the_relay(self):
        body = stripe_event(customer=f"cus_{uuid.uuid4().hex[:8]}")
        event_id = event_id_of(body)
        failing = FailingSender()

        receipt = accept(body, stripe_header(body), failing)

        assert failing.calls == 1 and not receipt.duplicate and receipt.sent == 0
        [row] = outbox_rows(event_id)
        assert row["sent_at"] is None and row["attempts"] == 1
        assert row["last_error"] == "UpstreamError: [servicebus] the namespace did not answer"
        waited = rows(
            "SELECT next_attempt_at - now() > interval '25 seconds' FROM outbox WHERE id = %s",
            row["id"],
        )
        assert waited == [(True,)]

        # Not due yet: the relay leaves it.
        sender = RecordingSender()
        outbox.relay(sender)
        assert sender.ids(event_id) == []

        make_due(row["id"])
        outbox.relay(sender)
        outbox.relay(sender)
        assert sender.ids(event_id) == [event_id]
        [row] = outbox_rows(event_id)
        assert row["sent_at"] is not None and row["attempts"] == 2 and row["last_error"] is None

    def test_backoff_doubles_per_failed_attempt(self):
        body = stripe_event(customer=f"cus_{uuid.uuid4().hex[:8]}")
        accept(body, stripe_header(body), FailingSender())
        [row] = outbox_rows(event_id_of(body))
        make_due(row["id"])
        outbox.relay(FailingSender())
        delay = rows(
            "SELECT extract(epoch FROM next_attempt_at - now()) FROM outbox WHERE id = %s",
            row["id"],
        )[0][0]
        assert 55 < float(delay) <= 60
        assert outbox_rows(event_id_of(body))[0]["attempts"] == 2

    def test_database_down_answers_unavailable_and_stores_nothing(self, monkeypatch):
        body = stripe_event()
        with (
            database_down(monkeypatch, free_port()),
            pytest.raises(UpstreamError, match="the database is unavailable"),
        ):
            accept(body, stripe_header(body))
        assert inbox_count("stripe", event_id_of(body)) == 0
        # Stripe retries; the retry is recorded.
        assert not accept(body, stripe_header(body)).duplicate
        assert inbox_count("stripe", event_id_of(body)) == 1


def make_due(outbox_id: int) -> None:
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        conn.execute("UPDATE outbox SET next_attempt_at = now() WHERE id = %s", (outbox_id,))


class TestQuickBooks:
    @pytest.mark.parametrize("index", [0, 1])
    def test_published_vectors_verify(self, index):
        vectors = json.loads((QBO_CORPUS / "qbo__webhook_signature_vectors.json").read_text())
        vector = vectors["vectors"][index]
        body = (QBO_CORPUS / vector["body_file"]).read_bytes()
        webhooks.verify_quickbooks_signature(
            body, vector["intuit_signature"], [vector["verifier_token"]]
        )

    def test_published_invalid_vector_is_refused(self):
        vectors = json.loads((QBO_CORPUS / "qbo__webhook_signature_vectors.json").read_text())
        vector = vectors["vectors"][2]
        body = (QBO_CORPUS / vector["body_file"]).read_bytes()
        with pytest.raises(ValidationError, match="matches no configured verifier token"):
            webhooks.verify_quickbooks_signature(
                body, vector["intuit_signature"], [vector["verifier_token"]]
            )

    def test_classic_notification_becomes_one_message_per_change(self):
        body = unique_classic_body()
        sender = RecordingSender()
        receipt = webhooks.accept_quickbooks(
            body, {"intuit-signature": intuit_signature(body)}, sender, traceparent=TRACEPARENT
        )
        realm = json.loads(body)["eventNotifications"][0]["realmId"]
        assert receipt.messages == 2 and not receipt.duplicate
        got = {m.message_id: (q, m) for q, m in sender.sent if m.session_id == realm}
        vendor = f"{realm}:Vendor:40:Update:2016-10-05T03:09:04.000Z"
        customer = f"{realm}:Customer:43:Create:2016-10-05T03:07:04.000Z"
        assert set(got) == {vendor, customer}
        queue, message = got[vendor]
        assert queue == QUICKBOOKS_EVENTS_QUEUE
        assert json.loads(message.body) == {
            "realm_id": realm,
            "entity": "Vendor",
            "entity_id": "40",
            "operation": "Update",
            "last_updated": "2016-10-05T03:09:04.000Z",
        }
        assert dict(message.application_properties) == {
            "source": "quickbooks",
            "traceparent": TRACEPARENT,
        }
        # Intuit retries the same body: a duplicate, no new message.
        again = webhooks.accept_quickbooks(
            body, {"intuit-signature": intuit_signature(body)}, sender, traceparent=TRACEPARENT
        )
        assert again.duplicate and len([m for _, m in sender.sent if m.session_id == realm]) == 2

    def test_cloud_events_map_to_the_same_message_shape(self):
        raw = (QBO_CORPUS / "qbodotnet__webhook_cloudevents_class_created.json").read_bytes()
        realm = str(uuid.uuid4().int)[:12]
        body = raw.replace(b'"intuitaccountid":"310687"', f'"intuitaccountid":"{realm}"'.encode())
        sender = RecordingSender()
        receipt = webhooks.accept_quickbooks(
            body, {"intuit-signature": intuit_signature(body, QBO_TOKENS[1])}, sender,
            traceparent=TRACEPARENT,
        )  # fmt: skip
        assert receipt.messages == 1
        [(_, message)] = [(q, m) for q, m in sender.sent if m.session_id == realm]
        assert message.message_id == f"{realm}:Class:1234:Create:2025-10-07T19:59:07.034359333Z"
        assert json.loads(message.body)["entity"] == "Class"
        [event_type] = rows("SELECT event_type FROM inbox WHERE event_id = %s", receipt.event_id)
        assert event_type == ("cloudevents",)

    def test_merge_keeps_the_deleted_id(self):
        realm = str(uuid.uuid4().int)[:10]
        body = json.dumps(
            {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": [
                {"name": "Customer", "id": "7", "operation": "Merge",
                 "lastUpdated": "2026-01-02T03:04:05.000Z", "deletedId": "9"}]}}]}
        ).encode()  # fmt: skip
        sender = RecordingSender()
        webhooks.accept_quickbooks(
            body, {"intuit-signature": intuit_signature(body)}, sender, traceparent=TRACEPARENT
        )
        [(_, message)] = [(q, m) for q, m in sender.sent if m.session_id == realm]
        assert json.loads(message.body)["deleted_id"] == "9"

    def test_bad_signature_and_bad_bodies_store_nothing(self):
        body = unique_classic_body()
        with pytest.raises(ValidationError, match="the intuit-signature header is missing"):
            webhooks.accept_quickbooks(body, {}, RecordingSender(), traceparent=TRACEPARENT)
        with pytest.raises(ValidationError, match="matches no configured verifier token"):
            webhooks.accept_quickbooks(
                body,
                {"intuit-signature": intuit_signature(body, "another-token")},
                RecordingSender(),
                traceparent=TRACEPARENT,
            )
        bad = b'{"eventNotifications":[{"realmId":"1","dataChangeEvent":{"entities":[{}]}}]}'
        with pytest.raises(
            ValidationError,
            match=r"eventNotifications\[0\]\.dataChangeEvent\.entities\[0\]: field 'name'",
        ):
            webhooks.accept_quickbooks(
                bad, {"intuit-signature": intuit_signature(bad)}, RecordingSender(),
                traceparent=TRACEPARENT,
            )  # fmt: skip
        import hashlib

        for payload in (body, bad):
            digest = "sha256:" + hashlib.sha256(payload).hexdigest()
            assert inbox_count("quickbooks", digest) == 0


def unique_classic_body() -> bytes:
    raw = (QBO_CORPUS / "qbodotnet__webhook_legacy_vendor_customer.json").read_bytes()
    realm = str(uuid.uuid4().int)[:10]
    return raw.replace(b'"realmId":"1269959970"', f'"realmId":"{realm}"'.encode())


class TestRelay:
    def test_sends_each_session_in_order_and_holds_it_behind_a_failed_head(self):
        session = f"cus_{uuid.uuid4().hex[:8]}"
        bodies = [stripe_event(customer=session) for _ in range(3)]
        failing = FailingSender()
        for body in bodies:
            accept(body, stripe_header(body), failing)
        ids = [event_id_of(b) for b in bodies]
        # Only the first was tried: the others wait behind it.
        assert failing.calls == 1
        assert [r["attempts"] for r in outbox_rows_of(ids)] == [1, 0, 0]

        sender = RecordingSender()
        outbox.relay(sender)
        assert [m for m in sender.ids() if m in ids] == []

        make_due(outbox_rows_of(ids)[0]["id"])
        outbox.relay(sender)
        assert [m for m in sender.ids() if m in ids] == ids
        assert all(r["sent_at"] is not None for r in outbox_rows_of(ids))

    def test_a_row_another_relay_holds_is_skipped_not_sent_twice(self):
        session = f"cus_{uuid.uuid4().hex[:8]}"
        other = f"cus_{uuid.uuid4().hex[:8]}"
        held_body, free_body = stripe_event(customer=session), stripe_event(customer=other)
        for body in (held_body, free_body):
            accept(body, stripe_header(body), FailingSender())
        held, free = outbox_rows_of([event_id_of(held_body), event_id_of(free_body)])
        make_due(held["id"])
        make_due(free["id"])

        sender = RecordingSender()
        with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
            conn.execute("SELECT id FROM outbox WHERE id = %s FOR UPDATE", (held["id"],))
            outbox.relay(sender)
            assert event_id_of(held_body) not in sender.ids()
            assert event_id_of(free_body) in sender.ids()
        outbox.relay(sender)
        assert sender.ids(event_id_of(held_body)) == [event_id_of(held_body)]
        assert sender.ids(event_id_of(free_body)) == [event_id_of(free_body)]

    def test_two_relays_at_once_send_every_row_once(self):
        sessions = [f"cus_{uuid.uuid4().hex[:8]}" for _ in range(6)]
        ids = []
        for session in sessions:
            for _ in range(3):
                body = stripe_event(customer=session)
                accept(body, stripe_header(body), FailingSender())
                ids.append(event_id_of(body))
        for row in outbox_rows_of(ids):
            make_due(row["id"])

        sender = RecordingSender()
        threads = [threading.Thread(target=outbox.relay, args=(sender,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sent = [m for m in sender.ids() if m in ids]
        assert sorted(sent) == sorted(ids)
        for session in sessions:
            mine = [m.message_id for _, m in sender.sent if m.session_id == session]
            assert mine == [i for i in ids if i in mine]

    def test_outbox_rows_keep_their_message(self):
        body = stripe_event()
        accept(body, stripe_header(body))
        [row] = outbox_rows(event_id_of(body))
        refused = (
            ("UPDATE outbox SET body = 'x' WHERE id = %s", row["id"], "UPDATE on outbox"),
            ("DELETE FROM outbox WHERE id = %s", row["id"], "DELETE on outbox"),
            ("UPDATE inbox SET event_type = 'x' WHERE event_id = %s", event_id_of(body),
             "inbox is append-only"),
            ("DELETE FROM inbox WHERE event_id = %s", event_id_of(body), "inbox is append-only"),
        )  # fmt: skip
        for sql, key, message in refused:
            with (
                psycopg.connect(os.environ["DATABASE_URL"]) as conn,
                pytest.raises(psycopg.errors.RestrictViolation, match=message),
            ):
                conn.execute(sql, (key,))

    def test_add_refuses_nothing_but_skips_a_message_id_already_queued(self):
        message = OutboundMessage(message_id=f"m-{uuid.uuid4().hex}", body=b"{}")
        with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
            first = outbox.add(conn, STRIPE_EVENTS_QUEUE, message)
            second = outbox.add(conn, STRIPE_EVENTS_QUEUE, message)
        assert first is not None and second is None


def outbox_rows_of(message_ids: list[str]) -> list[dict[str, object]]:
    found = [row for mid in message_ids for row in outbox_rows(mid) if row["message_id"] == mid]
    return found


class TestReplay:
    def test_replay_by_id_sends_a_new_message_each_time(self):
        body = stripe_event()
        event_id = event_id_of(body)
        sender = RecordingSender()
        accept(body, stripe_header(body), sender)

        first = webhooks.replay(sender, traceparent=TRACEPARENT, event_ids=[event_id, "evt_nope"])
        second = webhooks.replay(sender, traceparent=TRACEPARENT, event_ids=[event_id])

        assert (first.replayed, first.messages, first.sent) == (1, 1, 1)
        assert first.not_found == ("evt_nope",)
        assert second.replayed == 1
        assert sender.ids(event_id) == [event_id, f"{event_id}:replay:1", f"{event_id}:replay:2"]
        [(_, replayed)] = sender.of(f"{event_id}:replay:2")
        assert replayed.body == body
        assert replayed.application_properties["replay"] == "2"
        assert inbox_count("stripe", event_id) == 1

    def test_replay_by_time_range_covers_both_sources(self):
        started = rows("SELECT now()")[0][0]
        stripe_body = stripe_event()
        accept(stripe_body, stripe_header(stripe_body))
        qbo_body = unique_classic_body()
        webhooks.accept_quickbooks(
            qbo_body, {"intuit-signature": intuit_signature(qbo_body)}, RecordingSender(),
            traceparent=TRACEPARENT,
        )  # fmt: skip
        ended = rows("SELECT clock_timestamp()")[0][0]
        sender = RecordingSender()

        outcome = webhooks.replay(
            sender, traceparent=TRACEPARENT, received_from=started, received_to=ended
        )

        realm = json.loads(qbo_body)["eventNotifications"][0]["realmId"]
        assert f"{event_id_of(stripe_body)}:replay:1" in sender.ids()
        assert sum(1 for m in sender.ids(realm) if m.endswith(":replay:1")) == 2
        assert outcome.replayed >= 2

    def test_replay_needs_exactly_one_selection(self):
        with pytest.raises(ValidationError, match="give either event_ids or a received_from"):
            webhooks.replay(RecordingSender(), traceparent=TRACEPARENT)
        with pytest.raises(ValidationError, match="source 'paypal' is unknown"):
            webhooks.replay(
                RecordingSender(), traceparent=TRACEPARENT, event_ids=["x"], source="paypal"
            )


def test_hand_off_to_the_local_broker_needs_no_second_connection_of_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The hand-off holds one of the worker's connections while the local broker sends; with
    # a pool of one, a broker drawing on the same pool would wait for it until timing out.
    from shared.adapters import postgres, servicebus
    from shared.config import get_settings

    monkeypatch.setenv("DB_POOL_MAX_SIZE", "1")
    monkeypatch.setenv("DB_POOL_TIMEOUT_S", "2")
    get_settings.cache_clear()
    postgres.close_pool()
    servicebus.reset()
    try:
        body = stripe_event("invoice.paid", customer=f"cus_{uuid.uuid4().hex[:10]}")
        receipt = accept(body, stripe_header(body), sender=servicebus.get_sender())
    finally:
        servicebus.reset()
        postgres.close_pool()
        monkeypatch.delenv("DB_POOL_MAX_SIZE")
        monkeypatch.delenv("DB_POOL_TIMEOUT_S")
        get_settings.cache_clear()

    assert receipt.duplicate is False
    [row] = outbox_rows(event_id_of(body))
    assert (row["attempts"], row["last_error"]) == (1, None)
    assert row["sent_at"] is not None
    queued = rows(
        "SELECT count(*) FROM local_broker.messages WHERE queue = %s AND message_id = %s",
        STRIPE_EVENTS_QUEUE,
        event_id_of(body),
    )
    assert queued == [(1,)]
