"""A whole tax-return engagement on the running host: documents, a rejection loop, reviews,
a Stripe invoice through a fake of its API, a kill in the middle, payment, delivery."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from shared.services import engagements
from tests.e2e.conftest import App, Devhost
from tests.e2e.fake_stripe import FakeStripe


@pytest.fixture(scope="module")
def stripe_fake() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, stripe_fake: FakeStripe) -> Iterator[Devhost]:
    devhost = Devhost(
        tmp_path_factory.mktemp("engagements"),
        STRIPE_API_KEY="sk_test_e2e",
        STRIPE_API_BASE=stripe_fake.url,
        ENGAGEMENT_REMINDER_INTERVAL_S="1",
        ENGAGEMENT_DUNNING_INTERVAL_S="2",
        ENGAGEMENT_EVENT_RELAY_SCHEDULE="* * * * * *",
        DEVHOST_DURABLE_POLL_INTERVAL_S="0.05",
        DEVHOST_DURABLE_LEASE_S="3",
    )
    devhost.start()
    try:
        yield devhost
    finally:
        devhost.stop()


def _step(app: App, engagement_id: str) -> dict[str, Any]:
    status, body = app.call("GET", f"/api/engagements/{engagement_id}")
    assert status == 200, body
    return dict(body)


def _wait_step(app: App, engagement_id: str, step: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = _step(app, engagement_id)
        if (body.get("custom_status") or {}).get("step") == step:
            return body
        time.sleep(0.1)
    raise AssertionError(f"engagement never reached {step}; last status {body}")


def _classified(app: App, client_id: str, doc_class: str) -> None:
    with psycopg.connect(app.database_url) as conn:
        engagements.notify_document_classified(
            uuid.UUID(client_id), f"doc-{uuid.uuid4().hex[:8]}", doc_class, conn
        )


def _rows(app: App, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(app.database_url) as conn:
        return conn.execute(sql, params).fetchall()


def test_tax_return_engagement_from_open_to_close(host: Devhost, stripe_fake: FakeStripe):
    app = host.app
    client_id = app.create_client("Engagement client")
    start = {"client_id": client_id, "engagement_type": "individual_tax_return", "period": "2026"}
    status, started = app.call("POST", "/api/engagements", start)
    assert status == 202, started
    status, again = app.call("POST", "/api/engagements", start)
    assert status == 200
    assert again["id"] == started["id"] == started["instance_id"]
    engagement_id = started["engagement_id"]

    # Documents arrive one by one; a class nobody asked for changes nothing.
    body = _wait_step(app, engagement_id, "collecting_documents")
    assert body["custom_status"]["waiting_for"] == "documents: 1099, w2"
    for doc_class in ("w2", "receipt", "1099-nec"):
        _classified(app, client_id, doc_class)

    # The preparer rejects: the W-2 is asked for again, then the reviews approve.
    _wait_step(app, engagement_id, "review:preparer_review")
    status, problem = app.call(
        "POST", f"/api/engagements/{engagement_id}/events/review", {"decision": "reject"}
    )
    assert status == 400
    assert problem["detail"] == "a rejection needs a comment saying what to fix"
    status, _ = app.call(
        "POST",
        f"/api/engagements/{engagement_id}/events/review",
        {"decision": "reject", "comment": "W-2 is blurred", "documents": ["w2"]},
    )
    assert status == 202
    body = _wait_step(app, engagement_id, "collecting_documents")
    assert body["custom_status"]["waiting_for"] == "documents: w2"
    _classified(app, client_id, "w2")
    for step in ("preparer_review", "partner_review"):
        _wait_step(app, engagement_id, f"review:{step}")
        status, _ = app.call(
            "POST", f"/api/engagements/{engagement_id}/events/review", {"decision": "approve"}
        )
        assert status == 202

    # Invoiced once through Stripe; the host is killed while it waits for payment.
    body = _wait_step(app, engagement_id, "awaiting_payment")
    assert len(stripe_fake.invoices) == 1
    (invoice,) = stripe_fake.invoices.values()
    assert invoice["total"] == 45_000
    assert invoice["metadata"] == {"engagement_id": engagement_id}
    assert body["custom_status"]["waiting_for"] == f"invoice.paid for {invoice['id']}"
    host.kill()
    host.start()
    _wait_step(app, engagement_id, "awaiting_payment")
    with psycopg.connect(app.database_url) as conn:
        assert engagements.notify_invoice_paid(invoice["id"], conn)
        assert not engagements.notify_invoice_paid(invoice["id"], conn)

    body = _wait_step(app, engagement_id, "closed")
    assert body["runtime_status"] == "Completed"
    assert body["status"] == "closed"
    assert body["output"] == {
        "engagement_id": engagement_id,
        "stripe_invoice_id": invoice["id"],
        "requests": 2,
    }
    assert len(stripe_fake.invoices) == 1
    kinds = [
        r[0]
        for r in _rows(
            app,
            "SELECT kind FROM engagement_notifications WHERE engagement_id = %s ORDER BY id",
            engagement_id,
        )
    ]
    assert kinds.count("documents_requested") == 2
    assert kinds.count("rejected") == 1
    actions = [
        r[0]
        for r in _rows(
            app, "SELECT action FROM audit_log WHERE subject = %s ORDER BY id", engagement_id
        )
    ]
    assert actions == [
        "engagement.opened",
        "engagement.invoiced",
        "engagement.delivered",
        "engagement.closed",
    ]
    assert _rows(app, "SELECT deliverable FROM engagements WHERE id = %s", engagement_id) == [
        (f"deliverables/{engagement_id}.pdf",)
    ]


def test_unknown_engagement_type_names_the_known_ones(host: Devhost):
    app = host.app
    client_id = app.create_client("Typo client")
    status, body = app.call(
        "POST",
        "/api/engagements",
        {"client_id": client_id, "engagement_type": "tax", "period": "2026"},
    )
    assert status == 400
    assert body["detail"] == (
        "engagement_type 'tax' is not known; known types: "
        "advisory_project, individual_tax_return, "
        "monthly_bookkeeping_close"
    )
    assert _rows(app, "SELECT count(*) FROM engagements WHERE client_id = %s", client_id) == [(0,)]


def test_cancel_stops_the_orchestration(host: Devhost):
    app = host.app
    client_id = app.create_client("Cancel client")
    status, started = app.call(
        "POST",
        "/api/engagements",
        {"client_id": client_id, "engagement_type": "advisory_project", "period": "Q4"},
    )
    assert status == 202
    engagement_id = started["engagement_id"]
    _wait_step(app, engagement_id, "collecting_documents")
    status, body = app.call("POST", f"/api/engagements/{engagement_id}/cancel")
    assert status == 200
    body = _step(app, engagement_id)
    assert body["status"] == "cancelled"
    assert body["runtime_status"] == "Terminated"


def _wait_done(app: App, status_url: str, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        status, body = app.call("GET", status_url.replace(app.base_url, ""), key=None)
        if status == 200:
            return dict(body)
        time.sleep(0.2)
    raise AssertionError(f"the close did not finish; last status {body}")


def test_month_end_close_reports_syncs_and_locks_the_period(host: Devhost):
    app = host.app
    client_id = app.create_client("Bookkeeping client")
    november = "Date,Description,Amount\n2026-11-03,Coffee beans,-12.50\n2026-11-20,Refund,4.00\n"
    app.drop("ledger-imports", f"{client_id}/account-checking/nov.csv", november.encode())
    assert app.wait_for_import(f"{client_id}/account-checking/nov.csv")["status"] == "imported"

    status, started = app.call("POST", f"/api/clients/{client_id}/closes/2026-11")
    assert status == 202, started
    status, again = app.call("POST", f"/api/clients/{client_id}/closes/2026-11")
    assert status == 200 and again["id"] == started["id"]
    done = _wait_done(app, started["statusQueryGetUri"])
    assert done["runtimeStatus"] == "Completed", done
    output = done["output"]
    (account,) = output["accounts"]
    assert account["imports_present"] is True
    assert account["transactions"] == 2
    assert account["uncategorised"] == 2
    assert account["reconciled"] is True
    assert account["bank_total_minor"] == {"USD": -850}
    assert output["locked_through"] == "2026-11-30"

    # The report is in Blob storage, as JSON and CSV.
    report = json.loads(
        app.blobs.get_blob_client("close-reports", f"{client_id}/2026-11/close.json")
        .download_blob()
        .readall()
    )
    assert sum(line["balance_minor"] for line in report["trial_balance"]) == 0
    assert {line["code"] for line in report["profit_and_loss"]} == {
        "UNCATEGORISED-EXPENSE",
        "UNCATEGORISED-INCOME",
    }
    csv_text = (
        app.blobs.get_blob_client("close-reports", f"{client_id}/2026-11/close.csv")
        .download_blob()
        .readall()
        .decode()
    )
    assert csv_text.splitlines()[0] == "section,code,name,type,currency,amount_minor"

    # The QuickBooks sync request went out through the outbox, once.
    rows = _rows(
        app,
        "SELECT queue, message_id FROM outbox WHERE message_id = %s",
        f"qbo-sync:{client_id}:2026-11",
    )
    assert rows == [("quickbooks-sync", f"qbo-sync:{client_id}:2026-11")]

    # The database refuses a posting dated in the closed period, imports included.
    late = "Date,Description,Amount\n2026-11-28,Late fee,-3.00\n2026-12-02,Deposit,10.00\n"
    app.drop("ledger-imports", f"{client_id}/account-checking/late.csv", late.encode())
    outcome = app.wait_for_import(f"{client_id}/account-checking/late.csv")
    assert outcome["status"] == "rejected", outcome
    assert "closed through 2026-11-30" in json.dumps(outcome["report"]) + str(outcome["reason"])
    with (
        psycopg.connect(app.database_url) as conn,
        pytest.raises(psycopg.errors.CheckViolation, match="closed through 2026-11-30"),
    ):
        conn.execute(
            "INSERT INTO journal_entries (client_id, booked_on, memo, source)"
            " VALUES (%s, '2026-11-15', 'backdated', 'manual')",
            (client_id,),
        )


# Scaled to what finishes reliably on a shared two-core machine (the engine runs about
# 15-20 activities a second there); the 500 would take several minutes.
MANY = 25


def test_many_bookkeeping_engagements_at_once(host: Devhost, stripe_fake: FakeStripe):
    app = host.app
    client_ids = [app.create_client(f"Many {i}") for i in range(MANY)]
    started = []
    for client_id in client_ids:
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
        started.append(body["engagement_id"])
    with psycopg.connect(app.database_url) as conn:
        for client_id in client_ids:
            engagements.notify_document_classified(
                uuid.UUID(client_id), "statement", "bank_statement", conn
            )
    for engagement_id in started:
        _wait_step(app, engagement_id, "review:bookkeeper_review", timeout_s=180)
        status, _ = app.call(
            "POST", f"/api/engagements/{engagement_id}/events/review", {"decision": "approve"}
        )
        assert status == 202
    invoices = {}
    for engagement_id in started:
        body = _wait_step(app, engagement_id, "awaiting_payment", timeout_s=180)
        invoices[engagement_id] = body["custom_status"]["waiting_for"].split()[-1]
    assert len(set(invoices.values())) == MANY
    with psycopg.connect(app.database_url) as conn:
        for invoice_id in invoices.values():
            assert engagements.notify_invoice_paid(invoice_id, conn)
    for engagement_id in started:
        assert _wait_step(app, engagement_id, "closed", timeout_s=180)["status"] == "closed"
    rows = _rows(
        app,
        "SELECT count(*) FROM engagements WHERE id = ANY(%s::uuid[])"
        " AND status = 'closed' AND stripe_invoice_id IS NOT NULL",
        started,
    )
    assert rows == [(MANY,)]
