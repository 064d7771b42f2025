"""What a parsed ledger file is made of: bank transactions, journal lines, balances and row errors.

Parsers in ``shared.importers`` produce these; ``shared.services.ledger_import`` validates,
dedupes and posts them. Amounts are integer minor units with their ISO 4217 code.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum


class FileFormat(StrEnum):
    """Formats recognised from a file's content (never from its name)."""

    BANK_CSV = "bank_csv"
    OFX_SGML = "ofx_sgml"
    OFX_XML = "ofx_xml"
    QFX = "qfx"
    JOURNAL_CSV = "journal_csv"


@dataclass(frozen=True, slots=True)
class RowError:
    """One reason a file is rejected, pointing at the input.

    ``line`` is the 1-based physical line (CSV) or element position (OFX) the problem is on;
    ``column`` the header name or OFX tag; ``value`` the raw text, cut to 200 characters.
    """

    line: int | None
    column: str | None
    value: str | None
    reason: str

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column:
            where.append(f'column "{self.column}"')
        head = ", ".join(where)
        shown = f": {self.value!r}" if self.value is not None else ""
        return f"{head}{shown}: {self.reason}" if head else f"{self.reason}{shown}"

    def to_json(self) -> dict[str, object]:
        return {
            "line": self.line,
            "column": self.column,
            "value": self.value,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class BankTxn:
    """One bank or card transaction as the bank stated it.

    Attributes:
        line: 1-based line of the row (CSV) or of the STMTTRN start (OFX), for reports.
        account_ref: the account in the file (OFX ``BANKID/ACCTID``, a CSV account column),
            or ``""`` when the file covers one unnamed account.
        booked_on: the bank's local booking date, never shifted through UTC.
        amount_minor: signed; money into the account is positive.
        currency: ISO 4217 code.
        description: payee and memo text, kept verbatim (formula-like text stays text).
        fitid: the bank's own transaction id (OFX FITID, a CSV id column), if any.
        reference: a check number or bank reference, if any.
    """

    line: int
    account_ref: str
    booked_on: date
    amount_minor: int
    currency: str
    description: str
    fitid: str | None = None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class JournalLine:
    """One posting of a journal-file entry; lines sharing ``entry_ref`` form one entry.

    Exactly one of ``debit_minor`` and ``credit_minor`` is non-zero, and both are >= 0.
    ``account`` is the account code or name as written in the file.
    """

    line: int
    entry_ref: str
    booked_on: date
    account: str
    debit_minor: int
    credit_minor: int
    currency: str
    memo: str


@dataclass(frozen=True, slots=True)
class StatementBalance:
    """A balance the file itself states (OFX LEDGERBAL, a CSV closing balance)."""

    account_ref: str
    currency: str
    amount_minor: int
    as_of: date | None


@dataclass(slots=True)
class ParsedFile:
    """A parsed file, read lazily so that a large file never sits in memory whole.

    ``records`` yields ``BankTxn`` (bank formats) or ``JournalLine`` (journal files) in file
    order. While it is consumed, bad rows are appended to ``errors`` instead of being
    yielded, and stated balances to ``balances``; both are complete only once ``records``
    is exhausted. ``details`` holds what was detected (dialect, encoding, date order) for
    the report. An OFX file's ``format`` (QFX or not) and details are also final only then,
    and what only its whole shows (a failed sign-on, no statement) is raised by ``records``
    as ``UnsupportedFile`` after the last record.
    """

    format: FileFormat
    records: Iterator[BankTxn] | Iterator[JournalLine]
    errors: list[RowError] = field(default_factory=list)
    balances: list[StatementBalance] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MappingProfile:
    """A client's settings for files that cannot be read from their headers alone.

    Every field is optional; what is set wins over detection.

    Attributes:
        columns: role -> header name or 0-based column index. Roles: ``date``, ``amount``,
            ``debit``, ``credit``, ``description``, ``payee``, ``memo``, ``currency``,
            ``reference``, ``id``, ``balance``, ``account``, ``type`` (a debit/credit marker
            column that gives an unsigned amount its sign).
        has_header: ``False`` for headerless files (columns must then be indexes).
        date_order: ``"DMY"``, ``"MDY"`` or ``"YMD"``; settles ambiguous dates.
        decimal_separator: ``"."`` or ``","``.
        delimiter: one of ``, ; \\t |``.
        encoding: a Python codec name.
        currency: the account's currency when the file does not say.
        debit_is_negative: for a single amount column whose debits are positive (card
            exports), ``True`` flips the sign.
    """

    columns: dict[str, str | int] = field(default_factory=dict)
    has_header: bool | None = None
    date_order: str | None = None
    decimal_separator: str | None = None
    delimiter: str | None = None
    encoding: str | None = None
    currency: str | None = None
    debit_is_negative: bool = False

    @classmethod
    def from_json(cls, data: object) -> MappingProfile:
        """Build a profile from stored or posted JSON, checking every field.

        Raises:
            ValidationError: unknown fields (so typos show) or wrong values, each named.
        """
        from shared.errors import ValidationError

        if not isinstance(data, dict):
            raise ValidationError("a mapping profile must be a JSON object")
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValidationError(
                f"unknown mapping profile field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        problems = [
            f"{name}: {message}"
            for name, value in data.items()
            if value is not None and (message := _check_profile_field(name, value))
        ]
        if problems:
            raise ValidationError("invalid mapping profile: " + "; ".join(problems))
        return cls(**data)


PROFILE_MAX_COLUMN_INDEX = 1000

PROFILE_ROLES = frozenset(
    {
        "date",
        "amount",
        "debit",
        "credit",
        "description",
        "payee",
        "memo",
        "currency",
        "reference",
        "id",
        "balance",
        "account",
        "type",
    }
)
_PROFILE_CHOICES: dict[str, tuple[object, ...]] = {
    "date_order": ("DMY", "MDY", "YMD"),
    "decimal_separator": (".", ","),
    "delimiter": (",", ";", "\t", "|"),
}


def _check_profile_field(name: str, value: object) -> str | None:
    """Return what is wrong with one profile field, or None."""
    if name in _PROFILE_CHOICES:
        choices = _PROFILE_CHOICES[name]
        return None if value in choices else f"must be one of {', '.join(map(str, choices))}"
    if name in ("has_header", "debit_is_negative"):
        return None if isinstance(value, bool) else "must be true or false"
    if name == "encoding":
        return _check_encoding(value)
    if name == "currency":
        return _check_currency(value)
    if name == "columns":
        return _check_columns(value)
    return None


def _check_encoding(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must name a text encoding, such as utf-8 or cp1252"
    try:
        info = codecs.lookup(value)
    except LookupError:
        return f"{value!r} is not a known text encoding"
    # Codecs such as hex, base64 or rot13 transform bytes or text, they do not decode text.
    if not getattr(info, "_is_text_encoding", True):
        return f"{value!r} is not a text encoding"
    return None


def _check_currency(value: object) -> str | None:
    from shared.domain.money import normalise_currency
    from shared.errors import ValidationError

    if not isinstance(value, str):
        return "must be an ISO 4217 code such as USD"
    try:
        normalise_currency(value)
    except ValidationError as exc:
        return str(exc)
    return None


def _check_columns(value: object) -> str | None:
    if not isinstance(value, dict):
        return "must be an object of role -> column name or index"
    bad_roles = sorted(set(value) - PROFILE_ROLES)
    if bad_roles:
        known = ", ".join(sorted(PROFILE_ROLES))
        return f"unknown role(s) {', '.join(bad_roles)}; roles: {known}"
    for role, column in value.items():
        if isinstance(column, bool) or not isinstance(column, (str, int)):
            return f"{role} must name a column (text) or give its 0-based index"
        if isinstance(column, int) and not 0 <= column < PROFILE_MAX_COLUMN_INDEX:
            return f"{role} index must be from 0 to {PROFILE_MAX_COLUMN_INDEX - 1}"
        if isinstance(column, str) and not column.strip():
            return f"{role} must name a column"
    used: dict[str | int, str] = {}
    for role, column in sorted(value.items()):
        key = column.strip().casefold() if isinstance(column, str) else column
        if key in used:
            return f"{used[key]} and {role} name the same column {column!r}"
        used[key] = role
    return None
