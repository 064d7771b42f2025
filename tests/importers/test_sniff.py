"""Format, encoding and delimiter detection, and whole-file rejections before any row is read."""

from __future__ import annotations

import codecs

import pytest

from shared.domain.imports import FileFormat, MappingProfile
from shared.errors import ValidationError
from shared.importers import UnsupportedFile
from shared.importers.sniff import looks_like_ofx
from tests.importers.helpers import amounts, parse_bytes

UMLAUT_CSV = (
    "Buchungstag;Empfänger;Betrag\n01.02.2024;Müller GmbH;-12,50\n02.02.2024;Bäckerei;-3,20\n"
)


def _rejection(
    data: bytes, *, name: str = "upload.csv", profile: MappingProfile | None = None
) -> str:
    with pytest.raises(UnsupportedFile) as caught:
        parse_bytes(data, name=name, profile=profile)
    return str(caught.value)


class TestWholeFileRejections:
    def test_rejects_an_empty_file(self) -> None:
        assert _rejection(b"") == "file is empty (0 bytes)"

    def test_rejects_a_file_of_blank_lines(self) -> None:
        assert _rejection(b"\r\n \n\t\n") == "file is empty (only blank lines or spaces)"

    def test_rejects_a_png_image(self) -> None:
        data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
        assert _rejection(data, name="statement.csv") == (
            "not a bank CSV, OFX/QFX or journal CSV file: it is a PNG image"
        )

    def test_rejects_an_excel_workbook(self) -> None:
        assert _rejection(b"PK\x03\x04" + bytes(200)) == (
            "not a bank CSV, OFX/QFX or journal CSV file: it is a ZIP archive (an Excel .xlsx "
            "workbook is one)"
        )

    def test_rejects_binary_garbage(self) -> None:
        data = bytes((i * 7919) % 256 for i in range(2048))
        assert (
            _rejection(data)
            == "not a bank CSV, OFX/QFX or journal CSV file: it is binary data, not text"
        )

    def test_rejects_html(self) -> None:
        data = b"<!DOCTYPE html><html><body>Session expired</body></html>"
        assert _rejection(data) == (
            "not a bank CSV, OFX/QFX or journal CSV file: "
            "it is XML or HTML without an <OFX> element"
        )

    def test_rejects_plain_prose(self) -> None:
        assert _rejection(b"Dear customer\nyour statement is attached\n") == (
            "not a bank CSV, OFX/QFX or journal CSV file: "
            "no delimited columns found (tried , ; tab |)"
        )

    def test_raises_a_validation_error_subclass(self) -> None:
        with pytest.raises(ValidationError):
            parse_bytes(b"")

    def test_rejects_a_bad_default_currency_as_a_validation_error(self) -> None:
        with pytest.raises(ValidationError, match="unknown currency code 'EURO'"):
            parse_bytes(b"Date,Description,Amount\n2024-01-02,A,1.00\n", currency="EURO")

    def test_names_the_format_from_content_not_from_the_file_name(self) -> None:
        parsed, _ = parse_bytes(b"Date,Description,Amount\n2024-01-02,A,1.00\n", name="x.ofx")
        assert parsed.format == FileFormat.BANK_CSV


