"""Ledger import against real Postgres and Azurite: whole or nothing, once and only once."""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid

import psycopg
import pytest

from shared.adapters import blob
from shared.config import (
    LEDGER_IMPORTS_CONTAINER,
    LEDGER_QUARANTINE_CONTAINER,
    LEDGER_REPORTS_CONTAINER,
    get_settings,
)
from shared.errors import NotFound
from shared.services import audit, clients, ledger_import
from tests.conftest import REPO

SIMPLE_CSV = (
    "Date,Description,Amount\n"
    "2026-03-01,Opening deposit,1000.00\n"
    "2026-03-02,Coffee shop,-4.50\n"
    "2026-03-02,Coffee shop,-4.50\n"
    "2026-03-05,Office rent,-750.00\n"
)


def drop(client_id: uuid.UUID | str, name: str, data: bytes | str) -> str:
    """Put a file where finance teams drop them and return its blob name."""
    blob_name = f"{client_id}/{name}"
    payload = data.encode() if isinstance(data, str) else data
    blob.upload(LEDGER_IMPORTS_CONTAINER, blob_name, payload, content_type="text/csv")
    return blob_name


def ledger(services: dict[str, str], client_id: uuid.UUID) -> dict[str, object]:
    """What the database holds for a client: counts and the balance of every entry."""
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        bank = conn.execute(
            "SELECT count(*), coalesce(sum(amount_minor), 0) FROM bank_transactions"
            " WHERE client_id = %s",
            (client_id,),
        ).fetchone()
        entries = conn.execute(
            "SELECT count(*) FROM journal_entries WHERE client_id = %s", (client_id,)
        ).fetchone()
        unbalanced = conn.execute(
            "SELECT count(*) FROM (SELECT entry_id FROM journal_lines WHERE client_id = %s"
            " GROUP BY entry_id, currency HAVING sum(amount_minor) <> 0) u",
            (client_id,),
        ).fetchone()
        by_account = dict(
            conn.execute(
                "SELECT a.code, sum(l.amount_minor) FROM journal_lines l"
                " JOIN accounts a ON a.id = l.account_id WHERE l.client_id = %s"
                " GROUP BY a.code",
                (client_id,),
            ).fetchall()
        )
    assert bank and entries and unbalanced
    return {
        "bank_rows": bank[0],
        "bank_total": bank[1],
        "entries": entries[0],
        "unbalanced": unbalanced[0],
        "by_account": by_account,
    }


def test_imports_a_bank_csv_and_posts_balanced_entries(services, client_id):
    outcome = ledger_import.import_blob(drop(client_id, "march.csv", SIMPLE_CSV))

    assert outcome.status == "imported"
    report = outcome.report
    assert (report["rows_read"], report["imported"], report["duplicates_skipped"]) == (4, 4, 0)
    assert report["date_range"] == {"first": "2026-03-01", "last": "2026-03-05"}
    assert report["totals"]["USD"] == {
        "transactions": 4,
        "inflow": "1000.00",
        "outflow": "759.00",
        "net": "241.00",
    }
    held = ledger(services, client_id)
    assert held["bank_rows"] == 4
    assert held["bank_total"] == 24100
    assert held["entries"] == 4
    assert held["unbalanced"] == 0
    assert held["by_account"]["UNCATEGORISED-INCOME"] == -100000
    assert held["by_account"]["UNCATEGORISED-EXPENSE"] == 75900

    stored = json.loads(blob.read(LEDGER_REPORTS_CONTAINER, f"{client_id}/march.csv.json"))
    assert stored["import_id"] == outcome.import_id
    assert stored["sha256"] == report["sha256"]


def test_the_same_blob_version_is_handled_once(services, client_id):
    name = drop(client_id, "once.csv", SIMPLE_CSV)
    first = ledger_import.import_blob(name)
    again = ledger_import.import_blob(name)

    assert first.status == "imported"
    assert again.status == "already_processed"
    assert again.import_id == first.import_id
    assert ledger(services, client_id)["bank_rows"] == 4


def test_reimporting_the_same_file_under_another_name_adds_nothing(services, client_id):
    ledger_import.import_blob(drop(client_id, "a.csv", SIMPLE_CSV))
    second = ledger_import.import_blob(drop(client_id, "a-again.csv", SIMPLE_CSV))

    assert second.status == "imported"
    assert (second.report["imported"], second.report["duplicates_skipped"]) == (0, 4)
    assert ledger(services, client_id)["bank_rows"] == 4


