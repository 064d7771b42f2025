"""Bank CSV rows to ``BankTxn``: a layout settled from the sample, then a lean streamed row loop.

Rows that are not transactions (blank, a repeated header, titles and footers without a date)
are skipped and counted; rows that look like transactions but hold a bad value become row
errors. A row with an amount is never skipped unless a label calls it a total or a balance.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, BinaryIO

from shared.domain.imports import BankTxn, MappingProfile, StatementBalance
from shared.domain.money import exponent
from shared.errors import ValidationError
from shared.importers.amounts import Amount, AmountError, AmountReader, to_minor
from shared.importers.columns import ColumnMap, fold
from shared.importers.dates import DateError, DateReader
from shared.importers.dialect import (
    UNREADABLE,
    FileCurrency,
    data_rows,
    overflow_reason,
    row_width,
    sample_values,
    settle_amounts,
    settle_currency,
    settle_dates,
    unreadable_csv,
    unreadable_line,
)
from shared.importers.report import ErrorLog
from shared.importers.sniff import CsvPlan
from shared.importers.text import Encoding

if TYPE_CHECKING:
    from _csv import Reader

SUMMARY_WORDS = (
    "total", "subtotal", "sum", "summe", "saldo", "balance", "opening", "closing", "ending",
    "beginning", "anfangssaldo", "endsaldo", "solde", "date downloaded", "downloaded",
    "totaal", "importe total",
)  # fmt: skip
"""First words of footer and summary lines (checked only on rows without a date)."""

# A dateless row with an amount is a total or balance line only when labelled as one: in the
# date column or another column that holds no text, any label naming a total or balance ...
_TOTAL_WORD = re.compile(
    r"\b(?:total|totals|subtotal|summe|gesamt|gesamtsumme|totaal|saldo|balance|solde"
    r"|anfangssaldo|endsaldo)\b"
)
# ... in a payee, description or memo column only a cell that is nothing but such a label,
# since "Balance transfer" or "Total Wine" there is a transaction.
_TOTAL_CELL = re.compile(
    r"(?:(?:grand|sub|transactions?) )?totals?(?: (?:transactions?|amount|debits?|credits?))?"
    r"|summe|gesamt|gesamtsumme|totaal|saldo|anfangssaldo|endsaldo|solde(?: final| initial)?"
    r"|(?:opening|closing|ending|beginning|starting|final) balance"
)

_MONEY_ROLES = ("amount", "debit", "credit")
DEBIT_MARKERS = frozenset({"debit", "dr", "d", "soll", "s", "debet", "af", "withdrawal"})
CREDIT_MARKERS = frozenset({"credit", "cr", "c", "haben", "h", "bij", "deposit"})

FITID_MIN_CHARS = 8
"""An id column gives FITIDs only if all sampled ids are this long, unique and without spaces."""

_TEXT_ROLES = ("payee", "description", "memo")

MAX_SAME_DAY_BALANCE_ROWS = 1000
"""Rows of one account's latest day kept to work out the closing balance; beyond, none is kept."""


class FieldError(ValueError):
    """One component of a row is wrong; names the columns, the raw value and the reason."""

    def __init__(self, indexes: tuple[int, ...], value: str, reason: str) -> None:
        super().__init__(reason)
        self.indexes = indexes
        self.value = value
        self.reason = reason


@dataclass(slots=True)
class BankLayout:
    """Everything the row loop needs, settled once per file."""

    columns: ColumnMap
    dates: DateReader
    amounts: AmountReader
    decimal_source: str
    currency: FileCurrency
    money_kind: str
    fitid_index: int | None
    flip_sign: bool
    header_key: list[str]
    header_width: int


def settle_layout(
    plan: CsvPlan,
    stream: BinaryIO,
    encoding: Encoding,
    profile: MappingProfile | None,
    default_currency: str,
) -> BankLayout:
    """Settle the dialect and the money layout of a bank CSV from its sample.

    Raises:
        FileRejected: see ``settle_dates`` and ``settle_amounts``.
    """
    columns = plan.columns
    currency = settle_currency(plan, profile, default_currency)
    amounts, decimal_source = settle_amounts(plan, profile, currency.code, stream, encoding)
    dates = settle_dates(plan, stream, encoding, profile)
    _drop_type_unless_markers(plan, profile)
    money_kind = _money_kind(columns)
    header_key = _row_key(plan.header)
    width = max(row_width(plan), max(_all_indexes(columns)) + 1)
    flip = bool(profile and profile.debit_is_negative and money_kind == "signed")
    fitid = _fitid_index(plan, profile)
    return BankLayout(
        columns, dates, amounts, decimal_source, currency, money_kind, fitid, flip,
        header_key, width,
    )  # fmt: skip


