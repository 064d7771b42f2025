"""A whole tax-return engagement on the running host: reminders and an escalation on short
timers, generated PDFs classified from the documents container, a rejection loop, reviews,
a Stripe invoice through a fake of its API, a kill in the middle, payment by Stripe's signed
``invoice.paid`` through intake, bus and billing, delivery."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import App, Devhost
from tests.e2e.engagement_support import (
    OWN_ACCOUNT,
    drop_document,
    intake,
    invoice_paid,
    link_own_account,
    post_stripe_event,
)
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
        STRIPE_ACCOUNT_ID=OWN_ACCOUNT,
        DOCUMENTS_FIELD_KEY=base64.urlsafe_b64encode(b"g" * 32).decode(),
        DEVHOST_BUS_POLL_INTERVAL_S="0.05",
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


# Uploaded in this order: a W-2, a receipt nobody asked for, a 1099-NEC.
DOCUMENTS = ("w2", "receipt", "1099-nec")


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


def _notifications(app: App, engagement_id: str) -> list[str]:
    rows = _rows(
        app,
        "SELECT kind FROM engagement_notifications WHERE engagement_id = %s ORDER BY id",
        engagement_id,
    )
    return [r[0] for r in rows]


def _wait_notified(app: App, engagement_id: str, kind: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while kind not in _notifications(app, engagement_id):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {kind} for {engagement_id}: {_notifications(app, engagement_id)}"
            )
        time.sleep(0.1)


def _rows(app: App, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(app.database_url) as conn:
        return conn.execute(sql, params).fetchall()


def test_tax_return_engagement_from_open_to_close(host: Devhost, stripe_fake: FakeStripe):
    app = host.app
    link_own_account(app)
    client_id = app.create_client("Engagement client")
    start = {"client_id": client_id, "engagement_type": "individual_tax_return", "period": "2026"}
    status, started = app.call("POST", "/api/engagements", start)
    assert status == 202, started
    status, again = app.call("POST", "/api/engagements", start)
    assert status == 200
    assert again["id"] == started["id"] == started["instance_id"]
    engagement_id = started["engagement_id"]

    # Nothing arrives: a reminder a second (the configured interval), and after the type's
    # three reminders an escalation to the advisor.
    body = _wait_step(app, engagement_id, "collecting_documents")
    assert body["custom_status"]["waiting_for"] == "documents: 1099, w2"
    _wait_notified(app, engagement_id, "escalation")
    assert _notifications(app, engagement_id)[:5] == [
        "documents_requested",
        "reminder",
        "reminder",
        "reminder",
        "escalation",
    ]

    # The client uploads PDFs; each is classified, and a class nobody asked for changes
    # nothing.
    blobs = {c: drop_document(app, client_id, c, seed) for seed, c in enumerate(DOCUMENTS)}
    assert {c: intake(app, name) for c, name in blobs.items()} == {
        c: ("new", c) for c in DOCUMENTS
    }

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
    assert intake(app, drop_document(app, client_id, "w2", 99)) == ("new", "w2")
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

    # Stripe says the invoice is paid, twice: the second delivery is a duplicate.
    paid = invoice_paid(invoice)
    assert post_stripe_event(app, paid) == {"received": True, "duplicate": False}
    assert post_stripe_event(app, paid) == {"received": True, "duplicate": True}

    body = _wait_step(app, engagement_id, "closed")
    assert body["runtime_status"] == "Completed"
    assert body["status"] == "closed"
    assert body["output"] == {
        "engagement_id": engagement_id,
        "stripe_invoice_id": invoice["id"],
        "requests": 2,
    }
    assert len(stripe_fake.invoices) == 1
    kinds = _notifications(app, engagement_id)
    assert kinds.count("documents_requested") == 2
    assert kinds.count("rejected") == 1
    assert _rows(
        app,
        "SELECT doc_class FROM engagement_documents WHERE engagement_id = %s ORDER BY doc_class",
        engagement_id,
    ) == [("1099-nec",), ("w2",), ("w2",)]
    assert _rows(
        app,
        "SELECT count(*) FROM engagement_events WHERE engagement_id = %s"
        " AND event_name = 'invoice_paid' AND relayed_at IS NOT NULL",
        engagement_id,
    ) == [(1,)]
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


def test_an_engagement_that_cannot_exist_is_not_found(host: Devhost):
    app = host.app
    for method, path, body in (
        ("GET", "/api/engagements/not-a-uuid", None),
        ("POST", "/api/engagements/not-a-uuid/events/review", {"decision": "approve"}),
        ("POST", "/api/engagements/not-a-uuid/cancel", None),
    ):
        status, problem = app.call(method, path, body)
        assert status == 404, (path, problem)
        assert problem["detail"] == "engagement_id 'not-a-uuid' not found"
    unknown = "0b7e5c1e-0000-4000-8000-000000000001"
    status, problem = app.call("GET", f"/api/engagements/{unknown}")
    assert status == 404
    assert problem["detail"] == f"engagement {unknown} does not exist"
    status, problem = app.call(
        "POST",
        "/api/engagements",
        {"client_id": "nobody", "engagement_type": "advisory_project", "period": "Q1"},
    )
    assert status == 404
    assert problem["detail"] == "client_id 'nobody' not found"
    status, problem = app.call(
        "POST", "/api/engagements", {"engagement_type": "advisory_project", "period": "Q1"}
    )
    assert status == 400
    assert problem["detail"] == "client_id is required"


@pytest.mark.parametrize(
    "period",
    [None, ["2026"], {"year": 2026}, True, "2026\u0000"],
    ids=["null", "list", "object", "bool", "nul-char"],
)
def test_a_period_that_is_not_plain_text_is_a_400_and_opens_nothing(
    host: Devhost, period: Any
) -> None:
    app = host.app
    client_id = app.create_client("Engagement body client")
    status, problem = app.call(
        "POST",
        "/api/engagements",
        {"client_id": client_id, "engagement_type": "advisory_project", "period": period},
    )
    assert status == 400, problem
    assert "period" in problem["detail"]
    with psycopg.connect(app.database_url) as conn:
        opened = conn.execute(
            "SELECT count(*) FROM engagements WHERE client_id = %s", (client_id,)
        ).fetchone()
    assert opened == (0,)


def test_a_close_of_a_month_no_calendar_has_is_a_400(host: Devhost) -> None:
    app = host.app
    client_id = app.create_client("Close year zero client")
    status, problem = app.call("POST", f"/api/clients/{client_id}/closes/0000-01")
    assert status == 400, problem
    assert problem["detail"] == "period must be a month as YYYY-MM, such as 2026-11, not '0000-01'"
