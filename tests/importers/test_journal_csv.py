"""Journal CSVs: entries of several lines, debit/credit or signed amounts, and their row errors."""

from __future__ import annotations

from datetime import date

from shared.domain.imports import FileFormat, JournalLine, RowError
from tests.importers.helpers import parse_bytes, parse_journal

ODOO_HEADER = (
    "ref;date;journal_id;line_id / account_id;line_id / name;line_id / debit;line_id / credit"
)


def _odoo(*rows: str) -> bytes:
    return "\n".join((ODOO_HEADER, *rows)).encode() + b"\n"


def test_continues_an_entry_on_lines_without_reference_and_date() -> None:
    parsed, lines = parse_journal(
        _odoo(
            "move_1;2014-01-01;MISC;X2001;Sale;;1000",
            ";;;X11003;Tax;;200;",
            ";;;X11002;Customer;1200;",
        )
    )
    assert parsed.format == FileFormat.JOURNAL_CSV
    assert lines == [
        JournalLine(2, "move_1", date(2014, 1, 1), "X2001", 0, 100_000, "USD", "Sale"),
        JournalLine(3, "move_1", date(2014, 1, 1), "X11003", 0, 20_000, "USD", "Tax"),
        JournalLine(4, "move_1", date(2014, 1, 1), "X11002", 120_000, 0, "USD", "Customer"),
    ]


def test_reads_a_signed_amount_as_debit_when_positive() -> None:
    data = (
        b"JournalNumber,JournalDate,AccountName,NetAmount,Description\n"
        b"1,23-Jan-15,Income,-360.00,Sales\n1,23-Jan-15,Cash,360.00,Charger\n"
    )
    _, lines = parse_journal(data, currency="KES")
    assert [(line.account, line.debit_minor, line.credit_minor) for line in lines] == [
        ("Income", 0, 36_000),
        ("Cash", 36_000, 0),
    ]
    assert {line.currency for line in lines} == {"KES"}
    assert lines[0].booked_on == date(2015, 1, 23)


def test_reads_the_commodity_column_with_a_dollar_sign_as_the_default_currency() -> None:
    data = (
        b'"txnidx","date","description","account","amount","commodity"\n'
        b'"1","2008/01/01","income","assets:bank","1","$"\n'
        b'"1","2008/01/01","income","income:salary","-1","$"\n'
        b'"2","2008/01/02","fx","assets:eur","5","EUR"\n'
        b'"2","2008/01/02","fx","assets:eur","-5","EUR"\n'
    )
    _, lines = parse_journal(data, currency="CAD")
    assert [line.currency for line in lines] == ["CAD", "CAD", "EUR", "EUR"]
    assert [line.entry_ref for line in lines] == ["1", "1", "2", "2"]


def test_reports_lines_with_both_or_neither_of_debit_and_credit() -> None:
    parsed, lines = parse_journal(
        _odoo(
            "m1;2014-01-01;MISC;A;both;5;5",
            ";;;B;neither;;",
            ";;;C;negative;-5;",
            ";;;D;fine;5;",
        )
    )
    assert [line.account for line in lines] == ["D"]
    assert parsed.errors == [
        RowError(2, "line_id / debit", "5 / 5", "both debit and credit are set"),
        RowError(3, "line_id / debit", " / ", "neither debit nor credit is set"),
        RowError(4, "line_id / debit", "-5 / ", "negative; debit and credit are positive amounts"),
    ]


def test_reports_a_bad_date_and_the_lines_that_continue_its_entry() -> None:
    parsed, lines = parse_journal(
        _odoo("m1;2014-02-30;MISC;A;x;5;", ";;;B;y;;5", "m2;2014-03-01;MISC;A;z;1;")
    )
    assert [line.entry_ref for line in lines] == ["m2"]
    assert parsed.errors == [
        RowError(2, "date", "2014-02-30", "not a date; expected YYYY-MM-DD"),
        RowError(3, "date", "", "empty, and the entry this line continues has no valid date"),
    ]


def test_reports_a_first_line_without_entry_reference() -> None:
    parsed, lines = parse_journal(_odoo(";2014-01-01;MISC;A;x;5;", "m1;2014-01-01;MISC;B;y;;5"))
    assert len(lines) == 1
    assert parsed.errors == [
        RowError(2, "ref", "", "no entry reference, and no line above to continue")
    ]


def test_reports_a_missing_account_and_a_bad_number_on_one_line() -> None:
    parsed, lines = parse_journal(_odoo("m1;2014-01-01;MISC;;x;abc;", "m1;2014-01-01;MISC;B;y;;5"))
    assert len(lines) == 1
    assert parsed.errors == [
        RowError(2, "line_id / account_id", "", "empty; an account is required"),
        RowError(2, "line_id / debit", "abc", 'not a number; decimal separator is "."'),
    ]


def test_reports_a_commodity_that_is_no_currency() -> None:
    data = (
        b"txnidx,date,account,amount,commodity\n"
        b"1,2024-01-02,assets:broker,10,AAPL\n1,2024-01-02,assets:cash,-10,USD\n"
    )
    parsed, lines = parse_journal(data)
    assert len(lines) == 1
    assert parsed.errors == [
        RowError(2, "commodity", "AAPL", "not a currency sign or ISO 4217 code")
    ]


def test_reads_a_journal_in_a_three_decimal_currency() -> None:
    data = (
        b"entry,date,account,debit,credit\nJ1,2024-01-02,Cash,1.250,\nJ1,2024-01-02,Sales,,1.250\n"
    )
    _, lines = parse_journal(data, currency="KWD")
    assert [(line.debit_minor, line.credit_minor) for line in lines] == [(1250, 0), (0, 1250)]


def test_reads_a_bank_file_with_reference_and_account_columns_as_bank_csv() -> None:
    data = (
        b"Date,Ref,Account,Description,Amount\n"
        b"2024-01-02,R1,Checking,Coffee,-3.50\n2024-01-03,R2,Checking,Tea,-2.00\n"
    )
    parsed, records = parse_bytes(data)
    assert parsed.format == FileFormat.BANK_CSV
    assert [(r.account_ref, r.reference) for r in records] == [
        ("Checking", "R1"),
        ("Checking", "R2"),
    ]


def test_reports_a_line_with_more_filled_cells_than_the_header() -> None:
    parsed, lines = parse_journal(
        _odoo("move_1;2014-01-01;MISC;X2001;Sale;;1000", ";;;X11002;Customer;1200;;oops")
    )
    assert len(lines) == 1
    assert [(error.line, error.reason.split(";")[0]) for error in parsed.errors] == [
        (3, "row has 8 cells where the header has 7")
    ]