def test_an_overlapping_later_export_adds_only_the_new_rows(services, client_id):
    ledger_import.import_blob(drop(client_id, "first.csv", SIMPLE_CSV))
    later = (
        "Date,Description,Amount\n"
        "2026-03-02,Coffee shop,-4.50\n"
        "2026-03-02,Coffee shop,-4.50\n"
        "2026-03-05,Office rent,-750.00\n"
        "2026-03-06,Client payment,2500.00\n"
        "2026-03-06,Coffee shop,-4.50\n"
    )
    outcome = ledger_import.import_blob(drop(client_id, "second.csv", later))

    assert (outcome.report["imported"], outcome.report["duplicates_skipped"]) == (2, 3)
    held = ledger(services, client_id)
    assert held["bank_rows"] == 6
    assert held["bank_total"] == 24100 + 250000 - 450


EARLIER_EXPORT = (
    "Date,Description,Amount\n"
    "2026-03-01,Opening deposit,1000.00\n"
    "2026-03-02,Coffee shop,-4.50\n"
    "2026-03-02,Coffee shop,-4.50\n"
    "2026-03-05,Office rent,-750.00\n"
)
LATER_EXPORT = (
    "Date,Description,Amount\n"
    "2026-03-02,Coffee shop,-4.50\n"
    "2026-03-02,Coffee shop,-4.50\n"
    "2026-03-05,Office rent,-750.00\n"
    "2026-03-06,Client payment,2500.00\n"
)


@pytest.mark.parametrize(
    ("first", "second", "new_in_second"),
    [(EARLIER_EXPORT, LATER_EXPORT, 1), (LATER_EXPORT, EARLIER_EXPORT, 1)],
    ids=["earlier-then-later", "later-then-earlier"],
)
def test_overlapping_exports_add_only_their_new_rows_in_either_order(
    services, client_id, first, second, new_in_second
):
    ledger_import.import_blob(drop(client_id, "first.csv", first))
    outcome = ledger_import.import_blob(drop(client_id, "second.csv", second))

    assert (outcome.report["imported"], outcome.report["duplicates_skipped"]) == (
        new_in_second,
        3,
    )
    held = ledger(services, client_id)
    assert held["bank_rows"] == 5
    assert held["bank_total"] == 100000 - 450 - 450 - 75000 + 250000
    assert held["unbalanced"] == 0


def test_rows_keyed_before_dated_keys_still_dedupe(services, client_id):
    """Rows imported while keys were 'row:<hash>:<n>' are rekeyed by migration 0015, and
    a re-import or an overlapping later export of their file then adds only new rows."""
    ledger_import.import_blob(drop(client_id, "old.csv", EARLIER_EXPORT))
    migration = (REPO / "migrations" / "0015_dated_row_keys.sql").read_text()
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        # Put the keys back in their old form, as an import before 0015 wrote them.
        conn.execute("ALTER TABLE bank_transactions DISABLE TRIGGER bank_transactions_fixed")
        old_keys = conn.execute(
            "UPDATE bank_transactions SET dedupe_key = 'row:' || substr(dedupe_key, 14)"
            " WHERE client_id = %s RETURNING dedupe_key",
            (client_id,),
        ).fetchall()
        conn.execute("ALTER TABLE bank_transactions ENABLE TRIGGER bank_transactions_fixed")
        assert all(re.fullmatch(r"row:[A-Za-z0-9+/]{24}:[0-9]+", k) for (k,) in old_keys)
        conn.execute(migration)
        rekeyed = conn.execute(
            "SELECT dedupe_key FROM bank_transactions WHERE client_id = %s", (client_id,)
        ).fetchall()
    assert all(re.fullmatch(r"row:2026030[0-9]:[A-Za-z0-9+/]{24}:[0-9]+", k) for (k,) in rekeyed)

    again = ledger_import.import_blob(drop(client_id, "old-again.csv", EARLIER_EXPORT))
    later = ledger_import.import_blob(drop(client_id, "later.csv", LATER_EXPORT))

    assert (again.report["imported"], again.report["duplicates_skipped"]) == (0, 4)
    assert (later.report["imported"], later.report["duplicates_skipped"]) == (1, 3)
    assert ledger(services, client_id)["bank_rows"] == 5


