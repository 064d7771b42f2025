"""Month-end close steps against real Postgres and Azurite: period checks, the lock the
database enforces, and the report."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from shared.adapters import blob
from shared.errors import ValidationError
from shared.services import month_end


def _entry(url: str, client_id: uuid.UUID, booked_on: str) -> None:
    """Insert an entry header; the lock answers at once. Rolled back, as it has no lines
    (the balance check would refuse it at commit)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO journal_entries (client_id, booked_on, memo, source)"
            " VALUES (%s, %s, 'test', 'manual')",
            (client_id, booked_on),
        )
        conn.rollback()


class TestPeriods:
    def test_period_must_be_a_month(self):
        with pytest.raises(ValidationError, match="period must be a month as YYYY-MM"):
            month_end.period_bounds("2026-13")

    def test_bounds_cover_the_whole_month(self):
        first, last = month_end.period_bounds("2028-02")
        assert (first.isoformat(), last.isoformat()) == ("2028-02-01", "2028-02-29")


class TestLock:
    def test_database_refuses_postings_in_a_locked_period_only(self, services, client_id):
        url = services["DATABASE_URL"]
        assert month_end.lock_period(client_id, "2026-10", "test") == "2026-10-31"
        with pytest.raises(psycopg.errors.CheckViolation, match="closed through 2026-10-31"):
            _entry(url, client_id, "2026-10-31")
        with pytest.raises(psycopg.errors.CheckViolation, match="dated 2026-01-05"):
            _entry(url, client_id, "2026-01-05")
        _entry(url, client_id, "2026-11-01")

    def test_lock_never_moves_back(self, services, client_id):
        month_end.lock_period(client_id, "2026-10", "test")
        assert month_end.lock_period(client_id, "2026-08", "test") == "2026-10-31"

    def test_other_clients_are_not_locked(self, services, firm, client_id):
        from shared.services import clients

        other = clients.create_client(firm, "Other", base_currency="USD")
        month_end.lock_period(client_id, "2026-10", "test")
        _entry(services["DATABASE_URL"], other, "2026-10-15")


class TestReport:
    def test_report_is_written_as_json_and_csv(self, services, client_id):
        names = month_end.write_report(client_id, "2026-09", [])
        assert names == [f"{client_id}/2026-09/close.json", f"{client_id}/2026-09/close.csv"]
        report = json.loads(blob.read(month_end.CLOSE_REPORTS_CONTAINER, names[0]))
        assert report["from"] == "2026-09-01"
        assert report["trial_balance"] == []
        text = blob.read(month_end.CLOSE_REPORTS_CONTAINER, names[1]).decode()
        assert text.splitlines() == ["section,code,name,type,currency,amount_minor"]
