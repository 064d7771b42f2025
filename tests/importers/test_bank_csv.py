"""Bank CSV dialects and hard cases built inline: numbers, dates, layouts, skips, row errors."""

from __future__ import annotations

from datetime import date

import pytest

from shared.domain.imports import FileFormat, MappingProfile, RowError, StatementBalance
from shared.importers import UnsupportedFile
from tests.importers.corpus_expectations import CORPUS
from tests.importers.helpers import amounts, parse_bytes


class TestNumbers:
    def test_reads_decimal_comma_with_dot_thousands(self) -> None:
        data = (
            "Buchungstag;Verwendungszweck;Betrag\n"
            "01.03.2024;Miete;-1.234,56\n"
            "02.03.2024;Gehalt;2.500,00\n"
        )
        parsed, records = parse_bytes(data.encode())
        assert amounts(records) == [-123_456, 250_000]
        assert parsed.details["decimal_separator"] == ","
        assert parsed.details["delimiter"] == ";"

    def test_reads_parentheses_and_trailing_minus_as_negative(self) -> None:
        data = (
            b"Date,Description,Amount\n"
            b"2024-01-02,Fee,(12.50)\n"
            b"2024-01-03,Refund,7.25\n"
            b"2024-01-04,Card,15.00-\n"
        )
        _, records = parse_bytes(data)
        assert amounts(records) == [-1250, 725, -1500]

    def test_reads_dollar_signs_around_the_minus(self) -> None:
        data = (
            b"Date,Description,Amount\n"
            b'2024-01-02,A,"-$7,971.39"\n'
            b"2024-01-03,B,$-5.00\n"
            b"2024-01-04,C,$1.00\n"
        )
        _, records = parse_bytes(data)
        assert amounts(records) == [-797_139, -500, 100]
        assert {record.currency for record in records} == {"USD"}

    def test_reads_apostrophe_and_space_thousands(self) -> None:
        data = b"Date;Text;Amount\n2024-01-02;A;11'373.94\n2024-01-03;B;-1 234.50\n"
        _, records = parse_bytes(data)
        assert amounts(records) == [1_137_394, -123_450]

    def test_takes_the_currency_from_a_euro_sign_in_the_amount(self) -> None:
        data = 'Datum,Text,Betrag\n05.12.2025,Spende,"-123,45 €"\n'.encode()
        _, records = parse_bytes(data, currency="USD")
        assert (records[0].amount_minor, records[0].currency) == (-12_345, "EUR")

    def test_reports_a_number_in_the_other_decimal_dialect(self) -> None:
        data = (
            b"Date,Description,Amount\n"
            b"2024-01-02,A,1.50\n"
            b"2024-01-03,B,2.25\n"
            b'2024-01-04,C,"1.234,50"\n'
        )
        parsed, records = parse_bytes(data)
        assert amounts(records) == [150, 225]
        assert parsed.errors == [
            RowError(4, "Amount", "1.234,50", 'not a number; decimal separator is "."')
        ]

    def test_reports_more_decimals_than_the_currency_has(self) -> None:
        data = b"Date,Description,Amount\n2024-01-02,Widget,12.345\n2024-01-03,Other,1.50\n"
        parsed, records = parse_bytes(data)
        assert amounts(records) == [150]
        assert parsed.errors == [
            RowError(2, "Amount", "12.345", "has more decimal places than USD allows (2)")
        ]

    def test_reads_a_jpy_file_with_no_minor_unit(self) -> None:
        data = (
            b"Date,Description,Amount,Currency\n"
            b"2024-01-05,Hotel,-12000,JPY\n"
            b"2024-01-06,Refund,500,JPY\n"
            b"2024-01-07,Odd,12.50,JPY\n"
        )
        parsed, records = parse_bytes(data)
        assert [(r.amount_minor, r.currency) for r in records] == [(-12_000, "JPY"), (500, "JPY")]
        assert parsed.errors == [
            RowError(4, "Amount", "12.50", "has more decimal places than JPY allows (0)")
        ]

    def test_reads_a_kwd_file_with_three_decimals(self) -> None:
        data = (
            b"Date,Description,Amount\n"
            b"2024-01-05,Rent,-1.250\n"
            b"2024-01-06,Fee,0.005\n"
            b"2024-01-07,Odd,1.0005\n"
        )
        profile = MappingProfile(currency="KWD")
        parsed, records = parse_bytes(data, profile=profile)
        assert [(r.amount_minor, r.currency) for r in records] == [(-1250, "KWD"), (5, "KWD")]
        assert parsed.errors == [
            RowError(4, "Amount", "1.0005", "has more decimal places than KWD allows (3)")
        ]

    def test_reports_an_amount_whose_sign_contradicts_the_currency_column(self) -> None:
        data = (
            "Date,Text,Amount,Currency\n2024-01-02,A,€5.00,USD\n2024-01-03,B,3.00,USD\n".encode()
        )
        parsed, records = parse_bytes(data)
        assert amounts(records) == [300]
        assert parsed.errors == [
            RowError(2, "Amount", "€5.00", "the amount is in EUR but the row's currency is USD")
        ]

    def test_reports_an_unknown_currency_code(self) -> None:
        data = b"Date,Text,Amount,Currency\n2024-01-02,A,5.00,XYZ\n"
        parsed, records = parse_bytes(data)
        assert records == []
        assert parsed.errors == [RowError(2, "Currency", "XYZ", "not an ISO 4217 currency code")]


