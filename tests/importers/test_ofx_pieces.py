"""OFX files are read a piece at a time: what a file yields never depends on where it was cut."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import pytest

from shared.domain.imports import RowError, StatementBalance
from shared.importers import UnsupportedFile, ofx, parse_file
from tests.importers.corpus_expectations import CORPUS, EXPECTED
from tests.importers.helpers import parse_bytes
from tests.importers.test_ofx import SGML_HEADER, SIGNON, _bank, _sgml, _trn

OFX_CORPUS = sorted(key for key in EXPECTED if key.startswith("ofx/"))


@contextmanager
def _pieces_of(
    monkeypatch: pytest.MonkeyPatch, read_bytes: int, piece_chars: int
) -> Iterator[None]:
    """Read ``read_bytes`` at a time and cut a piece wherever one may end past ``piece_chars``."""
    with monkeypatch.context() as patch:
        patch.setattr(ofx, "OFX_READ_BYTES", read_bytes)
        patch.setattr(ofx, "OFX_PIECE_CHARS", piece_chars)
        yield


def _outcome(data: bytes, currency: str = "USD") -> object:
    """Everything a parse gives: format, records, row errors, balances and details; or why not."""
    try:
        parsed, records = parse_bytes(data, currency=currency, name="statement.ofx")
    except UnsupportedFile as exc:
        return str(exc)
    return parsed.format, records, parsed.errors, parsed.balances, parsed.details


def _split(text: str, read_bytes: int = 5, piece_chars: int = 1) -> list[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ofx, "OFX_READ_BYTES", read_bytes)
        patch.setattr(ofx, "OFX_PIECE_CHARS", piece_chars)
        return list(ofx._pieces(io.BytesIO(text.encode()), "utf-8"))


@pytest.mark.parametrize("key", OFX_CORPUS)
def test_reads_every_corpus_file_the_same_in_the_smallest_pieces(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (CORPUS / key).read_bytes()
    currency = EXPECTED[key].default_currency
    whole = _outcome(data, currency)
    with _pieces_of(monkeypatch, 3, 1):
        assert _outcome(data, currency) == whole


def test_cuts_pieces_only_after_an_end_tag_and_loses_nothing() -> None:
    text = _sgml(_bank(_trn("20240105", "-1.00", "A1") + _trn("20240106", "-2.00", "A2")))
    pieces = _split(text)
    assert len(pieces) > 10
    assert "".join(pieces) == text
    assert all(piece.rstrip().endswith(">") for piece in pieces)
    assert all("</" in piece[piece.rstrip().rfind("<") :] for piece in pieces[:-1])
    # A transaction's data elements are never closed in SGML: each comes whole in one piece.
    assert sum(piece.count("<STMTTRN>") for piece in pieces) == 2
    assert all("<TRNAMT>" not in piece or "<DTPOSTED>" in piece for piece in pieces)


def test_unwraps_comments_and_cdata_cut_anywhere_between_reads() -> None:
    text = _sgml(
        _bank(_trn("20240105", "-1.00", "A1", name="<![CDATA[Bob & <Co>]]><!-- a\nb -->"))
    )
    for read_bytes in range(1, 14):
        assert "".join(_split(text, read_bytes)) == "".join(_split(text, 1 << 20, 1 << 20))


@pytest.mark.parametrize("read_bytes", [1, 2, 3, 5, 8, 13])
def test_reads_transactions_split_across_reads_with_their_lines(
    read_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two-byte and three-byte characters, CRLF line ends, a comment and CDATA sections, so
    # that reads split characters, line breaks and sections; and an empty NAME left open,
    # which only the tag after it shows to be empty.
    body = (
        _trn("20240105", "-1.00", "A1", name="Café<!-- seen\r\n -->")
        + _trn("20240106", "-2.50", "A2", name="<![CDATA[5 € & more]]>")
        + _trn("20240107", "3.00", "A3", name="\n<MEMO>Zoë")
    )
    data = _sgml(_bank(body, balance="-0.50")).replace("\n", "\r\n").encode()
    whole = _outcome(data)
    with _pieces_of(monkeypatch, read_bytes, 1):
        _, records = parse_bytes(data, name="statement.ofx")
        assert _outcome(data) == whole
    assert [(r.line, r.amount_minor, r.description) for r in records] == [
        (13, -100, "Café"),
        (16, -250, "5 € & more"),
        (17, 300, "Zoë"),
    ]


def test_reads_two_statements_and_their_balances_cut_between_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = _sgml(
        _bank(_trn("20240105", "-1.00", "A1"), balance="10.00"),
        _bank(_trn("20240106", "2.00", "B1"), currency="EUR", account="888", balance="20.00"),
    )
    assert any(piece.endswith("</STMTTRNRS>") for piece in _split(text))
    with _pieces_of(monkeypatch, 4, 1):
        parsed, records = parse_bytes(text.encode(), name="statement.ofx")
    assert [(r.account_ref, r.currency, r.amount_minor) for r in records] == [
        ("121/999", "USD", -100),
        ("121/888", "EUR", 200),
    ]
    assert parsed.balances == [
        StatementBalance("121/999", "USD", 1000, date(2024, 1, 31)),
        StatementBalance("121/888", "EUR", 2000, date(2024, 1, 31)),
    ]


def test_holds_the_transactions_of_a_statement_until_its_account_and_currency_are_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No CURDEF at all, and the account after the transaction list: only the statement's
    # end says which account and currency its transactions belong to.
    statement = (
        "<STMTTRNRS><TRNUID>1<STMTRS><BANKTRANLIST>"
        + _trn("20240105", "-1.00", "A1")
        + _trn("20240106", "-2.00", "A2")
        + "</BANKTRANLIST><BANKACCTFROM><BANKID>7<ACCTID>42</BANKACCTFROM>"
        "</STMTRS></STMTTRNRS>"
    )
    text = _sgml(statement)
    with _pieces_of(monkeypatch, 4, 1):
        _, records = parse_bytes(text.encode(), currency="CHF", name="statement.ofx")
    assert [(r.account_ref, r.currency, r.amount_minor) for r in records] == [
        ("7/42", "CHF", -100),
        ("7/42", "CHF", -200),
    ]


def test_yields_the_first_records_before_the_file_is_read_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = "".join(_trn("20240105", "-1.00", f"A{n}") for n in range(3000))
    stream = io.BytesIO(_sgml(_bank(body)).encode())
    size = len(stream.getvalue())
    with _pieces_of(monkeypatch, 4096, 4096):
        parsed = parse_file(stream, name="statement.ofx", default_currency="USD")
        first = next(parsed.records)
        assert (first.fitid, stream.tell() < size // 4) == ("A0", True)
        assert sum(1 for _ in parsed.records) == 2999


def test_a_bad_transaction_late_in_the_file_is_reported_with_its_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = "".join(_trn("20240105", "-1.00", f"A{n}") for n in range(2000))
    body += _trn("2024013", "-1.00", "LATE")
    with _pieces_of(monkeypatch, 1000, 1000):
        parsed, records = parse_bytes(_sgml(_bank(body)).encode(), name="statement.ofx")
    assert len(records) == 2000
    assert parsed.errors == [
        RowError(2013, "DTPOSTED", "2024013", "not a date; expected YYYYMMDD (transaction LATE)")
    ]


def test_a_failed_statement_response_after_a_good_statement_rejects_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failed = "<STMTTRNRS><TRNUID>2<STATUS><CODE>2000<SEVERITY>ERROR</STATUS></STMTTRNRS>"
    text = _sgml(_bank(_trn("20240105", "-1.00", "A1")), failed)
    with _pieces_of(monkeypatch, 4, 1), pytest.raises(UnsupportedFile) as caught:
        parse_bytes(text.encode(), name="statement.ofx")
    assert str(caught.value) == (
        "OFX statement response failed: code 2000 (ERROR): the bank gave no message"
    )


def test_a_comment_left_open_further_on_is_reported_before_broken_markup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The comment is found first when the file is cleaned whole; so it is in pieces too.
    filler = "".join(_trn("20240105", "-1.00", f"A{n}") for n in range(50))
    text = (
        f"{SGML_HEADER}<OFX>{SIGNON}\nstray words\n<BANKMSGSRSV1>"
        + _bank(filler + "<!-- never closed")
        + "</BANKMSGSRSV1></OFX>\n"
    )
    expected = "OFX file could not be read: a comment on line 64 is never closed"
    assert _outcome(text.encode()) == expected
    with _pieces_of(monkeypatch, 64, 64):
        assert _outcome(text.encode()) == expected