def test_rejects_a_file_with_a_bad_row_and_writes_nothing(services, client_id):
    bad = SIMPLE_CSV + "2026-03-07,Broken amount,12.3.4\n"
    name = drop(client_id, "bad.csv", bad)
    outcome = ledger_import.import_blob(name)

    assert outcome.status == "rejected"
    assert outcome.report["error_count"] == 1
    error = outcome.report["errors"][0]
    assert (error["line"], error["value"]) == (6, "12.3.4")
    assert ledger(services, client_id)["bank_rows"] == 0
    assert ledger(services, client_id)["entries"] == 0

    # Moved to quarantine beside its report, and gone from the drop folder.
    assert blob.read(LEDGER_QUARANTINE_CONTAINER, name) == bad.encode()
    quarantined = json.loads(blob.read(LEDGER_QUARANTINE_CONTAINER, f"{name}.report.json"))
    assert quarantined["errors"][0]["line"] == 6
    with pytest.raises(NotFound):
        blob.read(LEDGER_IMPORTS_CONTAINER, name)


def test_rejects_a_file_for_an_unknown_client(services):
    stranger = uuid.uuid4()
    outcome = ledger_import.import_blob(drop(stranger, "x.csv", SIMPLE_CSV))
    assert outcome.status == "rejected"
    assert outcome.report["reason"] == f"unknown client {stranger}"


def test_rejects_a_file_outside_a_client_folder(services):
    blob.upload(
        LEDGER_IMPORTS_CONTAINER, "loose.csv", SIMPLE_CSV.encode(), content_type="text/csv"
    )
    outcome = ledger_import.import_blob("loose.csv")
    assert outcome.status == "rejected"
    assert "is not in a client folder" in outcome.report["reason"]


def test_rejects_a_file_over_the_size_limit(services, client_id, monkeypatch):
    monkeypatch.setattr(get_settings(), "ledger_import_max_bytes", 50)
    outcome = ledger_import.import_blob(drop(client_id, "big.csv", SIMPLE_CSV))
    assert outcome.status == "rejected"
    assert outcome.report["reason"].startswith(f"file is {len(SIMPLE_CSV)} bytes, over the import")


def test_keeps_formula_like_payees_as_plain_text(services, client_id):
    payee = '=HYPERLINK("http://example.invalid","click")'
    csv = f'Date,Description,Amount\n2026-04-01,"{payee.replace(chr(34), chr(34) * 2)}",-1.00\n'
    outcome = ledger_import.import_blob(drop(client_id, "formula.csv", csv))

    assert outcome.status == "imported"
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        stored = conn.execute(
            "SELECT description FROM bank_transactions WHERE client_id = %s", (client_id,)
        ).fetchone()
    assert stored == (payee,)


def test_keeps_text_that_copy_would_read_as_escapes(services, client_id):
    payees = ["C:\\temp\\new \\N", "tab\there", "Caf\u00e9 \u00c4BC  gmbh"]
    rows = "".join(f'2026-04-0{n + 1},"{p}",-1.00\n' for n, p in enumerate(payees))
    outcome = ledger_import.import_blob(
        drop(client_id, "escapes.csv", "Date,Description,Amount\n" + rows)
    )

    assert outcome.status == "imported", outcome.report
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        stored = conn.execute(
            "SELECT description FROM bank_transactions WHERE client_id = %s ORDER BY booked_on",
            (client_id,),
        ).fetchall()
    assert [row[0] for row in stored] == payees


def test_rows_differing_only_in_case_and_spacing_are_one_transaction(services, client_id):
    first = "Date,Description,Amount\n2026-04-01,Caf\u00e9 \u00c4BC  GmbH,-1.00\n"
    again = "Date,Description,Amount\n2026-04-01,caf\u00e9 \u00e4bc gmbh,-1.00\n"
    ledger_import.import_blob(drop(client_id, "first.csv", first))
    outcome = ledger_import.import_blob(drop(client_id, "again.csv", again))

    assert (outcome.report["imported"], outcome.report["duplicates_skipped"]) == (0, 1)