class TestDates:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2024-03-07", date(2024, 3, 7)),
            ("2024/03/07", date(2024, 3, 7)),
            ("07.03.2024", date(2024, 3, 7)),
            ("07.03.24", date(2024, 3, 7)),
            ("07 Mar 2024", date(2024, 3, 7)),
            ("07-Mar-24", date(2024, 3, 7)),
            ('"Mar 7, 2024"', date(2024, 3, 7)),
            ('"07.03.24, 13:56"', date(2024, 3, 7)),
            ("2024-03-07 23:59:59", date(2024, 3, 7)),
            ("20240307", date(2024, 3, 7)),
        ],
    )
    def test_reads_date_dialects(self, text: str, expected: date) -> None:
        data = f"Date,Description,Amount\n{text},Coffee,-3.50\n".encode()
        _, records = parse_bytes(data)
        assert [record.booked_on for record in records] == [expected]

    def test_reads_the_first_date_of_an_as_of_field(self) -> None:
        data = b'"Date","Description","Amount"\n"04/17/2023 as of 04/15/2023","Interest","$0.03"\n'
        _, records = parse_bytes(data)
        assert records[0].booked_on == date(2023, 4, 17)

    def test_settles_month_first_from_any_day_above_twelve(self) -> None:
        data = b"Date,Description,Amount\n2/8/15,A,1.00\n2/24/15,B,1.00\n"
        parsed, records = parse_bytes(data)
        assert [r.booked_on for r in records] == [date(2015, 2, 8), date(2015, 2, 24)]
        assert parsed.details["date_order"] == "MDY"

    def test_rejects_ambiguous_dates(self) -> None:
        data = b"Date,Description,Amount\n01/02/2024,Coffee,-3.50\n03/04/2024,Salary,100.00\n"
        with pytest.raises(UnsupportedFile) as caught:
            parse_bytes(data)
        assert str(caught.value) == (
            'dates are ambiguous: every date in column "Date" (such as 01/02/2024) reads as '
            "both DD/MM and MM/DD; set date_order in the client's mapping profile"
        )

    def test_accepts_ambiguous_dates_with_the_profile_order(self) -> None:
        data = b"Date,Description,Amount\n01/02/2024,Coffee,-3.50\n03/04/2024,Salary,100.00\n"
        parsed, records = parse_bytes(data, profile=MappingProfile(date_order="DMY"))
        assert [r.booked_on for r in records] == [date(2024, 2, 1), date(2024, 4, 3)]
        assert parsed.details["date_order"] == "DMY"
        _, records = parse_bytes(data, profile=MappingProfile(date_order="MDY"))
        assert [r.booked_on for r in records] == [date(2024, 1, 2), date(2024, 3, 4)]

    def test_settles_the_order_from_a_date_beyond_the_sample(self) -> None:
        rows = "".join(f"0{1 + i % 9}/0{1 + i % 9}/2024,Row {i},1.00\n" for i in range(600))
        data = f"Date,Description,Amount\n{rows}13/05/2024,Late,2.00\n".encode()
        parsed, records = parse_bytes(data)
        assert parsed.details["date_order"] == "DMY"
        assert records[-1].booked_on == date(2024, 5, 13)
        assert len(records) == 601

    def test_reports_a_bad_date_in_a_transaction_row(self) -> None:
        data = b"Date,Description,Amount\n2024-01-02,Coffee,-3.50\n2024-13-45,Tea,-2.00\n"
        parsed, records = parse_bytes(data)
        assert len(records) == 1
        assert parsed.errors == [
            RowError(3, "Date", "2024-13-45", "not a date; expected YYYY-MM-DD")
        ]

    def test_rejects_a_date_column_without_dates(self) -> None:
        data = b"Date,Description,Amount\nsoon,Coffee,-3.50\nlater,Tea,-2.00\n"
        with pytest.raises(UnsupportedFile) as caught:
            parse_bytes(data)
        assert str(caught.value) == (
            "no dates recognised in column \"Date\" (first values: 'soon', 'later')"
        )