class TestEncodings:
    def test_reads_latin1_bytes_with_umlauts(self) -> None:
        parsed, records = parse_bytes(UMLAUT_CSV.encode("latin-1"))
        assert [r.description for r in records] == ["Müller GmbH", "Bäckerei"]
        assert (parsed.details["encoding"], parsed.details["encoding_source"]) == (
            "cp1252",
            "not UTF-8; Western default",
        )

    def test_reads_utf16_with_a_byte_order_mark(self) -> None:
        parsed, records = parse_bytes(UMLAUT_CSV.encode("utf-16"))
        assert [r.description for r in records] == ["Müller GmbH", "Bäckerei"]
        assert amounts(records) == [-1250, -320]
        assert parsed.details["encoding"] == "utf-16"

    def test_reads_utf8_with_a_byte_order_mark(self) -> None:
        parsed, records = parse_bytes(codecs.BOM_UTF8 + UMLAUT_CSV.encode())
        assert records[0].description == "Müller GmbH"
        assert parsed.details["header"] == ["Buchungstag", "Empfänger", "Betrag"]
        assert parsed.details["encoding"] == "utf-8 (with BOM)"

    def test_reads_utf16_without_a_byte_order_mark(self) -> None:
        _, records = parse_bytes(UMLAUT_CSV.encode("utf-16-le"))
        assert records[1].description == "Bäckerei"

    def test_prefers_utf8_when_every_byte_is_valid_utf8(self) -> None:
        parsed, records = parse_bytes(UMLAUT_CSV.encode())
        assert records[0].description == "Müller GmbH"
        assert parsed.details["encoding"] == "utf-8"

    def test_checks_utf8_to_the_end_of_a_large_file(self) -> None:
        rows = "".join(f"01.02.2024;Row {i};-1,00\n" for i in range(20_000))
        data = f"Buchungstag;Name;Betrag\n{rows}".encode() + "03.02.2024;Müller;-2,00\n".encode(
            "latin-1"
        )
        parsed, records = parse_bytes(data)
        assert parsed.details["encoding"] == "cp1252"
        assert records[-1].description == "Müller"

    def test_uses_the_profile_encoding(self) -> None:
        data = "Date;Payee;Amount\n2024-01-02;Łódź Sp. z o.o.;-1.00\n".encode("cp1250")
        _, records = parse_bytes(data, profile=MappingProfile(encoding="cp1250"))
        assert records[0].description == "Łódź Sp. z o.o."

    def test_rejects_a_file_the_profile_encoding_cannot_decode(self) -> None:
        data = "Date;Payee;Amount\n2024-01-02;Müller;-1.00\n".encode("latin-1")
        assert _rejection(data, profile=MappingProfile(encoding="utf-8")) == (
            "file is not utf-8 as the mapping profile says: byte 30 does not decode"
        )

    def test_reads_cyrillic_cp1251(self) -> None:
        data = "Дата;Описание;Сумма\n01.02.2024;Оплата услуг связи;-150,00\n".encode("cp1251")
        profile = MappingProfile(columns={"date": 0, "description": 1, "amount": 2})
        parsed, records = parse_bytes(data, currency="RUB", profile=profile)
        assert parsed.details["encoding"] == "cp1251"
        assert records[0].description == "Оплата услуг связи"

    def test_falls_back_to_latin1_for_bytes_cp1252_leaves_undefined(self) -> None:
        data = b"Date,Payee,Amount\n2024-01-02,Caf\xe9 \x81,-1.00\n"
        parsed, records = parse_bytes(data)
        assert parsed.details["encoding"] == "latin-1"
        assert records[0].description == "Café \x81"

    def test_rejects_a_byte_order_mark_that_lies(self) -> None:
        data = codecs.BOM_UTF8 + b"Date,Payee,Amount\n2024-01-02,Caf\xe9,-1.00\n"
        assert _rejection(data) == (
            "file starts with a UTF-8 byte-order mark but is not UTF-8: byte 35 does not decode"
        )


class TestDelimiters:
    @pytest.mark.parametrize(
        ("delimiter", "shown"), [(",", ","), (";", ";"), ("\t", "tab"), ("|", "|")]
    )
    def test_sniffs_the_delimiter(self, delimiter: str, shown: str) -> None:
        lines = ["Date", "Description", "Amount"], ["2024-01-02", "Coffee, to go; large", "-3.50"]
        text = "\n".join(delimiter.join(f'"{cell}"' for cell in line) for line in lines)
        parsed, records = parse_bytes(text.encode())
        assert parsed.details["delimiter"] == shown
        assert records[0].description == "Coffee, to go; large"

    def test_uses_the_profile_delimiter(self) -> None:
        data = b"Date;Description;Amount\n2024-01-02;a,b,c,d,e;-3.50\n"
        parsed, _ = parse_bytes(data, profile=MappingProfile(delimiter=";"))
        assert parsed.details["delimiter"] == ";"


