"""Number, date and currency dialect of a CSV file, settled once before its rows are read.

Shared by bank and journal CSVs. The sample decides; the mapping profile overrides; a date
order the sample leaves open is looked for in the whole file before the file is rejected.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from shared.domain.imports import MappingProfile
from shared.domain.money import exponent, normalise_currency
from shared.errors import ValidationError
from shared.importers.amounts import AmountReader, ambiguous_separator, decimal_vote
from shared.importers.columns import ColumnMap
from shared.importers.dates import (
    ORDERS,
    DateFormat,
    DateReader,
    OrderEvidence,
    detect_date_format,
    numeric_format,
)
from shared.importers.report import clipped
from shared.importers.sniff import MAX_FIELDS_PER_ROW, CsvPlan
from shared.importers.text import Encoding, FileRejected, LineTooLong, capped_lines, text_lines

if TYPE_CHECKING:
    from _csv import Reader

MONEY_ROLES = ("amount", "debit", "credit", "balance")

UNREADABLE = (csv.Error, LineTooLong)
"""What a row loop catches when the rest of the file cannot be read as CSV."""


@dataclass(frozen=True, slots=True)
class FileCurrency:
    """The currency rows fall back to, and whether the file or profile stated it.

    A stated currency is checked against signs and codes inside amounts; the default one
    gives way to them (``-123,45 €`` makes the row EUR).
    """

    code: str
    stated: bool
    source: str


@contextmanager
def data_rows(stream: BinaryIO, encoding: Encoding, plan: CsvPlan) -> Iterator[Reader]:
    """A csv reader over the whole file, positioned after the preamble and header rows.

    Reading raises ``LineTooLong`` at a line longer than ``MAX_LINE_CHARS`` (and ``csv.Error``
    where the csv module gives up); ``UNREADABLE`` names both.
    """
    # Limitation: a quoted field may hold line breaks, so one row can span many lines of up to
    # MAX_LINE_CHARS each and be held whole before its width is checked; only the csv
    # module's field size limit (128 KiB by default) bounds a single such field.
    with text_lines(stream, encoding) as handle:
        reader = csv.reader(capped_lines(handle), delimiter=plan.delimiter)
        for _ in range(plan.skip_rows):
            if next(reader, None) is None:
                break
        yield reader


def unreadable_csv(error: Exception) -> str:
    """The row-error reason when the csv module gives up (an unclosed quote, a huge field)."""
    return f"the file cannot be read as CSV from this line on ({error})"


def unreadable_line(error: Exception, reader: Reader, row_start: int) -> int:
    """The line a ``UNREADABLE`` error is on: the long line itself, or the row's first line."""
    return reader.line_num + 1 if isinstance(error, LineTooLong) else row_start


def row_width(plan: CsvPlan) -> int:
    """Cells a row may fill: the header's, or for a headerless file the widest sample row's."""
    if plan.header:
        return len(plan.header)
    widths = [len(_trimmed(row.cells)) for row in plan.sample]
    return min(max(widths, default=0) or MAX_FIELDS_PER_ROW, MAX_FIELDS_PER_ROW)


def overflow_reason(row: list[str], width: int, *, headed: bool) -> str | None:
    """Why a row holds more non-empty cells than ``width``, or ``None`` when it does not.

    Trailing empty cells are fine (many exports end rows with extra delimiters). A filled
    cell past the width usually means an unquoted value held the delimiter, so that
    ``-1,234.00`` became the two cells ``-1`` and ``234.00``: reading on would shift values.
    """
    cells = len(_trimmed(row))
    if cells <= width:
        return None
    where = "the header has" if headed else "the widest of the first rows has"
    return (
        f"row has {cells} cells where {where} {width}; a value holding the delimiter "
        "must be quoted"
    )


def settle_amounts(
    plan: CsvPlan,
    profile: MappingProfile | None,
    currency: str,
    stream: BinaryIO,
    encoding: Encoding,
) -> tuple[AmountReader, str]:
    """Choose the decimal separator; returns the reader and where the choice came from.

    The profile decides, else the sample's amounts, else the first amount further down the
    file that shows it. When no amount shows it, ``.`` is taken, unless some amount reads
    both ways (``1.000``: one thousand, or one with three decimals): then guessing could
    scale money a thousandfold, and the file is rejected instead.

    Args:
        plan: the sniffed file.
        profile: the client's mapping profile, if any.
        currency: the file's currency; its decimal places tell how ``12,500`` is meant.
        stream: the file, read again when the sample does not settle the separator.
        encoding: how to read ``stream``.

    Raises:
        FileRejected: the profile names a separator other than ``.`` or ``,``, or nothing
            settles the separator and an amount is ambiguous.
    """
    forced = profile.decimal_separator if profile else None
    if forced is not None:
        if forced not in {".", ","}:
            raise FileRejected(
                f'the mapping profile sets decimal_separator to "{forced}"; use "." or ","'
            )
        return AmountReader(forced), "mapping profile"
    money = _DecimalEvidence(plan, currency)
    for row in plan.sample:
        money.add(row.cells, row.line)
    found = money.majority()
    if found is None:
        money = _DecimalEvidence(plan, currency)
        found = _decimal_from_whole_file(money, plan, stream, encoding)
    if found is not None:
        return AmountReader(found), "detected"
    if money.ambiguous is not None:
        value, line = money.ambiguous
        raise FileRejected(_ambiguous_decimal(value, line))
    return AmountReader("."), "default"