class TestLayouts:
    def test_reads_separate_debit_and_credit_columns(self) -> None:
        data = (
            b'"Date","Description","Withdrawal","Deposit"\n'
            b'"08/17/2022","Deposit","","$20.00"\n'
            b'"08/14/2022","ATM","$1,103.00",""\n'
        )
        parsed, records = parse_bytes(data)
        assert amounts(records) == [2000, -110_300]
        assert parsed.details["amount_layout"] == "split"

    def test_reports_a_row_with_both_debit_and_credit(self) -> None:
        data = b"Date,Description,Debit,Credit\n2024-01-02,Odd,5.00,6.00\n2024-01-03,Empty,,\n"
        parsed, records = parse_bytes(data)
        assert records == []
        assert parsed.errors == [
            RowError(2, "Debit / Credit", "5.00 / 6.00", "both debit and credit are set"),
            RowError(3, "Debit / Credit", " / ", "neither debit nor credit is set"),
        ]

    def test_takes_the_sign_from_a_debit_credit_type_column(self) -> None:
        data = (
            b"Date,Description,Amount,Transaction Type\n"
            b'6/12/15,A,"1,000.00",debit\n'
            b'6/13/15,B,"2,000.00",credit\n'
        )
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-100_000, 200_000]
        assert parsed.details["amount_layout"] == "typed"

    def test_ignores_a_type_column_that_holds_no_debit_credit_markers(self) -> None:
        data = (
            b"Date,Type,Description,Amount\n"
            b"2024-01-02,ATM,Cash,-20.00\n"
            b"2024-01-03,DEPOSIT,Pay,5.00\n"
        )
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-2000, 500]
        assert parsed.details["amount_layout"] == "signed"

    def test_flips_card_amounts_with_debit_is_negative(self) -> None:
        data = (
            b'"Merchant Name","Date","Amount"\n'
            b'"Mobil","01/10/2019","36.33"\n'
            b'"Refund","01/15/2019","-5.00"\n'
        )
        _, records = parse_bytes(data, profile=MappingProfile(debit_is_negative=True))
        assert amounts(records) == [-3633, 500]

    def test_reads_a_headerless_file_with_a_profile(self) -> None:
        profile = MappingProfile(
            has_header=False,
            columns={"date": 0, "description": 1, "amount": 3, "type": 4, "account": 6},
        )
        with (CORPUS / "bank-csv/csv2ofx__mint_headerless.csv").open("rb") as stream:
            data = stream.read()
        parsed, records = parse_bytes(data, profile=profile)
        assert amounts(records) == [-100_000, -150_000, 200_000, -250_000]
        assert [r.account_ref for r in records] == ["Savings", "Checking", "Checking", "Checking"]
        assert parsed.details["header_line"] is None
        assert records[0].line == 1

    def test_rejects_column_names_in_a_headerless_profile(self) -> None:
        profile = MappingProfile(has_header=False, columns={"date": "Date", "amount": 3})
        with pytest.raises(UnsupportedFile) as caught:
            parse_bytes(b"2024-01-02,x,1.00\n", profile=profile)
        assert str(caught.value) == (
            "the mapping profile says the file has no header, so its columns must be 0-based "
            "indexes, not names (role(s) date)"
        )

    def test_maps_columns_named_by_the_profile(self) -> None:
        data = b"When,What,How much\n2024-01-02,Coffee,-3.50\n"
        profile = MappingProfile(
            columns={"date": "When", "description": "What", "amount": "How much"}
        )
        parsed, records = parse_bytes(data, profile=profile)
        assert (records[0].description, records[0].amount_minor) == ("Coffee", -350)
        assert parsed.details["columns"] == {
            "date": "When",
            "amount": "How much",
            "description": "What",
        }

    def test_rejects_a_profile_column_the_header_lacks(self) -> None:
        data = b"Date,Description,Amount\n2024-01-02,Coffee,-3.50\n"
        profile = MappingProfile(columns={"amount": "Betrag"})
        with pytest.raises(UnsupportedFile) as caught:
            parse_bytes(data, profile=profile)
        assert str(caught.value) == (
            'the mapping profile maps amount to column "Betrag", but the header has: '
            "Date, Description, Amount"
        )

    def test_rejects_a_header_without_an_amount_column(self) -> None:
        data = b"Date,Description,Category\n2024-01-02,Coffee,Food\n"
        with pytest.raises(UnsupportedFile) as caught:
            parse_bytes(data)
        assert str(caught.value) == (
            "not a bank CSV, OFX/QFX or journal CSV file: the header on line 1 (Date, "
            "Description, Category) has no column for the amount (or debit and credit); map it "
            "in the client's mapping profile"
        )

    def test_sets_account_ref_per_row_for_multi_account_files(self) -> None:
        data = (
            b"Run Date,Account,Account Number,Action,Amount\n"
            b"12/15/2025,IRA,111,DIVIDEND,713.08\n12/15/2025,HSA,222,DIVIDEND,0.66\n"
        )
        _, records = parse_bytes(data)
        assert [r.account_ref for r in records] == ["111", "222"]

    def test_reads_header_names_in_other_languages(self) -> None:
        data = b"Fecha;Concepto;Importe;Saldo\n24/03/2022;Abono;2,83;1719,90\n"
        parsed, records = parse_bytes(data, currency="EUR")
        assert (records[0].booked_on, records[0].amount_minor) == (date(2022, 3, 24), 283)
        assert parsed.balances == [StatementBalance("", "EUR", 171_990, date(2022, 3, 24))]


