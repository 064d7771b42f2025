"""Ledger import parsing: bank CSV, OFX/QFX and journal CSV files to records, from content alone.

``parse_file`` is the one entry point; it never touches a database or the network.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from shared.domain.imports import BankTxn, FileFormat, MappingProfile, ParsedFile
from shared.errors import ValidationError
from shared.importers.bank_csv import BankRows, describe_layout, settle_layout
from shared.importers.dialect import settle_amounts, settle_currency, settle_dates
from shared.importers.journal_csv import JournalRows
from shared.importers.ofx import OFX_MAX_BYTES, OfxRows, declared_encoding
from shared.importers.report import MAX_STORED_ERRORS, ErrorLog
from shared.importers.sniff import (
    NOT_RECOGNISED,
    CsvPlan,
    looks_like_markup,
    looks_like_ofx,
    plan_csv,
)
from shared.importers.text import (
    SNIFF_BYTES,
    Encoding,
    FileRejected,
    decode_head,
    describe_binary,
    detect_encoding,
    require_no_nul,
)

__all__ = ["MAX_STORED_ERRORS", "UnsupportedFile", "parse_file"]


class UnsupportedFile(ValidationError):
    """The file as a whole cannot be imported.

    ``str(error)`` is a stable sentence naming the reason (tests and reports match on it);
    ``file_name`` is the name the file was given, for messages around it.
    """

    def __init__(self, reason: str, *, file_name: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.file_name = file_name


def parse_file(
    stream: BinaryIO,
    *,
    name: str,
    default_currency: str,
    profile: MappingProfile | None = None,
) -> ParsedFile:
    """Detect a ledger file's format from its content and start reading its records.

    Detection, dialect, header and whole-file checks happen here; the records are then read
    lazily from ``stream``, which must stay open until they are consumed. CSV files are
    streamed row by row and OFX files a piece at a time (memory does not grow with the
    number of transactions). Row problems do not raise: they fill ``ParsedFile.errors``
    (first 1000 kept, all counted in ``details["error_count"]``) while the records are read,
    and the row is left out. What only the whole of an OFX file shows (a failed sign-on, no
    statement, an investment statement that trades, broken markup further on) raises
    ``UnsupportedFile`` from ``records`` once the last record has been read.

    Args:
        stream: a seekable binary file; it may be read more than once.
        name: the file's name, only for messages; it never decides the format.
        default_currency: ISO 4217 code for amounts whose currency the file and the profile
            leave open.
        profile: the client's mapping profile; whatever it sets wins over detection.

    Returns:
        The parsed file: its format, the lazy records, and what was detected in ``details``.

    Raises:
        UnsupportedFile: the whole file is rejected (empty, binary, a NUL byte anywhere, not
            a known format, unmappable header, ambiguous dates or decimal separator, OFX
            without a statement or over ``OFX_MAX_BYTES``...).
        ValidationError: ``default_currency`` is not an ISO 4217 code.
    """
    try:
        return _parse(stream, name, default_currency, profile)
    except FileRejected as exc:
        raise UnsupportedFile(str(exc), file_name=name) from None


def _parse(
    stream: BinaryIO, name: str, default_currency: str, profile: MappingProfile | None
) -> ParsedFile:
    # Refuse what is not text at all before guessing encodings.
    stream.seek(0)
    head = stream.read(SNIFF_BYTES)
    if not head:
        raise FileRejected("file is empty (0 bytes)")
    binary = describe_binary(head)
    if binary is not None:
        raise FileRejected(f"{NOT_RECOGNISED}: it is {binary}")

    # Decode the start of the file; the whole file is checked when UTF-8 is in question.
    complete = len(head) < SNIFF_BYTES
    forced = profile.encoding if profile else None
    encoding = detect_encoding(stream, head, declared=declared_encoding(head), forced=forced)
    require_no_nul(stream, encoding)
    text = decode_head(head, encoding, complete=complete)
    if not text.strip():
        raise FileRejected("file is empty (only blank lines or spaces)")
    details: dict[str, object] = {
        "file_name": name,
        "encoding": encoding.label,
        "encoding_source": encoding.source,
    }

    # The format follows from the content: OFX markup, other markup, or delimited text.
    if looks_like_ofx(text):
        return _parse_ofx(stream, encoding, default_currency, details, name)
    if looks_like_markup(text):
        raise FileRejected(f"{NOT_RECOGNISED}: it is XML or HTML without an <OFX> element")
    plan = plan_csv(text, profile, complete=complete)
    details.update(
        delimiter="tab" if plan.delimiter == "\t" else plan.delimiter,
        header_line=plan.header_line,
        header=[cell.strip() for cell in plan.header],
    )
    if plan.kind == "journal":
        return _parse_journal(stream, encoding, plan, profile, default_currency, details)
    return _parse_bank(stream, encoding, plan, profile, default_currency, details)


def _parse_ofx(
    stream: BinaryIO,
    encoding: Encoding,
    default_currency: str,
    details: dict[str, object],
    name: str,
) -> ParsedFile:
    size = stream.seek(0, io.SEEK_END)
    if size > OFX_MAX_BYTES:
        raise FileRejected(
            f"OFX file is {size:,} bytes; OFX files over {OFX_MAX_BYTES:,} bytes are not read "
            "(everything but their transactions is held in memory)"
        )
    parsed = ParsedFile(FileFormat.OFX_SGML, iter(()), details=details)
    log = ErrorLog(parsed.errors, parsed.details)
    rows = OfxRows(stream, encoding.codec, parsed, log, default_currency)
    parsed.records = _rejecting(rows, name)
    return parsed


def _rejecting(records: Iterable[BankTxn], name: str) -> Iterator[BankTxn]:
    """``records``, with a whole-file rejection found while reading them raised typed."""
    try:
        yield from records
    except FileRejected as exc:
        raise UnsupportedFile(str(exc), file_name=name) from None


def _parse_bank(
    stream: BinaryIO,
    encoding: Encoding,
    plan: CsvPlan,
    profile: MappingProfile | None,
    default_currency: str,
    details: dict[str, object],
) -> ParsedFile:
    layout = settle_layout(plan, stream, encoding, profile, default_currency)
    details.update(describe_layout(layout))
    parsed = ParsedFile(FileFormat.BANK_CSV, iter(()), details=details)
    log = ErrorLog(parsed.errors, parsed.details)
    rows = BankRows(stream, encoding, plan, layout, log, parsed.balances, parsed.details)
    parsed.records = iter(rows)
    return parsed


def _parse_journal(
    stream: BinaryIO,
    encoding: Encoding,
    plan: CsvPlan,
    profile: MappingProfile | None,
    default_currency: str,
    details: dict[str, object],
) -> ParsedFile:
    currency = settle_currency(plan, profile, default_currency)
    amounts, decimal_source = settle_amounts(plan, profile, currency.code, stream, encoding)
    dates = settle_dates(plan, stream, encoding, profile)
    details.update(
        columns=plan.columns.described(),
        date_format=dates.format.label,
        date_order=dates.format.order,
        decimal_separator=amounts.decimal,
        decimal_separator_source=decimal_source,
        currency=currency.code,
        currency_source=currency.source,
        amount_layout="split" if plan.columns.single.keys() >= {"debit", "credit"} else "signed",
    )
    parsed = ParsedFile(FileFormat.JOURNAL_CSV, iter(()), details=details)
    log = ErrorLog(parsed.errors, parsed.details)
    rows = JournalRows(stream, encoding, plan, dates, amounts, currency, log, parsed.details)
    parsed.records = iter(rows)
    return parsed