def describe_layout(layout: BankLayout) -> dict[str, object]:
    """What was detected, for ``ParsedFile.details``."""
    found = layout.dates.format
    return {
        "columns": layout.columns.described(),
        "date_format": found.label,
        "date_order": found.order,
        "decimal_separator": layout.amounts.decimal,
        "decimal_separator_source": layout.decimal_source,
        "currency": layout.currency.code,
        "currency_source": layout.currency.source,
        "amount_layout": layout.money_kind,
        "fitid_column": (
            layout.columns.name(layout.fitid_index) if layout.fitid_index is not None else None
        ),
    }


class BankRows:
    """Streams a bank CSV's records; row errors and balances are filled in as it goes."""

    def __init__(
        self,
        stream: BinaryIO,
        encoding: Encoding,
        plan: CsvPlan,
        layout: BankLayout,
        log: ErrorLog,
        balances: list[StatementBalance],
        details: dict[str, object],
    ) -> None:
        self._stream, self._encoding, self._plan = stream, encoding, plan
        self._layout, self._log, self._details = layout, log, details
        self._balances = balances
        columns = layout.columns
        self._date_index = columns.single["date"]
        self._read_date = layout.dates.read
        self._money = _Money(layout)
        self._account = _text_getter(columns.single.get("account"))
        self._reference = _optional_getter(columns.single.get("reference"))
        self._fitid = _optional_getter(layout.fitid_index)
        self._describe = _describer(columns)
        texts = [index for role in _TEXT_ROLES for index in columns.multi.get(role, [])]
        self._text_index = texts[0] if len(texts) == 1 else -1
        self._balance_index = columns.single.get("balance")
        self._tracker = _BalanceTracker()
        self._required = max(_required_indexes(columns, layout.money_kind)) + 1
        self._full = max(_all_indexes(columns)) + 1
        self._width = layout.header_width
        self._money_indexes = [
            columns.single[role] for role in _MONEY_ROLES if role in columns.single
        ]
        self._text_indexes = {
            index for role in _TEXT_ROLES for index in columns.multi.get(role, [])
        }
        optional = ("account", "reference", "balance")
        self._plain_row = layout.fitid_index is None and not any(
            role in columns.single for role in optional
        )

    def __iter__(self) -> Iterator[BankTxn]:
        self._log.skip("preamble", self._plan.skip_rows - (1 if self._plan.header else 0))
        with data_rows(self._stream, self._encoding, self._plan) as reader:
            fast = self._plain_row and self._money.plain is not None
            yield from (self._plain_rows if fast else self._rows)(reader)
        self._close_balances()

    def _rows(self, reader: Reader) -> Iterator[BankTxn]:
        read, previous, convert = 0, reader.line_num, self._convert
        try:
            for row in reader:
                read += 1
                txn = convert(row, previous + 1)
                previous = reader.line_num
                if txn is not None:
                    yield txn
        except UNREADABLE as exc:
            line = unreadable_line(exc, reader, previous + 1)
            self._log.add(line, None, None, unreadable_csv(exc))
        finally:
            self._details["rows_read"] = read

    def _plain_rows(self, reader: Reader) -> Iterator[BankTxn]:
        """The loop for date, text and one plain amount in one currency, with no calls per row.

        A row of the header's width whose date string was seen before and whose amount is a
        plain number is built here; any other row takes the general path (``_convert``).
        """
        money, seen, convert = self._money, self._layout.dates.seen, self._convert
        plain, scale, code, flip = money.plain, money.scale, money.code, money.flip
        assert plain is not None
        date_index, amount_index, width = self._date_index, money.amount_index, self._full
        widest = self._width
        text_index = self._text_index
        read, previous = 0, reader.line_num
        try:
            for row in reader:
                read += 1
                line, previous = previous + 1, reader.line_num
                try:
                    booked = seen[row[date_index]]
                    match = plain(row[amount_index]) if width <= len(row) <= widest else None
                except (KeyError, IndexError):
                    match = None
                if match is None:
                    txn = convert(row, line)
                    if txn is not None:
                        yield txn
                    continue
                negative, whole, fraction = match.groups()
                minor = int(whole) * scale[0]
                if fraction:
                    minor += int(fraction) * scale[len(fraction)]
                text = row[text_index].strip() if text_index >= 0 else self._describe(row)
                signed = minor if bool(negative) == flip else -minor
                yield BankTxn(line, "", booked, signed, code, text, None, None)
        except UNREADABLE as exc:
            line = unreadable_line(exc, reader, previous + 1)
            self._log.add(line, None, None, unreadable_csv(exc))
        finally:
            self._details["rows_read"] = read

    def _convert(self, row: list[str], line: int) -> BankTxn | None:
        if len(row) > self._width:
            reason = overflow_reason(row, self._width, headed=bool(self._plan.header))
            if reason is not None:
                self._log.add(line, None, self._plan.delimiter.join(row), reason)
                return None
        if len(row) < self._full:
            row = row + [""] * (self._full - len(row)) if len(row) >= self._required else row
        try:
            booked = self._read_date(row[self._date_index])
            minor, currency = self._money.read(row)
        except (DateError, FieldError, IndexError):
            self._diagnose(row, line)
            return None
        if self._plain_row:
            return BankTxn(line, "", booked, minor, currency, self._describe(row), None, None)
        account = self._account(row)
        if self._balance_index is not None and not self._note_balance(
            row, line, account, booked, minor, currency
        ):
            return None
        return BankTxn(
            line, account, booked, minor, currency, self._describe(row), self._fitid(row),
            self._reference(row),
        )  # fmt: skip

    def _note_balance(
        self, row: list[str], line: int, account: str, booked: date, minor: int, currency: str
    ) -> bool:
        index = self._balance_index
        assert index is not None
        text = row[index]
        if not text.strip():
            return True
        try:
            balance = to_minor(self._layout.amounts.read(text), exponent(currency), currency)
        except AmountError as exc:
            self._log.add(line, self._layout.columns.name(index), text, exc.reason)
            return False
        self._tracker.note(account, currency, booked, minor, balance)
        return True

    def _diagnose(self, row: list[str], line: int) -> None:
        """Explain a row the fast path refused: skip it with a reason or log its errors."""
        log = self._log
        if not any(cell.strip() for cell in row):
            log.skip("blank")
            return None
        if _row_key(row) == self._layout.header_key:
            log.skip("repeated header")
            return None
        date_reason = self._date_reason(row)
        if date_reason is not None and self._is_footer(row):
            log.skip("summary or footer")
            return None
        if len(row) < self._required:
            joined = self._plan.delimiter.join(row)
            reason = f"row has {len(row)} fields; the header has {self._layout.header_width}"
            log.add(line, None, joined, reason)
            return None
        if date_reason is not None:
            name = self._layout.columns.name(self._date_index)
            log.add(line, name, row[self._date_index], date_reason)
        try:
            self._money.read(row)
        except FieldError as exc:
            names = " / ".join(self._layout.columns.name(index) for index in exc.indexes)
            log.add(line, names, exc.value, exc.reason)
        return None

    def _date_reason(self, row: list[str]) -> str | None:
        if self._date_index >= len(row):
            return "missing; the row ends before the date column"
        try:
            self._read_date(row[self._date_index])
        except DateError as exc:
            return exc.reason
        return None

    def _is_footer(self, row: list[str]) -> bool:
        """A row without a date is a footer if its date cell holds words and few cells are set.

        A row with an amount, debit or credit is a footer only if labelled as a total or a
        balance: banks that print the date only on a day's first row leave it empty on the
        others, and skipping those would lose money without a word.
        """
        # Limitation: a balance line that carries a date and an amount
        # ("31.12.2023;Anfangssaldo;;1.234,56") reads as a transaction; only dateless
        # summary lines are skipped.
        cell = row[self._date_index] if self._date_index < len(row) else ""
        if cell.strip() and not any(ch.isalpha() for ch in cell):
            return False
        if any(index < len(row) and row[index].strip() for index in self._money_indexes):
            return self._labelled_total(row)
        filled = [value for value in row if value.strip()]
        if len(filled) <= 2:
            return True
        return fold(filled[0]).startswith(SUMMARY_WORDS)

    def _labelled_total(self, row: list[str]) -> bool:
        """Whether a cell other than the money labels a dateless row a total or a balance."""
        for index, cell in enumerate(row):
            if index in self._money_indexes or not cell.strip():
                continue
            label = fold(cell)
            pattern = _TOTAL_CELL.fullmatch if index in self._text_indexes else _TOTAL_WORD.search
            if pattern(label) is not None:
                return True
        return False

    def _close_balances(self) -> None:
        found, unsettled = self._tracker.closing()
        self._balances.extend(found)
        if unsettled:
            self._details["balance_not_recorded"] = unsettled