class TestText:
    def test_keeps_a_formula_like_payee_as_literal_text(self) -> None:
        data = b'Date,Payee,Amount\n2024-01-02,"=HYPERLINK(""http://x"",""y"")",-1.00\n'
        _, records = parse_bytes(data)
        assert records[0].description == '=HYPERLINK("http://x","y")'

    def test_joins_payee_description_and_memo(self) -> None:
        data = (
            b"date;description;payee;amount;memo\n"
            b"2025/06/07;A description;A Payee;-123.45;A memo\n"
        )
        _, records = parse_bytes(data)
        assert records[0].description == "A Payee / A description / A memo"

    def test_uses_a_long_unique_id_column_as_fitid(self) -> None:
        data = (
            b"Date,Transaction ID,Description,Amount\n"
            b"2024-12-29,CONPWBBZPL,A,-8.40\n"
            b"2024-12-26,C9VK7VXVJN,B,-5.00\n"
        )
        _, records = parse_bytes(data)
        assert [r.fitid for r in records] == ["CONPWBBZPL", "C9VK7VXVJN"]

    def test_ignores_a_short_id_column_for_fitid(self) -> None:
        data = (
            b"Date,Transaction ID,Description,Amount\n"
            b"2024-12-29,123,A,-8.40\n"
            b"2024-12-26,1234,B,-5.00\n"
        )
        _, records = parse_bytes(data)
        assert [r.fitid for r in records] == [None, None]

    def test_keeps_check_numbers_as_reference(self) -> None:
        data = b"Check Number,Date,Description,Amount\nINV-1,2024-01-02,Pay,10.00\n"
        _, records = parse_bytes(data)
        assert records[0].reference == "INV-1"


