"""Number, date and currency dialect of a CSV file, settled once before its rows are read.

Shared by bank and journal CSVs. The sample decides; the mapping profile overrides; a date
order the sample leaves open is looked for in the whole file before the file is rejected.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from shared.domain.imports import MappingProfile
from shared.domain.money import normalise_currency
from shared.errors import ValidationError
from shared.importers.amounts import AmountReader, detect_decimal
from shared.importers.columns import ColumnMap
from shared.importers.dates import (
    ORDERS,
    DateFormat,
    DateReader,
    OrderEvidence,
    detect_date_format,
    numeric_format,
)
from shared.importers.sniff import CsvPlan
from shared.importers.text import Encoding, FileRejected, text_lines

if TYPE_CHECKING:
    from _csv import Reader

MONEY_ROLES = ("amount", "debit", "credit", "balance")


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
    """A csv reader over the whole file, positioned after the preamble and header rows."""
    with text_lines(stream, encoding) as handle:
        reader = csv.reader(handle, delimiter=plan.delimiter)
        for _ in range(plan.skip_rows):
            if next(reader, None) is None:
                break
        yield reader


def unreadable_csv(error: Exception) -> str:
    """The row-error reason when the csv module gives up (an unclosed quote, a huge field)."""
    return f"the file cannot be read as CSV from this line on ({error})"


def settle_amounts(plan: CsvPlan, profile: MappingProfile | None) -> tuple[AmountReader, str]:
    """Choose the decimal separator; returns the reader and where the choice came from.

    Raises:
        FileRejected: the profile names a separator other than ``.`` or ``,``.
    """
    forced = profile.decimal_separator if profile else None
    if forced is not None:
        if forced not in {".", ","}:
            raise FileRejected(
                f'the mapping profile sets decimal_separator to "{forced}"; use "." or ","'
            )
        return AmountReader(forced), "mapping profile"
    values = sample_values(plan, plan.columns, MONEY_ROLES)
    found = detect_decimal(values)
    return AmountReader(found or "."), "detected" if found else "default"


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
        shown = ", ".join(repr(value) for value in values[:3]) or "none"
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
    with data_rows(stream, encoding, plan) as reader:
        for row in reader:
            if index < len(row):
                evidence.add(row[index])
                if evidence.day_first or evidence.month_first:
                    break
    order = evidence.order()
    if order is None:
        name = plan.columns.name(index)
        separator = found.separator
        raise FileRejected(
            f'dates are ambiguous: every date in column "{name}" (such as {values[0].strip()}) '
            f"reads as both DD{separator}MM and MM{separator}DD; "
            "set date_order in the client's mapping profile"
        )
    return numeric_format(order, found.separator, long_year=found.label.endswith("YYYY"))