class _Money:
    """Reads a row's amount for the file's layout: signed, debit/credit columns, or typed."""

    def __init__(self, layout: BankLayout) -> None:
        single = layout.columns.single
        self._reader = layout.amounts.read
        self._currency = layout.currency
        self._currency_index = single.get("currency")
        self._known: set[str] = set()
        self._flip = layout.flip_sign
        self._amount = single.get("amount", -1)
        self._debit, self._credit = single.get("debit", -1), single.get("credit", -1)
        self._type = single.get("type", -1)
        variants: dict[str, Callable[[list[str]], tuple[int, str]]] = {
            "signed": self._signed,
            "split": self._split,
            "typed": self._typed,
        }
        self.read = variants[layout.money_kind]
        # A single amount column in one currency gets a fast path for plain numbers.
        self.plain: Callable[[str], re.Match[str] | None] | None = None
        self.amount_index, self.code, self.flip = self._amount, self._currency.code, self._flip
        if layout.money_kind == "signed" and self._currency_index is None:
            places = exponent(self.code)
            self.plain = _plain_amount_pattern(layout.amounts.decimal, places)
            self.scale: list[int] = [10 ** (places - size) for size in range(places + 1)]

    def _signed(self, row: list[str]) -> tuple[int, str]:
        text = row[self._amount]
        try:
            amount = self._reader(text)
        except AmountError as exc:
            raise FieldError((self._amount,), text, exc.reason) from None
        minor, currency = self._scale(row, amount, self._amount, text)
        return (-minor if self._flip else minor), currency

    def _typed(self, row: list[str]) -> tuple[int, str]:
        text, marker = row[self._amount], row[self._type]
        try:
            amount = self._reader(text)
        except AmountError as exc:
            raise FieldError((self._amount,), text, exc.reason) from None
        minor, currency = self._scale(row, amount, self._amount, text)
        kind = fold(marker)
        if kind in DEBIT_MARKERS:
            return -abs(minor), currency
        if kind in CREDIT_MARKERS:
            return abs(minor), currency
        raise FieldError(
            (self._type,), marker, "not a debit/credit marker; expected debit or credit"
        )

    def _split(self, row: list[str]) -> tuple[int, str]:
        debit = self._optional(row, self._debit)
        credit = self._optional(row, self._credit)
        both = (self._debit, self._credit)
        shown = f"{row[self._debit].strip()} / {row[self._credit].strip()}"
        if debit is None and credit is None:
            raise FieldError(both, shown, "neither debit nor credit is set")
        if debit is not None and credit is not None and not (_is_zero(debit) or _is_zero(credit)):
            raise FieldError(both, shown, "both debit and credit are set")
        total, currency = 0, self._currency.code
        if debit is not None:
            minor, currency = self._scale(row, debit, self._debit, row[self._debit])
            total -= abs(minor)
        if credit is not None:
            minor, currency = self._scale(row, credit, self._credit, row[self._credit])
            total += minor
        return total, currency

    def _optional(self, row: list[str], index: int) -> Amount | None:
        text = row[index]
        if not text.strip():
            return None
        try:
            return self._reader(text)
        except AmountError as exc:
            raise FieldError((index,), text, exc.reason) from None

    def _scale(self, row: list[str], amount: Amount, index: int, text: str) -> tuple[int, str]:
        currency, stated = self._row_currency(row)
        named = amount.currency
        if named and named != currency:
            if stated:
                reason = f"the amount is in {named} but the row's currency is {currency}"
                raise FieldError((index,), text, reason)
            currency = named
        try:
            return to_minor(amount, exponent(currency), currency), currency
        except AmountError as exc:
            raise FieldError((index,), text, exc.reason) from None

    def _row_currency(self, row: list[str]) -> tuple[str, bool]:
        index = self._currency_index
        if index is None or index >= len(row) or not row[index].strip():
            return self._currency.code, self._currency.stated
        code = row[index].strip().upper()
        if code not in self._known:
            try:
                exponent(code)
            except ValidationError:
                raise FieldError((index,), row[index], "not an ISO 4217 currency code") from None
            self._known.add(code)
        return code, True