class TestSkipsAndErrors:
    def test_skips_preamble_repeated_headers_and_footers(self) -> None:
        data = (
            b"Statement for account XXX\n"
            b"Account:,12345\n"
            b"\n"
            b",,,\n"
            b"Date,Description,Amount,Balance\n"
            b"2024-01-02,Coffee,-3.50,96.50\n"
            b",,,\n"
            b"Date,Description,Amount,Balance\n"
            b"2024-01-03,Tea,-2.00,94.50\n"
            b"Total,,-5.50,\n"
            b"Date downloaded 01/24/2024 10:28 am,,,\n"
        )
        parsed, records = parse_bytes(data)
        assert [r.line for r in records] == [6, 9]
        assert parsed.errors == []
        assert parsed.details["header_line"] == 5
        assert parsed.details["skipped"] == {
            "preamble": 4,
            "blank": 1,
            "repeated header": 1,
            "summary or footer": 2,
        }
        assert parsed.details["rows_read"] == 6

    def test_skips_blank_lines_between_plain_rows(self) -> None:
        data = b"Date,Description,Amount\n2024-01-02,A,-1.00\n\n2024-01-02,B,-2.00\n,,\n"
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-100, -200]
        assert parsed.details["skipped"] == {"blank": 2}

    def test_reports_a_row_cut_short_by_a_truncated_file(self) -> None:
        data = b"Date,Description,Amount\n2024-01-02,Coffee,-3.50\n2024-01-03,Gro"
        parsed, records = parse_bytes(data)
        assert len(records) == 1
        assert parsed.errors == [
            RowError(3, None, "2024-01-03,Gro", "row has 2 fields; the header has 3")
        ]

    def test_reports_a_truncated_date_instead_of_skipping_it(self) -> None:
        data = b"Date,Description,Amount\n2024-01-02,Coffee,-3.50\n2024-01-0"
        parsed, _ = parse_bytes(data)
        assert parsed.errors == [
            RowError(3, None, "2024-01-0", "row has 1 fields; the header has 3")
        ]

    def test_counts_every_error_but_keeps_the_first_thousand(self) -> None:
        rows = "".join(f"2024-01-02,Row {i},abc\n" for i in range(1500))
        parsed, records = parse_bytes(f"Date,Description,Amount\n{rows}".encode())
        assert records == []
        assert len(parsed.errors) == 1000
        assert parsed.details["error_count"] == 1500
        assert parsed.errors[-1].line == 1001

    def test_numbers_lines_as_an_editor_does_with_cr_only_endings(self) -> None:
        data = b"\r\rDate,Description,Amount\r2024-01-02,Coffee,-3.50\r2024-01-03,Tea,x\r"
        parsed, records = parse_bytes(data)
        assert records[0].line == 4
        assert parsed.errors == [
            RowError(5, "Amount", "x", 'not a number; decimal separator is "."')
        ]

    def test_numbers_lines_after_a_quoted_newline(self) -> None:
        data = (
            b"Date,Description,Amount\r\n"
            b'2024-01-02,"two\r\n'
            b'lines",-3.50\r\n'
            b"2024-01-03,Tea,-1.00\r\n"
        )
        _, records = parse_bytes(data)
        assert [r.line for r in records] == [2, 4]
        assert records[0].description == "two\r\nlines"


class TestBalances:
    def test_records_the_closing_balance_of_a_newest_first_file(self) -> None:
        with (CORPUS / "bank-csv/csv2ofx__schwab-checking.csv").open("rb") as stream:
            parsed, _ = parse_bytes(stream.read())
        assert parsed.balances == [StatementBalance("", "USD", 87_847, date(2022, 8, 17))]

    def test_records_one_closing_balance_per_account(self) -> None:
        data = (
            b"Date,Account,Description,Amount,Balance\n"
            b"2024-01-02,A,x,-1.00,9.00\n2024-01-02,B,y,2.00,12.00\n2024-01-03,A,z,-1.00,8.00\n"
        )
        parsed, _ = parse_bytes(data)
        assert parsed.balances == [
            StatementBalance("A", "USD", 800, date(2024, 1, 3)),
            StatementBalance("B", "USD", 1200, date(2024, 1, 2)),
        ]

    def test_records_no_balance_when_same_day_rows_cannot_be_ordered(self) -> None:
        data = (
            b"Date,Description,Amount,Balance\n"
            b"2024-01-02,x,-20.00,858.47\n"
            b"2024-01-02,y,20.00,878.47\n"
        )
        parsed, records = parse_bytes(data)
        assert len(records) == 2
        assert parsed.balances == []
        assert parsed.details["balance_not_recorded"] == ["(the file's account)"]

    def test_reports_a_bad_balance(self) -> None:
        data = b"Date,Description,Amount,Balance\n2024-01-02,x,-20.00,lots\n"
        parsed, records = parse_bytes(data)
        assert records == []
        assert parsed.errors == [
            RowError(2, "Balance", "lots", 'not a number; decimal separator is "."')
        ]