def settle_dates(
    plan: CsvPlan, stream: BinaryIO, encoding: Encoding, profile: MappingProfile | None
) -> DateReader:
    """Detect the date column's format, looking at the whole file if the order stays open.

    Raises:
        FileRejected: no date recognised in the sample, an unknown profile order, or dates
            that read as both day-first and month-first all through the file.
    """
    order = profile.date_order.upper() if profile and profile.date_order else None
    if order is not None and order not in ORDERS:
        raise FileRejected(
            f'the mapping profile sets date_order to "{order}"; use one of {", ".join(ORDERS)}'
        )
    index = plan.columns.single["date"]
    values = sample_values(plan, plan.columns, ("date",))
    found = detect_date_format(values, order)
    name = plan.columns.name(index)
    if found is None:
        shown = ", ".join(repr(clipped(value)) for value in values[:3]) or "none"
        raise FileRejected(f'no dates recognised in column "{name}" (first values: {shown})')
    if found.kind == "numeric" and not found.order:
        found = _order_from_whole_file(found, plan, stream, encoding, index, values)
    return DateReader(found)


def settle_currency(
    plan: CsvPlan, profile: MappingProfile | None, default_currency: str
) -> FileCurrency:
    """The currency for rows without a currency cell: profile, then header, then default.

    Raises:
        ValidationError: ``default_currency`` is not an ISO 4217 code.
        FileRejected: the profile's currency is not one.
    """
    default = normalise_currency(default_currency)
    if profile is not None and profile.currency:
        try:
            return FileCurrency(normalise_currency(profile.currency), True, "mapping profile")
        except ValidationError:
            raise FileRejected(
                f'the mapping profile sets currency to "{profile.currency}", '
                "which is not an ISO 4217 code"
            ) from None
    noted = _currency_from_header(plan.columns)
    if noted is not None:
        return FileCurrency(noted, True, "header")
    return FileCurrency(default, False, "default")


def sample_values(plan: CsvPlan, columns: ColumnMap, roles: tuple[str, ...]) -> list[str]:
    """Non-blank sample values of the columns playing ``roles``."""
    indexes = [columns.single[role] for role in roles if role in columns.single]
    values: list[str] = []
    for row in plan.sample:
        for index in indexes:
            if index < len(row.cells) and row.cells[index].strip():
                values.append(row.cells[index])
    return values


class _DecimalEvidence:
    """Votes of amounts for a decimal separator, and the first amount that reads both ways."""

    def __init__(self, plan: CsvPlan, currency: str) -> None:
        columns = plan.columns
        self._indexes = [columns.single[role] for role in MONEY_ROLES if role in columns.single]
        self._currency_index = columns.single.get("currency")
        self._places = exponent(currency)
        self.votes = {".": 0, ",": 0}
        self.ambiguous: tuple[str, int] | None = None

    def add(self, cells: list[str], line: int) -> None:
        places = self._row_places(cells)
        for index in self._indexes:
            value = cells[index] if index < len(cells) else ""
            if not value.strip():
                continue
            vote = decimal_vote(value, places)
            if vote is not None:
                self.votes[vote] += 1
            elif self.ambiguous is None and places != 3 and ambiguous_separator(value):
                self.ambiguous = (value.strip(), line)

    def majority(self) -> str | None:
        if self.votes["."] == self.votes[","]:
            return None
        return "." if self.votes["."] > self.votes[","] else ","

    def _row_places(self, cells: list[str]) -> int:
        index = self._currency_index
        if index is None or index >= len(cells) or not cells[index].strip():
            return self._places
        try:
            return exponent(cells[index].strip().upper())
        except ValidationError:
            return self._places


def _decimal_from_whole_file(
    money: _DecimalEvidence, plan: CsvPlan, stream: BinaryIO, encoding: Encoding
) -> str | None:
    """The separator the first deciding amount past the sample shows, or ``None``."""
    with data_rows(stream, encoding, plan) as reader:
        previous = reader.line_num
        try:
            for row in reader:
                money.add(row, previous + 1)
                previous = reader.line_num
                found = money.majority()
                if found is not None:
                    return found
        except UNREADABLE:
            # The row loop reports where the file stops being readable.
            return None
    return None


def _ambiguous_decimal(value: str, line: int) -> str:
    return (
        f'the decimal separator cannot be told from the amounts: "{clipped(value)}" on line '
        f"{line} may be a whole number with a thousands separator or have three decimals; "
        'set decimal_separator ("." or ",") in the client\'s mapping profile'
    )


def _trimmed(cells: list[str]) -> list[str]:
    end = len(cells)
    while end and not cells[end - 1].strip():
        end -= 1
    return cells[:end]


def _currency_from_header(columns: ColumnMap) -> str | None:
    for role in ("amount", "debit", "credit"):
        note = columns.notes.get(columns.single.get(role, -1), "")
        if len(note) == 3:
            try:
                return normalise_currency(note)
            except ValidationError:
                continue
    return None


def _order_from_whole_file(
    found: DateFormat,
    plan: CsvPlan,
    stream: BinaryIO,
    encoding: Encoding,
    index: int,
    values: list[str],
) -> DateFormat:
    evidence = OrderEvidence()
    with data_rows(stream, encoding, plan) as reader, suppress(*UNREADABLE):
        # An unreadable line ends the search; the row loop reports it.
        for row in reader:
            if index < len(row):
                evidence.add(row[index])
                if evidence.day_first or evidence.month_first:
                    break
    order = evidence.order()
    if order is None:
        name = plan.columns.name(index)
        separator, example = found.separator, clipped(values[0].strip())
        raise FileRejected(
            f'dates are ambiguous: every date in column "{name}" (such as {example}) '
            f"reads as both DD{separator}MM and MM{separator}DD; "
            "set date_order in the client's mapping profile"
        )
    return numeric_format(order, found.separator, long_year=found.label.endswith("YYYY"))
