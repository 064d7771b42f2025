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

    @pytest.mark.parametrize(
        "period", ["0000-01", "2026-11\n", "\u0662\u0660\u0662\u0666-11", "2026-1"]
    )
    def test_year_zero_other_digits_and_trailing_text_are_refused(self, period):
        with pytest.raises(ValidationError, match="period must be a month as YYYY-MM"):
            month_end.period_bounds(period)

    def test_bounds_of_the_last_month_a_date_can_hold(self):
        first, last = month_end.period_bounds("9999-12")
        assert (first.isoformat(), last.isoformat()) == ("9999-12-01", "9999-12-31")

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


def _ofx(account: str, balance: str, *transactions: tuple[str, str, str]) -> bytes:
    """An OFX 1.x statement for one checking account, with its LEDGERBAL on 2026-10-31."""
    body = "".join(
        f"<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>{day}<TRNAMT>{amount}<FITID>{fitid}"
        "<NAME>Shop</STMTTRN>\n"
        for day, amount, fitid in transactions
    )
    return (
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nSECURITY:NONE\nENCODING:USASCII\n"
        "CHARSET:1252\nCOMPRESSION:NONE\nOLDFILEUID:NONE\nNEWFILEUID:NONE\n\n"
        "<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>0<SEVERITY>INFO</STATUS>"
        "<DTSERVER>20261101<LANGUAGE>ENG</SONRS></SIGNONMSGSRSV1>\n<BANKMSGSRSV1>"
        "<STMTTRNRS><TRNUID>1<STATUS><CODE>0<SEVERITY>INFO</STATUS>"
        f"<STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>121<ACCTID>{account}<ACCTTYPE>CHECKING"
        "</BANKACCTFROM><BANKTRANLIST><DTSTART>20261001<DTEND>20261031\n"
        f"{body}</BANKTRANLIST><LEDGERBAL><BALAMT>{balance}<DTASOF>20261031120000</LEDGERBAL>"
        "</STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>\n"
    ).encode()


class TestStatementReconciliation:
    def test_matching_and_mismatching_statements_report_their_difference(
        self, services, client_id
    ):
        from shared.config import LEDGER_IMPORTS_CONTAINER
        from shared.services import ledger_import

        # Checking's statement agrees with what was imported; savings' statement says 25.00
        # more than its transactions (a deposit that never reached the file).
        files = {
            "checking.ofx": _ofx(
                "11112222", "-62.50", ("20261003", "-12.50", "C1"), ("20261020", "-50.00", "C2")
            ),
            "savings.ofx": _ofx("33334444", "125.00", ("20261015", "100.00", "S1")),
        }
        for name, data in files.items():
            blob.upload(
                LEDGER_IMPORTS_CONTAINER, f"{client_id}/{name}", data, content_type="text/plain"
            )
            outcome = ledger_import.import_blob(f"{client_id}/{name}")
            assert outcome.status == "imported", outcome

        checks = {
            c["transactions"]: c
            for c in (
                month_end.check_account(client_id, a, "2026-10")
                for a in month_end.bank_accounts(client_id)
            )
            if c["transactions"]
        }
        checking, savings = checks[2], checks[1]
        assert checking["statement_balances"] == [
            {
                "currency": "USD",
                "as_of": "2026-10-31",
                "stated_minor": -6250,
                "books_minor": -6250,
                "difference_minor": 0,
                "import_id": checking["statement_balances"][0]["import_id"],
            }
        ]
        assert checking["statement_reconciled"] is True
        assert checking["statement_difference_minor"] == {"USD": 0}
        assert savings["statement_balances"][0]["stated_minor"] == 12500
        assert savings["statement_balances"][0]["books_minor"] == 10000
        assert savings["statement_difference_minor"] == {"USD": 2500}
        assert savings["statement_reconciled"] is False

        # The close report carries each account's difference, in JSON and in CSV.
        names = month_end.write_report(client_id, "2026-10", [checking, savings])
        report = json.loads(blob.read(month_end.CLOSE_REPORTS_CONTAINER, names[0]))
        assert [a["statement_difference_minor"] for a in report["accounts"]] == [
            {"USD": 0},
            {"USD": 2500},
        ]
        rows = blob.read(month_end.CLOSE_REPORTS_CONTAINER, names[1]).decode().splitlines()
        assert [r for r in rows if r.startswith("bank_reconciliation")] == [
            f"bank_reconciliation,{checking['account_code']},statement balance as of 2026-10-31,"
            "difference,USD,0",
            f"bank_reconciliation,{savings['account_code']},statement balance as of 2026-10-31,"
            "difference,USD,2500",
        ]

    def test_a_month_without_a_dated_statement_is_not_called_reconciled(self, services, client_id):
        from shared.config import LEDGER_IMPORTS_CONTAINER
        from shared.services import ledger_import

        csv = "Date,Description,Amount\n2026-11-03,Coffee beans,-12.50\n"
        name = f"{client_id}/account-checking/nov.csv"
        blob.upload(LEDGER_IMPORTS_CONTAINER, name, csv.encode(), content_type="text/csv")
        assert ledger_import.import_blob(name).status == "imported"
        (account,) = month_end.bank_accounts(client_id)
        check = month_end.check_account(client_id, account, "2026-11")
        assert check["statement_balances"] == []
        assert check["statement_reconciled"] is None