def test_reports_what_was_detected() -> None:
    data = "Buchungstag;Empfänger;Betrag;Währung\n01.02.2024;Müller GmbH;-12,50;EUR\n".encode(
        "latin-1"
    )
    parsed, records = parse_bytes(data, name="konto.csv")
    assert parsed.format == FileFormat.BANK_CSV
    assert records[0].currency == "EUR"
    details = parsed.details
    assert {
        key: details[key]
        for key in ("encoding", "delimiter", "date_order", "decimal_separator", "header_line")
    } == {
        "encoding": "cp1252",
        "delimiter": ";",
        "date_order": "DMY",
        "decimal_separator": ",",
        "header_line": 1,
    }
    assert details["columns"] == {
        "date": "Buchungstag",
        "amount": "Betrag",
        "currency": "Währung",
        "payee": "Empfänger",
    }
    assert details["file_name"] == "konto.csv"


class TestRowsThatMustNotBeLost:
    def test_reports_rows_with_an_amount_but_no_date(self) -> None:
        data = (
            b"Date,Description,Amount\n"
            b"2026-01-05,Coffee,-4.50\n"
            b",Transfer to savings,-500.00\n"
            b",Rent,-1200.00\n"
            b"2026-01-06,Tea,-3.00\n"
        )
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-450, -300]
        assert parsed.errors == [
            RowError(3, "Date", "", "empty; a date is required"),
            RowError(4, "Date", "", "empty; a date is required"),
        ]
        assert "summary or footer" not in parsed.details["skipped"]

    def test_reports_a_dateless_row_whose_only_text_merely_starts_like_a_total(self) -> None:
        data = b"Date,Description,Amount\n2026-01-05,A,-1.00\n,Balance transfer,-50.00\n"
        parsed, _ = parse_bytes(data)
        assert [error.line for error in parsed.errors] == [3]

    @pytest.mark.parametrize(
        "footer",
        [
            b"Transactions Total,,-5.00",
            b"Total,,-5.00",
            b"Summe,,-5.00",
            b",Total,-5.00",
            b",Closing balance,120.00",
        ],
    )
    def test_skips_a_dateless_row_with_an_amount_that_is_labelled_a_total(
        self, footer: bytes
    ) -> None:
        data = b"Date,Description,Amount\n2026-01-05,A,-2.00\n2026-01-06,B,-3.00\n" + footer
        parsed, records = parse_bytes(data + b"\n")
        assert amounts(records) == [-200, -300]
        assert parsed.errors == []
        assert parsed.details["skipped"] == {"summary or footer": 1}

    def test_reports_a_row_with_more_filled_cells_than_the_header(self) -> None:
        data = (
            b"Date,Description,Amount\n"
            b"2026-01-05,Coffee,-4.50\n"
            b"2026-01-06,Rent,-1,234.00\n"
            b"2026-01-07,Lunch,-12.00\n"
        )
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-450, -1200]
        assert parsed.errors == [
            RowError(
                3,
                None,
                "2026-01-06,Rent,-1,234.00",
                "row has 4 cells where the header has 3; a value holding the delimiter must be "
                "quoted",
            )
        ]

    def test_reports_an_unquoted_thousands_separator_in_the_description_column_too(self) -> None:
        data = b"Date,Amount,Description\n2026-01-05,-1,234.00,Rent\n2026-01-06,-2.00,Tea\n"
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-200]
        assert [error.line for error in parsed.errors] == [2]

    def test_accepts_trailing_empty_cells_beyond_the_header(self) -> None:
        data = b"Date,Description,Amount\n2026-01-05,Coffee,-4.50,,,\n2026-01-06,Tea,-3.00,\n"
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-450, -300]
        assert parsed.errors == []

    def test_reports_a_row_of_a_million_cells_without_reading_it_whole(self) -> None:
        data = b"Date,Description,Amount\n2026-01-05,A,-1.00\n" + b"1," * 1_000_000 + b"\n"
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-100]
        assert [(error.line, error.reason) for error in parsed.errors] == [
            (
                3,
                "the file cannot be read as CSV from this line on "
                "(the line is longer than 65,536 characters)",
            )
        ]

    def test_reports_a_row_of_two_thousand_short_cells(self) -> None:
        data = b"Date,Description,Amount\n2026-01-05,A,-1.00\n" + b"1," * 2000 + b"\n"
        parsed, _ = parse_bytes(data)
        assert [(error.line, error.reason.split(";")[0]) for error in parsed.errors] == [
            (3, "row has 2000 cells where the header has 3")
        ]

    def test_reports_an_amount_of_thousands_of_digits_as_too_large(self) -> None:
        data = b"Date,Description,Amount\n2026-01-05,A,-1.00\n2026-01-06,B," + b"1" * 5000 + b"\n"
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-100]
        assert [(error.line, error.column, error.reason) for error in parsed.errors] == [
            (3, "Amount", "amount is too large: more than 15 digits before the decimal separator")
        ]

    def test_reports_a_booking_year_outside_1900_to_2100(self) -> None:
        data = (
            b"Date,Description,Amount\n2026-01-05,A,-1.00\n0001-01-06,B,-2.00\n9999-01-07,C,-3\n"
        )
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-100]
        assert [(error.line, error.reason) for error in parsed.errors] == [
            (3, "year 0001 is outside 1900-2100; not a booking date"),
            (4, "year 9999 is outside 1900-2100; not a booking date"),
        ]

    def test_reports_amounts_and_dates_in_other_digits(self) -> None:
        data = "Date,Description,Amount\n2026-01-05,A,-1.00\n2026-01-06,B,-١٢٣.٠٠\n".encode()
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-100]
        assert [(error.line, error.column) for error in parsed.errors] == [(3, "Amount")]
        assert "digits other than 0-9" in parsed.errors[0].reason


