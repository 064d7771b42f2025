"""Journal CSV rows to ``JournalLine``: date, entry reference, account, debit/credit, memo.

Several lines make one entry; a line with a blank entry reference (and date) continues the
entry above it. Balancing entries and checking accounts is the import service's job.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import BinaryIO

from shared.domain.imports import JournalLine
from shared.domain.money import exponent
from shared.importers.amounts import Amount, AmountError, AmountReader, currency_for_mark, to_minor
from shared.importers.columns import ColumnMap, fold
from shared.importers.dates import DateError, DateReader
from shared.importers.dialect import (
    UNREADABLE,
    FileCurrency,
    data_rows,
    overflow_reason,
    row_width,
    unreadable_csv,
    unreadable_line,
)
from shared.importers.report import ErrorLog
from shared.importers.sniff import CsvPlan
from shared.importers.text import Encoding


@dataclass(slots=True)
class _Entry:
    """The entry the next continuation line belongs to."""

    ref: str
    booked_on: date | None


class _LineError(ValueError):
    def __init__(self, index: int | None, value: str | None, reason: str) -> None:
        super().__init__(reason)
        self.index, self.value, self.reason = index, value, reason


class JournalRows:
    """Streams a journal CSV's lines; row errors are filled in as it goes."""

    def __init__(
        self,
        stream: BinaryIO,
        encoding: Encoding,
        plan: CsvPlan,
        dates: DateReader,
        amounts: AmountReader,
        currency: FileCurrency,
        log: ErrorLog,
        details: dict[str, object],
    ) -> None:
        self._stream, self._encoding, self._plan = stream, encoding, plan
        self._dates, self._amounts, self._currency = dates, amounts, currency
        self._log, self._details = log, details
        self._columns: ColumnMap = plan.columns
        self._header_key = [fold(cell) for cell in plan.header]
        self._width = max(
            [row_width(plan), *(index + 1 for index in plan.columns.single.values())]
        )
        self._entry: _Entry | None = None
        single = plan.columns.single
        self._signed = not (single.keys() >= {"debit", "credit"})

    def __iter__(self) -> Iterator[JournalLine]:
        self._log.skip("preamble", self._plan.skip_rows - (1 if self._plan.header else 0))
        read = 0
        try:
            with data_rows(self._stream, self._encoding, self._plan) as reader:
                previous = reader.line_num
                try:
                    for row in reader:
                        read += 1
                        line = self._convert(row, previous + 1)
                        previous = reader.line_num
                        if line is not None:
                            yield line
                except UNREADABLE as exc:
                    where = unreadable_line(exc, reader, previous + 1)
                    self._log.add(where, None, None, unreadable_csv(exc))
        finally:
            self._details["rows_read"] = read

    def _convert(self, row: list[str], line: int) -> JournalLine | None:
        if not any(cell.strip() for cell in row):
            self._log.skip("blank")
            return None
        if [fold(cell) for cell in row] == self._header_key:
            self._log.skip("repeated header")
            return None
        overflow = overflow_reason(row, self._width, headed=bool(self._plan.header))
        if overflow is not None:
            self._log.add(line, None, self._plan.delimiter.join(row), overflow)
            return None
        problems: list[_LineError] = []
        entry = self._entry_of(row, problems)
        account = self._account_of(row, problems)
        currency = self._currency_of(row, problems)
        debit, credit = self._money_of(row, currency, problems)
        if problems or entry is None or entry.booked_on is None:
            for problem in problems:
                name = self._columns.name(problem.index) if problem.index is not None else None
                self._log.add(line, name, problem.value, problem.reason)
            return None
        memo = self._memo_of(row)
        return JournalLine(
            line, entry.ref, entry.booked_on, account, debit, credit, currency, memo
        )

    def _cell(self, row: list[str], role: str) -> tuple[int | None, str]:
        index = self._columns.single.get(role)
        if index is None or index >= len(row):
            return index, ""
        return index, row[index].strip()

    def _entry_of(self, row: list[str], problems: list[_LineError]) -> _Entry | None:
        """The line's entry: its own reference and date, or the entry it continues."""
        ref_index, ref = self._cell(row, "entry")
        date_index, text = self._cell(row, "date")
        previous = self._entry
        continues = previous is not None and ref in {"", previous.ref}
        if not ref and previous is None:
            problems.append(
                _LineError(ref_index, ref, "no entry reference, and no line above to continue")
            )
            return None
        entry = _Entry(ref or (previous.ref if previous else ""), None)
        if not text and continues and previous is not None:
            entry.booked_on = previous.booked_on
            if entry.booked_on is None:
                reason = "empty, and the entry this line continues has no valid date"
                problems.append(_LineError(date_index, text, reason))
        else:
            try:
                entry.booked_on = self._dates.read(text)
            except DateError as exc:
                problems.append(_LineError(date_index, text, exc.reason))
        self._entry = entry
        return entry

    def _account_of(self, row: list[str], problems: list[_LineError]) -> str:
        index, account = self._cell(row, "account")
        if not account:
            problems.append(_LineError(index, account, "empty; an account is required"))
        return account

    def _currency_of(self, row: list[str], problems: list[_LineError]) -> str:
        # Limitation: a currency sign inside a journal amount ("12,00 €") is not read; the
        # currency column, the profile or the default decides. Tax-code columns are not read.
        index, mark = self._cell(row, "currency")
        if not mark:
            return self._currency.code
        code = currency_for_mark(mark)
        if code is None:
            problems.append(_LineError(index, mark, "not a currency sign or ISO 4217 code"))
            return self._currency.code
        return code or self._currency.code

    def _money_of(
        self, row: list[str], currency: str, problems: list[_LineError]
    ) -> tuple[int, int]:
        try:
            if self._signed:
                return self._from_signed(row, currency)
            return self._from_columns(row, currency)
        except _LineError as problem:
            problems.append(problem)
            return 0, 0

    def _from_signed(self, row: list[str], currency: str) -> tuple[int, int]:
        index, text = self._cell(row, "amount")
        minor = self._minor(self._amount(index, text), currency, index, text)
        if minor == 0:
            raise _LineError(index, text, "neither debit nor credit is set (amount is zero)")
        return (minor, 0) if minor > 0 else (0, -minor)

    def _from_columns(self, row: list[str], currency: str) -> tuple[int, int]:
        debit_index, debit_text = self._cell(row, "debit")
        credit_index, credit_text = self._cell(row, "credit")
        debit = self._minor_or_zero(debit_index, debit_text, currency)
        credit = self._minor_or_zero(credit_index, credit_text, currency)
        shown = f"{debit_text} / {credit_text}"
        if debit < 0 or credit < 0:
            raise _LineError(debit_index, shown, "negative; debit and credit are positive amounts")
        if debit and credit:
            raise _LineError(debit_index, shown, "both debit and credit are set")
        if not debit and not credit:
            raise _LineError(debit_index, shown, "neither debit nor credit is set")
        return debit, credit

    def _minor_or_zero(self, index: int | None, text: str, currency: str) -> int:
        if not text:
            return 0
        return self._minor(self._amount(index, text), currency, index, text)

    def _amount(self, index: int | None, text: str) -> Amount:
        try:
            return self._amounts.read(text)
        except AmountError as exc:
            raise _LineError(index, text, exc.reason) from None

    @staticmethod
    def _minor(amount: Amount, currency: str, index: int | None, text: str) -> int:
        try:
            return to_minor(amount, exponent(currency), currency)
        except AmountError as exc:
            raise _LineError(index, text, exc.reason) from None

    def _memo_of(self, row: list[str]) -> str:
        parts = (
            row[index].strip() for index in self._columns.multi.get("memo", []) if index < len(row)
        )
        return " / ".join(part for part in parts if part)