def test_the_same_file_dropped_twice_at_once_is_imported_once(services, client_id):
    rows = "".join(f"2026-05-{d:02d},Payment {d},-{d}.00\n" for d in range(1, 29))
    csv = "Date,Description,Amount\n" + rows
    names = [drop(client_id, f"twin-{n}.csv", csv) for n in range(2)]
    outcomes: list[ledger_import.ImportOutcome] = []

    threads = [
        threading.Thread(target=lambda n=n: outcomes.append(ledger_import.import_blob(n)))
        for n in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(o.report["imported"] for o in outcomes) == [0, 28]
    assert sorted(o.report["duplicates_skipped"] for o in outcomes) == [0, 28]
    assert ledger(services, client_id)["bank_rows"] == 28


JOURNAL = (
    "date,entry,account,debit,credit,memo\n"
    "2026-01-31,JE-1,6000,120.00,,January software\n"
    "2026-01-31,JE-1,1000,,120.00,\n"
    "2026-01-31,JE-2,1100,500.00,,Invoice 7\n"
    "2026-01-31,JE-2,Revenue,,500.00,\n"
)


def test_posts_a_journal_file_as_given(services, client_id):
    outcome = ledger_import.import_blob(drop(client_id, "journal.csv", JOURNAL))

    assert outcome.status == "imported", outcome.report
    assert outcome.report["format"] == "journal_csv"
    assert (outcome.report["imported"], outcome.report["duplicates_skipped"]) == (2, 0)
    held = ledger(services, client_id)
    assert held["entries"] == 2
    assert held["by_account"] == {"6000": 12000, "1000": -12000, "1100": 50000, "4000": -50000}

    again = ledger_import.import_blob(drop(client_id, "journal-again.csv", JOURNAL))
    assert (again.report["imported"], again.report["duplicates_skipped"]) == (0, 2)
    assert ledger(services, client_id)["entries"] == 2


def test_rejects_a_journal_with_an_unbalanced_entry(services, client_id):
    unbalanced = JOURNAL.replace(
        "2026-01-31,JE-2,Revenue,,500.00,", "2026-01-31,JE-2,4000,,499.99,"
    )
    outcome = ledger_import.import_blob(drop(client_id, "unbalanced.csv", unbalanced))

    assert outcome.status == "rejected"
    assert outcome.report["errors"] == [
        {
            "line": 4,
            "column": "entry",
            "value": "JE-2",
            "reason": "entry does not balance in USD: debits 500.00 USD, credits 499.99 USD",
        }
    ]
    assert ledger(services, client_id)["entries"] == 0


def test_rejects_a_journal_naming_an_unknown_account(services, client_id):
    unknown = JOURNAL.replace("JE-1,1000,", "JE-1,Petty cash,")
    outcome = ledger_import.import_blob(drop(client_id, "unknown.csv", unknown))

    assert outcome.status == "rejected"
    assert outcome.report["errors"][0]["line"] == 3
    assert outcome.report["errors"][0]["value"] == "Petty cash"
    assert "unknown account" in outcome.report["errors"][0]["reason"]
    assert ledger(services, client_id)["entries"] == 0


def test_a_dry_run_reports_and_writes_nothing(services, client_id):
    report = ledger_import.preview(str(client_id), SIMPLE_CSV.encode(), "preview.csv")

    assert (report["dry_run"], report["status"]) == (True, "would_import")
    assert (report["rows_read"], report["imported"]) == (4, 4)
    assert "import_id" not in report
    assert ledger(services, client_id)["bank_rows"] == 0
    assert ledger_import.list_imports(client_id) == []


def test_listing_the_imports_of_an_unknown_client_is_not_found(services):
    stranger = uuid.uuid4()
    with pytest.raises(NotFound, match=f"client {stranger} not found"):
        ledger_import.list_imports(stranger)


def test_reports_mask_the_account_numbers_the_file_states(services, client_id):
    ofx = _ofx(("1", "20260105", "-10.00", "Coffee"))
    outcome = ledger_import.import_blob(drop(client_id, "masked.ofx", ofx))

    assert outcome.status == "imported", outcome.report
    assert "55501234" not in json.dumps(outcome.report)


def test_another_clients_import_is_not_found(services, client_id, firm):
    outcome = ledger_import.import_blob(drop(client_id, "mine.csv", SIMPLE_CSV))
    other = clients.create_client(firm, "Someone else")
    assert outcome.import_id is not None

    with pytest.raises(NotFound, match=f"import {outcome.import_id} not found"):
        ledger_import.get_report(other, outcome.import_id)
    assert ledger_import.get_report(client_id, outcome.import_id)["imported"] == 4


def test_every_import_and_rejection_is_in_an_intact_audit_chain(services, client_id):
    ledger_import.import_blob(drop(client_id, "ok.csv", SIMPLE_CSV))
    ledger_import.import_blob(drop(client_id, "bad.csv", "Date,Description,Amount\nnope,x,y\n"))

    with psycopg.connect(services["DATABASE_URL"]) as conn:
        actions = [
            r[0]
            for r in conn.execute(
                "SELECT action FROM audit_log WHERE client_id = %s ORDER BY seq", (client_id,)
            )
        ]
        assert actions == [
            "client.created",
            "ledger.import.imported",
            "ledger.import.rejected",
        ]
        assert audit.verify(conn, client_id) == []


def test_two_identical_entries_in_one_journal_file_are_both_posted(services, client_id):
    twins = (
        "date,entry,account,debit,credit,memo\n"
        "2026-02-28,JE-10,6000,50.00,,Fee\n"
        "2026-02-28,JE-10,1000,,50.00,\n"
        "2026-02-28,JE-11,6000,50.00,,Fee\n"
        "2026-02-28,JE-11,1000,,50.00,\n"
    )
    outcome = ledger_import.import_blob(drop(client_id, "twins.csv", twins))

    assert (outcome.report["imported"], outcome.report["duplicates_skipped"]) == (2, 0)
    assert ledger(services, client_id)["by_account"] == {"6000": 10000, "1000": -10000}


def test_a_fitid_reused_inside_one_file_loses_no_transaction(services, client_id):
    ofx = (
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nSECURITY:NONE\nENCODING:USASCII\n"
        "CHARSET:1252\nCOMPRESSION:NONE\nOLDFILEUID:NONE\nNEWFILEUID:NONE\n\n"
        "<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>0<SEVERITY>INFO</STATUS>"
        "<DTSERVER>20260101<LANGUAGE>ENG</SONRS></SIGNONMSGSRSV1>"
        "<BANKMSGSRSV1><STMTTRNRS><TRNUID>1<STATUS><CODE>0<SEVERITY>INFO</STATUS>"
        "<STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>1<ACCTID>99887766<ACCTTYPE>CHECKING"
        "</BANKACCTFROM><BANKTRANLIST><DTSTART>20260101<DTEND>20260131"
        "<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20260105<TRNAMT>-55.00<FITID>777<NAME>Transfer"
        "</STMTTRN><STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20260106<TRNAMT>-1000.00<FITID>777"
        "<NAME>Check 23400</STMTTRN></BANKTRANLIST>"
        "<LEDGERBAL><BALAMT>-1055.00<DTASOF>20260131</LEDGERBAL>"
        "</STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>\n"
    )
    outcome = ledger_import.import_blob(drop(client_id, "reused.ofx", ofx))

    assert outcome.status == "imported", outcome.report
    assert outcome.report["imported"] == 2
    assert ledger(services, client_id)["bank_total"] == -105500
    assert outcome.report["warnings"] == [
        "FITID '777' names 2 different transactions in this file (first on line 11); "
        "each was imported"
    ]
    assert outcome.report["balance_check"][0]["matches"] is True

    again = ledger_import.import_blob(drop(client_id, "reused-again.ofx", ofx))
    assert (again.report["imported"], again.report["duplicates_skipped"]) == (0, 2)


def test_an_account_folder_names_the_bank_account_of_a_file_that_does_not(services, client_id):
    ledger_import.import_blob(drop(client_id, "account-Checking/march.csv", SIMPLE_CSV))
    savings = ledger_import.import_blob(drop(client_id, "account-savings/march.csv", SIMPLE_CSV))
    again = ledger_import.import_blob(drop(client_id, "2026/account-checking /m.csv", SIMPLE_CSV))

    # The same rows on another account are that account's own transactions, not repeats;
    # the account label ignores case, spacing and folders that only organise files.
    assert (savings.report["imported"], savings.report["duplicates_skipped"]) == (4, 0)
    assert (again.report["imported"], again.report["duplicates_skipped"]) == (0, 4)
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        per_account = conn.execute(
            "SELECT a.name, count(*) FROM bank_transactions t JOIN accounts a"
            " ON a.id = t.account_id WHERE t.client_id = %s GROUP BY a.name ORDER BY 1",
            (client_id,),
        ).fetchall()
    assert per_account == [("Bank account checking", 4), ("Bank account savings", 4)]


def test_folders_that_only_organise_files_name_no_account(services, client_id):
    ledger_import.import_blob(drop(client_id, "2026-03/march.csv", SIMPLE_CSV))
    overlap = ledger_import.import_blob(drop(client_id, "2026-04/march-again.csv", SIMPLE_CSV))

    assert (overlap.report["imported"], overlap.report["duplicates_skipped"]) == (0, 4)
    assert ledger(services, client_id)["bank_rows"] == 4


def test_rejects_a_client_folder_not_written_as_the_client_id(services, client_id):
    outcome = ledger_import.import_blob(drop(str(client_id).upper(), "x.csv", SIMPLE_CSV))
    assert outcome.status == "rejected"
    assert outcome.report["reason"] == (
        f"client folder {str(client_id).upper()!r} must be written as {client_id}"
    )


def _ofx(*transactions: tuple[str, str, str, str]) -> str:
    """A minimal OFX 1.02 statement with (FITID, YYYYMMDD, amount, name) transactions."""
    body = "".join(
        f"<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>{day}<TRNAMT>{amount}<FITID>{fitid}"
        f"<NAME>{name}</STMTTRN>"
        for fitid, day, amount, name in transactions
    )
    return (
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nSECURITY:NONE\nENCODING:USASCII\n"
        "CHARSET:1252\nCOMPRESSION:NONE\nOLDFILEUID:NONE\nNEWFILEUID:NONE\n\n"
        "<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>0<SEVERITY>INFO</STATUS>"
        "<DTSERVER>20260101<LANGUAGE>ENG</SONRS></SIGNONMSGSRSV1>"
        "<BANKMSGSRSV1><STMTTRNRS><TRNUID>1<STATUS><CODE>0<SEVERITY>INFO</STATUS>"
        "<STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>1<ACCTID>55501234<ACCTTYPE>CHECKING"
        f"</BANKACCTFROM><BANKTRANLIST><DTSTART>20260101<DTEND>20260331{body}"
        "</BANKTRANLIST></STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>\n"
    )


def test_a_fitid_the_bank_reuses_for_a_new_payment_never_hides_it(services, client_id):
    coffee = ("1001", "20260105", "-10.00", "Coffee")
    ledger_import.import_blob(drop(client_id, "jan.ofx", _ofx(coffee)))

    february = ledger_import.import_blob(
        drop(client_id, "feb.ofx", _ofx(("1001", "20260203", "-99.00", "Rent"), coffee))
    )
    assert (february.report["imported"], february.report["duplicates_skipped"]) == (1, 1)
    assert february.report["warnings"][0].startswith(
        "FITID '1001' names 2 different transactions in this file"
    )
    assert (
        "FITID '1001' on line 11 was booked before as 2026-01-05 -10.00 USD"
        in (february.report["warnings"][1])
    )

    march = ledger_import.import_blob(
        drop(client_id, "mar.ofx", _ofx(("1001", "20260301", "-500.00", "Payroll tax")))
    )
    assert march.report["imported"] == 1
    assert len(march.report["warnings"]) == 1
    assert ledger(services, client_id)["bank_total"] == -(1000 + 9900 + 50000)


def test_account_numbers_are_masked_in_account_names(services, client_id):
    csv = "Account Number,Date,Description,Amount\nX12345678,2026-03-01,Deposit,10.00\n"
    outcome = ledger_import.import_blob(drop(client_id, "accounts.csv", csv))
    assert outcome.status == "imported", outcome.report
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM accounts WHERE client_id = %s AND code LIKE 'BANK-%%'",
                (client_id,),
            )
        ]
    assert names == ["Bank account …5678"]