class TestUnsettledDecimalSeparator:
    def test_rejects_grouped_whole_numbers_when_nothing_settles_the_separator(self) -> None:
        data = (
            "Datum;Verwendungszweck;Betrag\n"
            "05.01.2026;Miete;-1.000\n06.01.2026;Gehalt;2.500\n07.01.2026;Bonus;12.000\n"
        )
        with pytest.raises(UnsupportedFile) as caught:
            parse_bytes(data.encode(), currency="EUR")
        assert str(caught.value) == (
            'the decimal separator cannot be told from the amounts: "-1.000" on line 2 may be '
            "a whole number with a thousands separator or have three decimals; set "
            'decimal_separator ("." or ",") in the client\'s mapping profile'
        )

    def test_rejects_them_in_a_currency_without_decimals_too(self) -> None:
        data = (
            "Datum;Verwendungszweck;Betrag\n05.01.2026;Miete;-1.000\n06.01.2026;Gehalt;150.000\n"
        )
        with pytest.raises(UnsupportedFile, match="decimal_separator"):
            parse_bytes(data.encode(), currency="JPY")

    def test_reads_them_as_the_profile_says(self) -> None:
        data = "Datum;Verwendungszweck;Betrag\n05.01.2026;Miete;-1.000\n06.01.2026;Gehalt;2.500\n"
        profile = MappingProfile(decimal_separator=",")
        _, records = parse_bytes(data.encode(), currency="EUR", profile=profile)
        assert amounts(records) == [-100_000, 250_000]

    def test_settles_the_separator_from_an_amount_past_the_sample(self) -> None:
        rows = "".join(f"05.01.2026;Miete;-{n}.000\n" for n in range(1, 300))
        data = f"Datum;Verwendungszweck;Betrag\n{rows}06.01.2026;Gehalt;2.500,50\n"
        parsed, records = parse_bytes(data.encode(), currency="EUR")
        assert amounts(records)[0] == -100_000
        assert amounts(records)[-1] == 250_050
        assert parsed.details["decimal_separator"] == ","

    def test_reads_a_three_decimal_currency_with_a_decimal_comma(self) -> None:
        data = "Date;Description;Amount\n2026-01-05;Loyer;-12,500\n2026-01-06;Salaire;3,250\n"
        _, records = parse_bytes(data.encode(), currency="TND")
        assert amounts(records) == [-12_500, 3_250]

    def test_keeps_the_default_point_when_no_amount_is_ambiguous(self) -> None:
        data = b"Date,Description,Amount\n2026-01-05,A,-100\n2026-01-06,B,25\n"
        parsed, records = parse_bytes(data)
        assert amounts(records) == [-10_000, 2_500]
        assert parsed.details["decimal_separator_source"] == "default"