@dataclass(slots=True)
class _LatestDay:
    day: date
    rows: list[tuple[int, int, int]]
    overflow: bool = False


class _BalanceTracker:
    """Keeps, per account, the rows of the latest day seen, to find the closing balance.

    Files come newest-first or oldest-first, and rows of one day in either order. The closing
    balance is that of the latest day's row that no other same-day row follows in the
    running-balance chain (balance + next amount = next balance). When that does not single
    out one row, no balance is recorded rather than a guessed one.
    """

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], _LatestDay] = {}
        self._order = 0

    def note(self, account: str, currency: str, day: date, amount: int, balance: int) -> None:
        self._order += 1
        key = (account, currency)
        current = self._latest.get(key)
        if current is None or day > current.day:
            self._latest[key] = _LatestDay(day, [(amount, balance, self._order)])
        elif day == current.day:
            # Limitation: an account with more rows than this on its latest day gets no
            # closing balance.
            if len(current.rows) >= MAX_SAME_DAY_BALANCE_ROWS:
                current.overflow = True
            else:
                current.rows.append((amount, balance, self._order))

    def closing(self) -> tuple[list[StatementBalance], list[str]]:
        found: list[StatementBalance] = []
        unsettled: list[str] = []
        for (account, currency), latest in self._latest.items():
            last = None if latest.overflow else _last_in_chain(latest.rows)
            if last is None:
                unsettled.append(account or "(the file's account)")
            else:
                found.append(StatementBalance(account, currency, last, latest.day))
        return found, unsettled


