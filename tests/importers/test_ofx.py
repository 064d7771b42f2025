"""OFX/QFX clean-up and reading: headers, tags, dates, currencies, statuses and statement kinds."""

from __future__ import annotations

from datetime import date

import pytest

from shared.domain.imports import FileFormat, RowError, StatementBalance
from shared.importers import UnsupportedFile
from tests.importers.helpers import amounts, parse_bytes

SGML_HEADER = (
    "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nSECURITY:NONE\nENCODING:USASCII\n"
    "CHARSET:1252\nCOMPRESSION:NONE\nOLDFILEUID:NONE\nNEWFILEUID:NONE\n\n"
)
SIGNON = (
    "<SIGNONMSGSRSV1><SONRS><STATUS><CODE>0<SEVERITY>INFO</STATUS><DTSERVER>20240101</SONRS>"
    "</SIGNONMSGSRSV1>"
)


def _trn(posted: str, amount: str, fitid: str, name: str = "Shop") -> str:
    return (
        f"<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>{posted}<TRNAMT>{amount}<FITID>{fitid}"
        f"<NAME>{name}</STMTTRN>\n"
    )


def _bank(body: str, *, currency: str = "USD", account: str = "999", balance: str = "") -> str:
    ledger = f"<LEDGERBAL><BALAMT>{balance}<DTASOF>20240131120000</LEDGERBAL>" if balance else ""
    return (
        "<STMTTRNRS><TRNUID>1<STATUS><CODE>0<SEVERITY>INFO</STATUS>"
        f"<STMTRS><CURDEF>{currency}<BANKACCTFROM><BANKID>121<ACCTID>{account}<ACCTTYPE>CHECKING"
        f"</BANKACCTFROM><BANKTRANLIST><DTSTART>20240101<DTEND>20240131\n{body}</BANKTRANLIST>"
        f"{ledger}</STMTRS></STMTTRNRS>"
    )


def _sgml(*statements: str, header: str = SGML_HEADER) -> str:
    return f"{header}<OFX>{SIGNON}\n<BANKMSGSRSV1>{''.join(statements)}</BANKMSGSRSV1></OFX>\n"


