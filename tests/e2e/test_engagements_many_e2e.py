"""Five hundred bookkeeping engagements at once on one running host, each driven as the
outside world drives it: a bank statement PDF dropped for each client, an advisor's approval
over HTTP, and Stripe's signed ``invoice.paid`` through intake, bus and billing."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import psycopg
import pytest

from tests.e2e.conftest import App, Devhost
from tests.e2e.engagement_support import (
    OWN_ACCOUNT,
    drop_document,
    in_parallel,
    invoice_paid,
    link_own_account,
    post_stripe_event,
    wait_all_at,
)
from tests.e2e.fake_stripe import FakeStripe

MANY = 500
WAIT_S = 300


@pytest.fixture(scope="module")
def stripe_fake() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, stripe_fake: FakeStripe) -> Iterator[App]:
    """A host of its own: reminders an hour apart, so none fires while five hundred wait."""
    devhost = Devhost(
        tmp_path_factory.mktemp("many-engagements"),
        STRIPE_API_KEY="sk_test_e2e",
        STRIPE_API_BASE=stripe_fake.url,
        STRIPE_ACCOUNT_ID=OWN_ACCOUNT,
        DOCUMENTS_FIELD_KEY=base64.urlsafe_b64encode(b"m" * 32).decode(),
        ENGAGEMENT_REMINDER_INTERVAL_S="3600",
        ENGAGEMENT_DUNNING_INTERVAL_S="3600",
        ENGAGEMENT_EVENT_RELAY_SCHEDULE="* * * * * *",
        DEVHOST_DURABLE_POLL_INTERVAL_S="0.05",
        DEVHOST_BUS_POLL_INTERVAL_S="0.05",
    )
    try:
        yield devhost.start()
    finally:
        devhost.stop()


def test_five_hundred_bookkeeping_engagements_at_once(app: App, stripe_fake: FakeStripe):
    link_own_account(app)
    client_ids = in_parallel(lambda i: app.create_client(f"Many {i}"), range(MANY))

    def start(client_id: str) -> dict[str, str]:
        status, body = app.call(
            "POST",
            "/api/engagements",
            {
                "client_id": client_id,
                "engagement_type": "monthly_bookkeeping_close",
                "period": "2026-10",
            },
        )
        assert status == 202, body
        return dict(body)

    started = in_parallel(start, client_ids)
    instances = [s["instance_id"] for s in started]
    wait_all_at(app, instances, "collecting_documents", WAIT_S)

    # Each client uploads its bank statement; classification tells its engagement.
    in_parallel(lambda n: drop_document(app, client_ids[n], "bank_statement", n), range(MANY))
    wait_all_at(app, instances, "review:bookkeeper_review", WAIT_S)

    def approve(engagement_id: str) -> None:
        status, body = app.call(
            "POST", f"/api/engagements/{engagement_id}/events/review", {"decision": "approve"}
        )
        assert status == 202, body

    in_parallel(approve, [s["engagement_id"] for s in started])
    waiting = wait_all_at(app, instances, "awaiting_payment", WAIT_S)

    # One invoice each, through the Stripe API; each paid as Stripe tells it.
    assert len(stripe_fake.invoices) == MANY
    by_engagement = {i["metadata"]["engagement_id"]: i for i in stripe_fake.invoices.values()}
    assert set(by_engagement) == {s["engagement_id"] for s in started}
    for s in started:
        invoice_id = by_engagement[s["engagement_id"]]["id"]
        assert waiting[s["instance_id"]]["waiting_for"] == f"invoice.paid for {invoice_id}"
    answers = in_parallel(
        lambda i: post_stripe_event(app, invoice_paid(i)), list(by_engagement.values())
    )
    assert all(a == {"received": True, "duplicate": False} for a in answers)
    wait_all_at(app, instances, "closed", WAIT_S)

    with psycopg.connect(app.database_url) as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT stripe_invoice_id) FROM engagements"
            " WHERE id = ANY(%s::uuid[]) AND status = 'closed'",
            ([s["engagement_id"] for s in started],),
        ).fetchall()
        completed = conn.execute(
            "SELECT count(*) FROM devhost.durable_instances WHERE instance_id = ANY(%s)"
            " AND status = 'Completed'",
            (instances,),
        ).fetchall()
    assert rows == [(MANY, MANY)]
    assert completed == [(MANY,)]
    assert len(stripe_fake.invoices) == MANY