class TestOfxDetection:
    def test_detects_ofx_without_any_header(self) -> None:
        data = (
            b"\r\n"
            b"\r\n"
            b"<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>0</STATUS></SONRS></SIGNONMSGSRSV1></OFX>"
        )
        assert _rejection(data, name="x.csv") == (
            "OFX file contains no bank or card statement (sign-on only)"
        )

    def test_does_not_take_a_csv_mentioning_ofx_for_ofx(self) -> None:
        data = b"Date,Description,Amount\n2024-01-02,<OFX> export fee,-1.00\n"
        parsed, _ = parse_bytes(data)
        assert parsed.format == FileFormat.BANK_CSV


class TestHostileFiles:
    def test_rejects_a_nul_byte_after_the_first_kilobytes(self) -> None:
        data = b"Date,Description,Amount\n" + b"2024-01-05,Shop,-1.00\n" * 400
        message = _rejection(data + b"2024-01-06,Sh\x00p,-2.00\n")
        assert (
            message == f"file contains a NUL byte at byte {len(data) + 13}; it is not a text file"
        )

    def test_rejects_a_nul_character_in_utf16(self) -> None:
        text = (
            "Date,Description,Amount\n"
            + "2024-01-05,Shop,-1.00\n" * 200
            + "2024-01-06,\x00,-2.00\n"
        )
        message = _rejection(text.encode("utf-16"))
        assert message.startswith("file contains a NUL byte at byte ")

    def test_keeps_utf16_text_whose_bytes_hold_zeros(self) -> None:
        text = "Date,Description,Amount\n" + "2024-01-05,Ā Shop,-1.00\n" * 200
        _, records = parse_bytes(text.encode("utf-16"))
        assert len(records) == 200

    def test_names_a_line_too_long_to_read_after_a_good_row(self) -> None:
        data = b"Date,Description,Amount\n2024-01-05,Shop,-1.00\n2024-01-06," + b"y" * 300_000
        parsed, records = parse_bytes(data + b",2.00\n")
        assert amounts(records) == [-100]
        assert [(error.line, error.reason) for error in parsed.errors] == [
            (
                3,
                "the file cannot be read as CSV from this line on "
                "(the line is longer than 65,536 characters)",
            )
        ]

    def test_rejects_a_file_whose_header_is_beyond_a_line_too_long(self) -> None:
        message = _rejection(
            b"x" * 100_000 + b"\nDate,Description,Amount\n2024-01-05,Shop,-1.00\n"
        )
        assert message == (
            "not a bank CSV, OFX/QFX or journal CSV file: line 1 cannot be read: the line is "
            "longer than 65,536 characters"
        )

    def test_rejects_a_header_of_more_than_a_thousand_cells(self) -> None:
        header = "Date,Description,Amount," + ",".join(f"c{i}" for i in range(1000))
        message = _rejection(f"{header}\n2024-01-05,Shop,-1.00\n".encode())
        assert message == "the header on line 1 has 1003 cells; at most 1000 are read"

    def test_lists_at_most_thirty_header_cells_in_a_reason(self) -> None:
        header = "Date,Description," + ",".join(f"c{i}" for i in range(500))
        message = _rejection(f"{header}\n2024-01-05,Shop,1\n".encode())
        assert "c27 and 472 more) has no column for the amount" in message

    def test_tells_ofx_from_a_long_header_like_run_at_once(self) -> None:
        # Each of these took minutes with backtracking patterns; the scan is linear.
        assert not looks_like_ofx("<?" * 100_000 + "<OFX>")
        assert not looks_like_ofx("A" * 200_000 + "<OFX>")
        assert looks_like_ofx("\n" * 200_000 + "<?xml version='1.0'?><!-- c --><OFX>")
