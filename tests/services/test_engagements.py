"""Engagement rows and the hooks other capabilities call, against real Postgres: opening
once, notifications once per key, document events once per document, and billing telling
the engagement when its invoice is paid."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from shared.adapters import postgres
from shared.errors import NotFound, ValidationError
from shared.services import billing, engagements
from tests.services import stripe_events as se


def _events(services: dict[str, str], engagement_id: uuid.UUID) -> list[tuple[Any, ...]]:
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        return conn.execute(
            "SELECT event_name, payload FROM engagement_events WHERE engagement_id = %s"
            " ORDER BY id",
            (engagement_id,),
        ).fetchall()


class TestOpen:
    def test_opening_twice_returns_the_same_engagement_and_audits_once(self, services, client_id):
        first = engagements.open_engagement(client_id, "individual_tax_return", "2026", "t")
        again = engagements.open_engagement(client_id, "individual_tax_return", "2026", "t")
        assert first == again
        assert first.instance_id == f"engagement-{first.id}"
        with psycopg.connect(services["DATABASE_URL"]) as conn:
            audits = conn.execute(
                "SELECT count(*) FROM audit_log WHERE subject = %s AND action ="
                " 'engagement.opened'",
                (str(first.id),),
            ).fetchone()
        assert audits == (1,)

    def test_unknown_type_is_refused_naming_the_known_ones(self, client_id):
        with pytest.raises(ValidationError, match="known types: advisory_project, "):
            engagements.open_engagement(client_id, "audit", "2026", "t")

    def test_unknown_client_is_not_found(self, services):
        missing = uuid.uuid4()
        with pytest.raises(NotFound, match=f"client {missing} does not exist"):
            engagements.open_engagement(missing, "advisory_project", "Q1", "t")

    def test_plan_takes_intervals_from_settings(self, client_id, monkeypatch):
        from shared.config import get_settings

        opened = engagements.open_engagement(client_id, "advisory_project", "Q2", "t")
        monkeypatch.setenv("ENGAGEMENT_REMINDER_INTERVAL_S", "10")
        get_settings.cache_clear()
        try:
            plan = engagements.plan(opened.id)
        finally:
            monkeypatch.delenv("ENGAGEMENT_REMINDER_INTERVAL_S")
            get_settings.cache_clear()
        # The advisory project reminds every second interval.
        assert plan["reminder_interval_s"] == 20
        assert plan["type"]["required_documents"] == ["engagement_letter", "bank_statement"]


class TestHooks:
    def test_notification_is_recorded_once_per_key(self, client_id):
        opened = engagements.open_engagement(client_id, "advisory_project", "Q3", "t")
        assert engagements.record_notification(opened.id, "reminder", "r:1", {"n": 1})
        assert not engagements.record_notification(opened.id, "reminder", "r:1", {"n": 1})

    def test_each_needed_document_gets_its_own_event_once(self, services, client_id):
        opened = engagements.open_engagement(client_id, "individual_tax_return", "2025", "t")
        assert engagements.notify_document_classified(client_id, "d1", "w2") == 1
        assert engagements.notify_document_classified(client_id, "d1", "w2") == 0
        assert engagements.notify_document_classified(client_id, "d2", "receipt") == 0
        # Any 1099 form answers the "1099" requirement; the event names both.
        assert engagements.notify_document_classified(client_id, "d3", "1099-int") == 1
        assert _events(services, opened.id) == [
            (
                "document_classified_1",
                {"document_id": "d1", "doc_class": "w2", "document_class": "w2"},
            ),
            (
                "document_classified_2",
                {"document_id": "d3", "doc_class": "1099", "document_class": "1099-int"},
            ),
        ]

    def test_a_rolled_back_classification_leaves_no_event(self, services, client_id):
        opened = engagements.open_engagement(client_id, "individual_tax_return", "2024", "t")
        with pytest.raises(RuntimeError), postgres.transaction() as conn:
            engagements.notify_document_classified(client_id, "d9", "w2", conn)
            raise RuntimeError("the classification failed after the hook")
        assert _events(services, opened.id) == []

    def test_billing_applying_invoice_paid_tells_the_engagement(self, services, firm, client_id):
        account = f"acct_{uuid.uuid4().hex[:16]}"
        billing.link_stripe_account(firm, account)
        opened = engagements.open_engagement(client_id, "advisory_project", "Q4", "t")
        invoice_id = f"in_{uuid.uuid4().hex[:14]}"
        with postgres.transaction() as conn:
            conn.execute(
                "UPDATE engagements SET stripe_invoice_id = %s WHERE id = %s",
                (invoice_id, opened.id),
            )
        paid = se.invoice(
            invoice_id,
            customer="cus_eng",
            currency="usd",
            total=250_000,
            status="paid",
            finalized_at=1_760_000_000,
        )
        envelope = se.event(
            "invoice.paid",
            paid,
            event_id=f"evt_{uuid.uuid4().hex[:14]}",
            created=1_760_000_100,
            account=account,
        )
        billing.apply_event(envelope)
        billing.apply_event(envelope)
        assert _events(services, opened.id) == [
            ("invoice_paid", {"stripe_invoice_id": invoice_id})
        ]
        assert [e[2] for e in engagements.pending_events(1000) if e[1] == opened.instance_id] == [
            "invoice_paid"
        ]


class TestRelay:
    def test_events_marked_relayed_together_leave_the_pending_list(self, services, client_id):
        opened = engagements.open_engagement(client_id, "individual_tax_return", "2023", "t")
        engagements.notify_document_classified(client_id, "r1", "w2")
        engagements.notify_document_classified(client_id, "r2", "1099-nec")
        mine = [e for e in engagements.pending_events(10_000) if e[1] == opened.instance_id]
        assert [name for _, _, name, _ in mine] == [
            "document_classified_1",
            "document_classified_2",
        ]

        engagements.mark_all_relayed([mine[0][0]])
        engagements.mark_all_relayed([])
        left = [e for e in engagements.pending_events(10_000) if e[1] == opened.instance_id]
        assert left == mine[1:]
        engagements.mark_relayed(mine[1][0])
        assert [e for e in engagements.pending_events(10_000) if e[1] == opened.instance_id] == []
        with psycopg.connect(services["DATABASE_URL"]) as conn:
            relayed = conn.execute(
                "SELECT count(*) FROM engagement_events WHERE engagement_id = %s"
                " AND relayed_at IS NOT NULL",
                (opened.id,),
            ).fetchone()
        assert relayed == (2,)