def _reject(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(UnsupportedFile) as caught:
        parse_bytes(data, name="statement.ofx")
    return str(caught.value)


class TestHeaders:
    def test_reads_a_standard_sgml_statement(self) -> None:
        body = _trn("20240105", "-12.34", "A1") + _trn("20240106", "100", "A2")
        parsed, records = parse_bytes(_sgml(_bank(body, balance="87.66")).encode())
        assert parsed.format == FileFormat.OFX_SGML
        assert amounts(records) == [-1234, 10_000]
        assert [r.fitid for r in records] == ["A1", "A2"]
        assert {r.account_ref for r in records} == {"121/999"}
        assert parsed.balances == [StatementBalance("121/999", "USD", 8766, date(2024, 1, 31))]

    def test_reads_a_file_whose_header_is_only_data_and_encoding(self) -> None:
        text = _sgml(
            _bank(_trn("20240105", "-1.00", "A1")), header="DATA:OFXSGML\nENCODING:UTF-8\n"
        )
        _, records = parse_bytes(text.encode())
        assert amounts(records) == [-100]

    def test_reads_a_file_without_any_header(self) -> None:
        text = _sgml(_bank(_trn("20240105", "-1.00", "A1")), header="\r\n\r\n")
        parsed, records = parse_bytes(text.encode())
        assert parsed.format == FileFormat.OFX_SGML
        assert len(records) == 1

    def test_reads_ofx2_xml_with_closing_tags_and_cdata(self) -> None:
        text = (
            '<?xml version="1.0" encoding="us-ascii"?>\n'
            '<?OFX OFXHEADER="200" VERSION="211" SECURITY="NONE"?>\n'
            "<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>0</CODE><SEVERITY>INFO</SEVERITY></STATUS>"
            "</SONRS></SIGNONMSGSRSV1><CREDITCARDMSGSRSV1><CCSTMTTRNRS><TRNUID>1</TRNUID>"
            "<CCSTMTRS><CURDEF>AUD</CURDEF><CCACCTFROM><ACCTID>4111</ACCTID></CCACCTFROM>"
            "<BANKTRANLIST><STMTTRN><TRNTYPE>DEBIT</TRNTYPE><DTPOSTED>20131215</DTPOSTED>"
            "<TRNAMT>-16.85</TRNAMT><FITID>1</FITID><NAME><![CDATA[ALDI & CO]]></NAME>"
            "</STMTTRN></BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>"
        )
        parsed, records = parse_bytes(text.encode())
        assert parsed.format == FileFormat.OFX_XML
        assert (records[0].account_ref, records[0].currency) == ("4111", "AUD")
        assert records[0].description == "ALDI & CO"

    def test_names_qfx_from_intuit_markers(self) -> None:
        text = _sgml(_bank(_trn("20240105", "-1.00", "A1"))).replace(
            "<DTSERVER>20240101", "<DTSERVER>20240101<INTU.BID>00024"
        )
        parsed, _ = parse_bytes(text.encode())
        assert parsed.format == FileFormat.QFX

    def test_prefers_valid_utf8_over_a_header_that_says_1252(self) -> None:
        text = _sgml(_bank(_trn("20240105", "-1.00", "A1", name="Café Zoë")))
        _, records = parse_bytes(text.encode("utf-8"))
        assert records[0].description == "Café Zoë"

    def test_reads_cp1252_bytes_under_a_header_that_says_utf8(self) -> None:
        header = SGML_HEADER.replace("ENCODING:USASCII", "ENCODING:UTF-8")
        text = _sgml(_bank(_trn("20240105", "-1.00", "A1", name="Café Zoë")), header=header)
        parsed, records = parse_bytes(text.encode("cp1252"))
        assert records[0].description == "Café Zoë"
        assert parsed.details["encoding"] == "cp1252"


class TestCleanUp:
    def test_reads_lower_case_self_closed_and_empty_tags(self) -> None:
        text = (
            "<ofx><bankmsgsrsv1><stmttrnrs><stmtrs><curdef></curdef><bankacctfrom><bankid/>"
            "<acctid>777</acctid></bankacctfrom><banktranlist><stmttrn><dtposted>20240105"
            "</dtposted><trnamt>-2.50</trnamt><fitid/></stmttrn></banktranlist><ledgerbal>"
            "<balamt></balamt><dtasof/></ledgerbal></stmtrs></stmttrnrs></bankmsgsrsv1></ofx>"
        )
        parsed, records = parse_bytes(text.encode(), currency="EUR")
        assert [(r.account_ref, r.amount_minor, r.currency, r.fitid) for r in records] == [
            ("777", -250, "EUR", None)
        ]
        assert parsed.balances == []

    @pytest.mark.parametrize(
        "posted",
        [
            "20240101230000.000[-8:PST]",
            "20240101230000[-5:EST]",
            "20240101230000[-:EST]",
            "20240101120000[0:GMT]",
            "20240101093914:014",
            "20240101",
        ],
    )
    def test_takes_the_local_booking_date_as_written(self, posted: str) -> None:
        _, records = parse_bytes(_sgml(_bank(_trn(posted, "-1.00", "A1"))).encode())
        assert records[0].booked_on == date(2024, 1, 1)

    def test_reads_transactions_left_unclosed_and_after_their_list(self) -> None:
        body = (
            "<STMTTRN><DTPOSTED>20240105<TRNAMT>-1.00<FITID>A1\n"
            "<STMTTRN><DTPOSTED>20240106<TRNAMT>-2.00<FITID>A2</STMTTRN>\n"
            "</BANKTRANLIST><STMTTRN><DTPOSTED>20240107<TRNAMT>-3.00<FITID>A3</STMTTRN>"
        )
        _, records = parse_bytes(_sgml(_bank(body)).encode())
        assert [r.fitid for r in records] == ["A1", "A2", "A3"]
        assert amounts(records) == [-100, -200, -300]

    def test_numbers_transactions_by_line_with_mixed_line_endings(self) -> None:
        text = _sgml(_bank(_trn("20240105", "-1.00", "A1") + _trn("20240106", "-2.00", "A2")))
        text = text.replace("\n", "\r\n", 3).replace("\n\n", "\r\r")
        _, records = parse_bytes(text.encode())
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        expected = [number for number, line in enumerate(lines, 1) if "<STMTTRN>" in line]
        assert [r.line for r in records] == expected

    def test_reads_comments_and_a_reopened_status_code(self) -> None:
        text = _sgml(_bank(_trn("20240105", "-1.00", "A1"))).replace(
            "<STATUS><CODE>0<SEVERITY>INFO</STATUS><DTSERVER>",
            "<STATUS><!-- sign-on -->\n<CODE>0<CODE><SEVERITY>INFO</STATUS><DTSERVER>",
        )
        _, records = parse_bytes(text.encode())
        assert len(records) == 1

    def test_unescapes_entities_in_names(self) -> None:
        _, records = parse_bytes(
            _sgml(_bank(_trn("20240105", "-1.00", "A1", name="AT&amp;T"))).encode()
        )
        assert records[0].description == "AT&T"

    def test_rejects_markup_it_cannot_read(self) -> None:
        text = "<OFX><SIGNONMSGSRSV1></SIGNONMSGSRSV1>\nstray words\n</OFX>"
        assert _reject(text) == (
            "OFX file could not be read: text 'stray words' outside any element near line 1"
        )


class TestRowErrors:
    def test_reports_a_missing_booking_date_naming_the_fitid(self) -> None:
        body = "<STMTTRN><TRNAMT>-1.00<FITID>184997056</STMTTRN>\n" + _trn("", "2.00", "77")
        parsed, records = parse_bytes(_sgml(_bank(body)).encode())
        assert records == []
        assert parsed.errors == [
            RowError(13, "DTPOSTED", None, "transaction 184997056 has no DTPOSTED (booking date)"),
            RowError(14, "DTPOSTED", "", "transaction 77 has no DTPOSTED (booking date)"),
        ]

    def test_reports_a_currency_sign_in_the_amount(self) -> None:
        parsed, records = parse_bytes(_sgml(_bank(_trn("20240105", "$120", "F1"))).encode())
        assert records == []
        assert parsed.errors == [
            RowError(
                13,
                "TRNAMT",
                "$120",
                "not a number; OFX amounts are plain decimals like -12.34 (transaction F1)",
            )
        ]

    def test_reports_more_decimals_than_the_currency_has(self) -> None:
        parsed, records = parse_bytes(
            _sgml(_bank(_trn("20240105", "100.5", "J1"), currency="JPY")).encode()
        )
        assert records == []
        assert [e.reason for e in parsed.errors] == [
            "has more decimal places than JPY allows (0) (transaction J1)"
        ]

    def test_reads_kwd_amounts_with_three_decimals(self) -> None:
        _, records = parse_bytes(
            _sgml(_bank(_trn("20240105", "-1.250", "K1"), currency="KWD")).encode()
        )
        assert (records[0].amount_minor, records[0].currency) == (-1250, "KWD")

    def test_uses_the_transaction_currency_aggregate(self) -> None:
        body = (
            "<STMTTRN><DTPOSTED>20240105<TRNAMT>-3.65<FITID>C1"
            "<CURRENCY><CURRATE>1.06<CURSYM>USD</CURRENCY></STMTTRN>"
        )
        _, records = parse_bytes(_sgml(_bank(body, currency="CAD")).encode())
        assert (records[0].amount_minor, records[0].currency) == (-365, "USD")


class TestStatements:
    def test_reads_several_statements_with_their_accounts(self) -> None:
        card = (
            "<CREDITCARDMSGSRSV1><CCSTMTTRNRS><CCSTMTRS><CURDEF>USD<CCACCTFROM><ACCTID>4111"
            "</CCACCTFROM><BANKTRANLIST>" + _trn("20240110", "-9.99", "C1") + "</BANKTRANLIST>"
            "</CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1>"
        )
        text = _sgml(
            _bank(_trn("20240105", "-1.00", "A1")),
            _bank(_trn("20240106", "2.00", "B1"), account="888"),
        )
        text = text.replace("</BANKMSGSRSV1>", "</BANKMSGSRSV1>" + card)
        parsed, records = parse_bytes(text.encode())
        assert [(r.account_ref, r.amount_minor) for r in records] == [
            ("121/999", -100),
            ("121/888", 200),
            ("4111", -999),
        ]
        statements = parsed.details["statements"]
        assert isinstance(statements, list)
        assert [statement["kind"] for statement in statements] == ["bank", "bank", "card"]

    def test_rejects_a_failed_sign_on(self) -> None:
        text = _sgml(_bank("")).replace(
            "<CODE>0<SEVERITY>INFO</STATUS><DTSERVER>",
            "<CODE>15500<SEVERITY>ERROR<MESSAGE>Bad password</STATUS><DTSERVER>",
        )
        assert _reject(text) == "OFX sign-on failed: code 15500 (ERROR): Bad password"

    def test_rejects_a_statement_request_the_bank_failed(self) -> None:
        failed = "<STMTTRNRS><TRNUID>1<STATUS><CODE>2000<SEVERITY>ERROR</STATUS></STMTTRNRS>"
        assert _reject(_sgml(failed)) == (
            "OFX statement response failed: code 2000 (ERROR): the bank gave no message"
        )

    def test_rejects_a_sign_on_only_file(self) -> None:
        text = f"{SGML_HEADER}<OFX>{SIGNON}</OFX>"
        assert _reject(text) == "OFX file contains no bank or card statement (sign-on only)"

    def test_reads_investment_cash_lines(self) -> None:
        text = (
            f"{SGML_HEADER}<OFX>{SIGNON}<INVSTMTMSGSRSV1><INVSTMTTRNRS><INVSTMTRS><CURDEF>USD"
            "<INVACCTFROM><BROKERID>broker.com<ACCTID>X1</INVACCTFROM><INVTRANLIST>"
            "<DTSTART>20240101<DTEND>20240131<INVBANKTRAN>"
            + _trn("20240105", "-15.00", "I1")
            + "<SUBACCTFUND>CASH</INVBANKTRAN></INVTRANLIST></INVSTMTRS></INVSTMTTRNRS>"
            "</INVSTMTMSGSRSV1></OFX>"
        )
        _, records = parse_bytes(text.encode())
        assert [(r.account_ref, r.amount_minor) for r in records] == [("broker.com/X1", -1500)]

    def test_rejects_an_investment_statement_that_trades(self) -> None:
        text = (
            f"{SGML_HEADER}<OFX>{SIGNON}<INVSTMTMSGSRSV1><INVSTMTTRNRS><INVSTMTRS><CURDEF>USD"
            "<INVACCTFROM><BROKERID>broker.com<ACCTID>X1</INVACCTFROM><INVTRANLIST>"
            "<BUYSTOCK><INVBUY><INVTRAN><FITID>T1<DTTRADE>20240105</INVTRAN><TOTAL>-100"
            "<SUBACCTFUND>CASH</INVBUY><BUYTYPE>BUY</BUYSTOCK><INVBANKTRAN>"
            + _trn("20240105", "100.00", "I1")
            + "</INVBANKTRAN></INVTRANLIST></INVSTMTRS></INVSTMTTRNRS></INVSTMTMSGSRSV1></OFX>"
        )
        assert _reject(text) == (
            "investment statement: only its cash lines can be imported, but account "
            "broker.com/X1 also has 1 security transaction(s) (BUYSTOCK); importing the cash "
            "lines alone would leave its cash incomplete"
        )


class TestHostileFiles:
    def test_reads_each_cdata_section_of_a_one_line_file_on_its_own(self) -> None:
        body = (
            _trn("20240105", "-10.00", "A1", name="<![CDATA[Joe]]>")
            + _trn("20240106", "-99.00", "A2", name="Rent")
            + _trn("20240107", "-1.00", "A3", name="<![CDATA[Bob & <Co>]]>")
        ).replace("\n", "")
        parsed, records = parse_bytes(_sgml(_bank(body)).encode())
        assert [(r.fitid, r.amount_minor, r.description) for r in records] == [
            ("A1", -1000, "Joe"),
            ("A2", -9900, "Rent"),
            ("A3", -100, "Bob & <Co>"),
        ]
        assert parsed.errors == []

    def test_rejects_a_cdata_section_that_is_never_closed(self) -> None:
        text = _sgml(_bank(_trn("20240105", "-1.00", "A1", name="<![CDATA[Joe")))
        assert _reject(text) == (
            "OFX file could not be read: a CDATA section on line 13 is never closed"
        )

    def test_reads_a_name_of_200000_characters(self) -> None:
        # Backtracking clean-up patterns took a minute for 80,000; a linear one is instant.
        body = _trn("20240105", "-1.00", "A1", name="x" * 200_000).replace("</STMTTRN>", "")
        _, records = parse_bytes(_sgml(_bank(body + "</STMTTRN>")).encode())
        assert [len(r.description) for r in records] == [200_000]

    def test_reads_a_value_reopened_after_200000_characters_of_text(self) -> None:
        body = _trn("20240105", "-1.00", "A1", name="x " * 100_000 + "<NAME>")
        _, records = parse_bytes(_sgml(_bank(body)).encode())
        assert len(records) == 1

    def test_rejects_many_comment_openings_without_a_close_at_once(self) -> None:
        text = _sgml(_bank(_trn("20240105", "-1.00", "A1", name="<!-- a" * 50_000)))
        assert _reject(text) == "OFX file could not be read: a comment on line 13 is never closed"

    def test_reads_markup_openings_that_are_neither_comment_nor_cdata(self) -> None:
        text = _sgml(_bank(_trn("20240105", "-1.00", "A1", name="<!x" * 1000)))
        assert len(parse_bytes(text.encode())[1]) == 1

    def test_reports_a_trnamt_and_a_balamt_of_thousands_of_digits(self) -> None:
        body = _trn("20240105", "1" * 5000, "A1") + _trn("20240106", "-1.00", "A2")
        parsed, records = parse_bytes(_sgml(_bank(body, balance="9" * 5000)).encode())
        assert amounts(records) == [-100]
        too_large = "amount is too large: more than 15 digits before the decimal separator"
        assert [(e.column, e.reason) for e in parsed.errors] == [
            ("TRNAMT", f"{too_large} (transaction A1)"),
            ("BALAMT", f"{too_large} (LEDGERBAL of 121/999)"),
        ]
        assert parsed.balances == []

    def test_reports_a_posting_year_outside_1900_to_2100(self) -> None:
        body = _trn("00010105", "-1.00", "A1") + _trn("20240106", "-2.00", "A2")
        parsed, records = parse_bytes(_sgml(_bank(body)).encode())
        assert amounts(records) == [-200]
        assert [(e.column, e.reason) for e in parsed.errors] == [
            ("DTPOSTED", "year 0001 is outside 1900-2100; not a booking date (transaction A1)")
        ]

    def test_reports_amounts_and_dates_in_other_digits(self) -> None:
        body = _trn("٢٠٢٤٠١٠٥", "-1.00", "A1") + _trn("20240106", "-١.٠٠", "A2")
        parsed, records = parse_bytes(_sgml(_bank(body)).encode())
        assert records == []
        assert [e.column for e in parsed.errors] == ["DTPOSTED", "TRNAMT"]
        assert all("digits other than 0-9" in e.reason for e in parsed.errors)

    def test_lists_at_most_ten_unknown_message_sets_in_a_rejection(self) -> None:
        sets = "".join(f"<X{i:04d}><A>1</X{i:04d}>" for i in range(500))
        message = _reject(f"{SGML_HEADER}<OFX>{SIGNON}{sets}</OFX>")
        assert message.endswith("X0006, X0007 and 492 more)")
        assert len(message) < 300

    def test_rejects_a_file_over_the_size_limit_before_reading_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("shared.importers.OFX_MAX_BYTES", 1000)
        text = _sgml(_bank(_trn("20240105", "-1.00", "A1", name="x" * 2000)))
        size = len(text.encode())
        assert _reject(text) == (
            f"OFX file is {size:,} bytes; OFX files over 1,000 bytes are not read "
            "(everything but their transactions is held in memory)"
        )