def _last_in_chain(rows: list[tuple[int, int, int]]) -> int | None:
    if len(rows) == 1:
        return rows[0][1]
    ends = [
        balance
        for amount, balance, order in rows
        if not any(
            other_order != order and other_balance == balance + other_amount
            for other_amount, other_balance, other_order in rows
        )
    ]
    return ends[0] if len(ends) == 1 else None


def _plain_amount_pattern(decimal: str, places: int) -> Callable[[str], re.Match[str] | None]:
    fraction = rf"(?:{re.escape(decimal)}([0-9]{{1,{places}}}))?" if places else "()"
    return re.compile(rf"(-?)([0-9]{{1,15}}){fraction}").fullmatch


def _is_zero(amount: Amount) -> bool:
    return not (amount.whole.strip("0") or amount.fraction.strip("0"))


def _row_key(cells: list[str]) -> list[str]:
    key = [fold(cell) for cell in cells]
    while key and not key[-1]:
        key.pop()
    return key


def _money_kind(columns: ColumnMap) -> str:
    # Limitation: fee and commission columns (Gebühr, Fees) are never read, and brokerage
    # exports that mix share-only rows (Fidelity's Type "Shares") with cash rows import every
    # row's amount as cash.
    if columns.has("amount"):
        return "typed" if columns.has("type") else "signed"
    return "split"


def _required_indexes(columns: ColumnMap, money_kind: str) -> list[int]:
    roles = {"signed": ("amount",), "typed": ("amount", "type"), "split": ("debit", "credit")}
    return [columns.single["date"]] + [columns.single[role] for role in roles[money_kind]]


def _all_indexes(columns: ColumnMap) -> list[int]:
    indexes = list(columns.single.values())
    for group in columns.multi.values():
        indexes.extend(group)
    return indexes


def _drop_type_unless_markers(plan: CsvPlan, profile: MappingProfile | None) -> None:
    """A type column gives signs only if its sampled values are all debit/credit markers."""
    columns = plan.columns
    if "type" not in columns.single or (profile and "type" in profile.columns):
        return
    values = {fold(value) for value in sample_values(plan, columns, ("type",))}
    if not values or not values <= DEBIT_MARKERS | CREDIT_MARKERS:
        del columns.single["type"]


def _fitid_index(plan: CsvPlan, profile: MappingProfile | None) -> int | None:
    """Use an id column as FITID only when every sampled id looks bank-unique."""
    # Limitation: uniqueness is checked within the sample only; a bank that reuses an id
    # further down the file yields duplicate FITIDs there.
    index = plan.columns.single.get("id")
    if index is None:
        return None
    if profile is not None and "id" in profile.columns:
        return index
    values = [value.strip() for value in sample_values(plan, plan.columns, ("id",))]
    looks_unique = len(set(values)) == len(values)
    long_enough = all(len(value) >= FITID_MIN_CHARS and " " not in value for value in values)
    return index if values and looks_unique and long_enough else None


def _text_getter(index: int | None) -> Callable[[list[str]], str]:
    if index is None:
        return lambda row: ""
    return lambda row: row[index].strip()


def _optional_getter(index: int | None) -> Callable[[list[str]], str | None]:
    if index is None:
        return lambda row: None
    return lambda row: row[index].strip() or None


def _describer(columns: ColumnMap) -> Callable[[list[str]], str]:
    """Join payee, description and memo columns with `` / ``, skipping empty and repeated cells."""
    indexes = [index for role in _TEXT_ROLES for index in columns.multi.get(role, [])]
    if len(indexes) == 1:
        only = indexes[0]
        return lambda row: row[only].strip()

    def describe(row: list[str]) -> str:
        parts = dict.fromkeys(row[index].strip() for index in indexes)
        return " / ".join(part for part in parts if part)

    return describe