def test_says_imported_only_once_the_import_is_committed(services, client_id):
    seen: list[tuple[str, int]] = []

    class Witness(logging.Handler):
        """On the "imported" line, counts what another connection sees of the client."""

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("imported "):
                with psycopg.connect(services["DATABASE_URL"]) as other:
                    row = other.execute(
                        "SELECT count(*) FROM bank_transactions WHERE client_id = %s",
                        (client_id,),
                    ).fetchone()
                assert row is not None
                seen.append((record.getMessage(), row[0]))

    witness = Witness(level=logging.INFO)
    logger = logging.getLogger("shared.services.ledger_import")
    logger.addHandler(witness)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        ledger_import.import_blob(drop(client_id, "committed.csv", SIMPLE_CSV))
    finally:
        logger.removeHandler(witness)
        logger.setLevel(level)

    [(message, visible)] = seen
    assert visible == 4
    assert "4 rows, 4 new, 0 duplicates; ledger checks" in message


def _ofx_lines(*transactions: tuple[str, str, str, str]) -> str:
    """``_ofx`` with each transaction on its own line: the k-th is on line 11 + k."""
    return _ofx(*transactions).replace("<STMTTRN>", "\n<STMTTRN>")


@pytest.fixture
def small_ofx_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read OFX files 4 KiB at a time, so a file of a few thousand transactions is many pieces
    and its first transactions are staged before its last ones are read."""
    monkeypatch.setattr("shared.importers.ofx.OFX_READ_BYTES", 4096)
    monkeypatch.setattr("shared.importers.ofx.OFX_PIECE_CHARS", 4096)


def test_a_bad_transaction_at_the_end_of_a_long_ofx_file_rejects_all_of_it(
    services, client_id, small_ofx_pieces
):
    good = [(f"F{n}", "20260105", "-1.00", "Coffee") for n in range(3000)]
    ofx = _ofx_lines(*good, ("LATE", "2026013", "-1.00", "Coffee"))
    outcome = ledger_import.import_blob(drop(client_id, "long.ofx", ofx))

    assert outcome.status == "rejected"
    assert outcome.report["reason"] == "1 row(s) are invalid; nothing was imported"
    assert outcome.report["errors"] == [
        {
            "line": 3012,
            "column": "DTPOSTED",
            "value": "2026013",
            "reason": "not a date; expected YYYYMMDD (transaction LATE)",
        }
    ]
    assert ledger(services, client_id)["bank_rows"] == 0
    assert ledger(services, client_id)["entries"] == 0


def test_broken_markup_at_the_end_of_a_long_ofx_file_rejects_all_of_it(
    services, client_id, small_ofx_pieces
):
    good = [(f"F{n}", "20260105", "-1.00", "Coffee") for n in range(3000)]
    ofx = _ofx_lines(*good).replace("</BANKMSGSRSV1>", "\nstray words\n</BANKMSGSRSV1>")
    outcome = ledger_import.import_blob(drop(client_id, "broken.ofx", ofx))

    assert outcome.status == "rejected"
    assert outcome.report["reason"] == (
        "OFX file could not be read: text 'stray words' outside any element near line 3011"
    )
    assert ledger(services, client_id)["bank_rows"] == 0


def test_an_investment_statement_that_trades_after_its_cash_lines_imports_nothing(
    services, client_id, small_ofx_pieces
):
    cash = "".join(
        f"\n<INVBANKTRAN><STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20260105<TRNAMT>1.00<FITID>C{n}"
        "</STMTTRN><SUBACCTFUND>CASH</INVBANKTRAN>"
        for n in range(2000)
    )
    ofx = (
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\n\n<OFX><INVSTMTMSGSRSV1><INVSTMTTRNRS>"
        "<INVSTMTRS><CURDEF>USD<INVACCTFROM><BROKERID>broker.com<ACCTID>X1</INVACCTFROM>"
        f"<INVTRANLIST><DTSTART>20260101<DTEND>20260131{cash}\n<BUYSTOCK><INVBUY><INVTRAN>"
        "<FITID>T1<DTTRADE>20260120</INVTRAN><TOTAL>-100<SUBACCTFUND>CASH</INVBUY>"
        "<BUYTYPE>BUY</BUYSTOCK></INVTRANLIST></INVSTMTRS></INVSTMTTRNRS>"
        "</INVSTMTMSGSRSV1></OFX>\n"
    )
    outcome = ledger_import.import_blob(drop(client_id, "trades.ofx", ofx))

    assert outcome.status == "rejected"
    assert outcome.report["reason"] == (
        "investment statement: only its cash lines can be imported, but account "
        "broker.com/X1 also has 1 security transaction(s) (BUYSTOCK); importing the cash "
        "lines alone would leave its cash incomplete"
    )
    assert ledger(services, client_id)["bank_rows"] == 0
