"""Bank date dialects: detect a date column's format and order, then read it quickly.

Covers ISO and ``YYYY/MM/DD``, ``DD.MM.YYYY``/``DD.MM.YY``, ``DD/MM/YYYY`` and ``MM/DD/YYYY``
(order settled by evidence or the mapping profile), ``06 May 2020``, ``23-Jan-15`` and
``May 6, 2020``. Text after the date (a time, ``as of ...``) is ignored.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

# Limitation: two-digit years read as 1970-2069, so a 1960s date in a YY file is a century off.
TWO_DIGIT_YEAR_PIVOT = 70
"""Two-digit years below this are 20xx, the others 19xx."""

DATE_CACHE_SIZE = 4096
"""Distinct date strings remembered by a reader; bank files repeat dates row after row."""

ORDERS = ("DMY", "MDY", "YMD")

EARLIEST_YEAR = 1900
LATEST_YEAR = 2100
"""Booking dates outside these years (inclusive) are typos or placeholders, not bookings."""

NON_ASCII_DIGITS = "has digits other than 0-9; dates are read in ASCII digits only"

# Digits are ASCII only ([0-9], not \d): other scripts' digits are no date here.
_YMD = re.compile(r"\s*([0-9]{4})([-/.])([0-9]{1,2})\2([0-9]{1,2})(?![0-9])")
_NUMERIC = re.compile(r"\s*([0-9]{1,4})([-/.])([0-9]{1,2})\2([0-9]{4}|[0-9]{2})(?![0-9])")
_COMPACT = re.compile(r"\s*([0-9]{4})([0-9]{2})([0-9]{2})(?![0-9])")
_DAY_MONTH_NAME = re.compile(
    r"\s*([0-9]{1,2})[-. /]*([^\W\d_]{3,})\.?[-. /,]*([0-9]{4}|[0-9]{2})(?![0-9])"
)
_MONTH_NAME_DAY = re.compile(
    r"\s*([^\W\d_]{3,})\.?[-. /]*([0-9]{1,2})(?:st|nd|rd|th)?,?[-. /]*([0-9]{4})(?![0-9])"
)

_MONTH_PREFIXES: dict[str, int] = {
    "jan": 1, "ene": 1, "feb": 2, "fev": 2, "mar": 3, "mrz": 3, "mrt": 3, "maa": 3,
    "apr": 4, "avr": 4, "abr": 4, "may": 5, "mai": 5, "mei": 5, "jun": 6, "juin": 6,
    "jul": 7, "juil": 7, "aug": 8, "ago": 8, "aou": 8, "sep": 9, "set": 9, "oct": 10,
    "okt": 10, "nov": 11, "dec": 12, "dez": 12, "dic": 12,
}  # fmt: skip


class DateError(ValueError):
    """A field is not a date; ``reason`` is the sentence a row error carries."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DateFormat:
    """A detected date format.

    Attributes:
        kind: ``ymd``, ``numeric`` (day and month order by ``order``), ``compact``
            (``YYYYMMDD``), ``day_month_name`` or ``month_name_day``.
        order: ``DMY``, ``MDY`` or ``YMD``.
        label: how the report and row errors show it (``DD.MM.YYYY``).
        separator: the separator of numeric dates (``.``, ``/``, ``-``), else ``""``.
    """

    kind: str
    order: str
    label: str
    separator: str = ""


@dataclass(slots=True)
class OrderEvidence:
    """Counts of numeric dates that can only be day-first or only month-first."""

    day_first: int = 0
    month_first: int = 0
    example_day_first: str = ""
    example_month_first: str = ""

    def add(self, text: str) -> None:
        """Look at one field; a first part above 12 proves DMY, a second part above 12 MDY."""
        match = _NUMERIC.match(text)
        if match is None or len(match[1]) > 2:
            return
        first, second = int(match[1]), int(match[3])
        if first > 12 >= second:
            self.day_first += 1
            self.example_day_first = self.example_day_first or text.strip()
        elif second > 12 >= first:
            self.month_first += 1
            self.example_month_first = self.example_month_first or text.strip()

    def order(self) -> str | None:
        """The order the evidence supports by majority, or ``None`` if there is none."""
        if self.day_first == self.month_first:
            return None
        return "DMY" if self.day_first > self.month_first else "MDY"


def detect_date_format(values: Iterable[str], order: str | None = None) -> DateFormat | None:
    """Pick the format most sample values are in; ``None`` when none of them is a date.

    For numeric day/month dates the order comes from ``order`` (the mapping profile) if set,
    else from dots (always day-first), else from values whose first or second part exceeds
    12. When nothing settles it the format's order is ``""`` and the caller must look at more
    of the file or reject it.
    """
    counts: dict[str, int] = {}
    separators: dict[str, int] = {}
    short_years = 0
    evidence = OrderEvidence()
    for value in values:
        kind, separator, short = _classify(value)
        if kind is None:
            continue
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "numeric":
            separators[separator] = separators.get(separator, 0) + 1
            short_years += short
            evidence.add(value)
    if not counts:
        return None
    kind = max(counts, key=lambda name: counts[name])
    if kind != "numeric":
        return _named_format(kind)
    separator = max(separators, key=lambda sep: separators[sep])
    found = order or ("DMY" if separator == "." else evidence.order() or "")
    long_year = short_years * 2 <= counts[kind]
    return numeric_format(found, separator, long_year=long_year)


def numeric_format(order: str, separator: str, *, long_year: bool = True) -> DateFormat:
    """The numeric format for an order (``""`` while still unknown) and separator."""
    year = "YYYY" if long_year else "YY"
    parts = {"DMY": ("DD", "MM", year), "MDY": ("MM", "DD", year), "YMD": (year, "MM", "DD")}
    shown = separator.join(parts.get(order, ("??", "??", year)))
    return DateFormat("numeric", order, shown, separator)


class DateReader:
    """Reads one column's dates in one detected format, with a cache of strings seen."""

    __slots__ = ("_parse", "format", "reason", "seen")

    def __init__(self, found: DateFormat) -> None:
        self.format = found
        self.reason = f"not a date; expected {found.label}"
        self.seen: dict[str, date] = {}
        """Strings already read, to their dates; a row loop may look here first."""
        self._parse = _parser_for(found)

    def read(self, text: str) -> date:
        """Return the date ``text`` starts with.

        Raises:
            DateError: empty, not in the detected format, or not a real calendar date.
        """
        cached = self.seen.get(text)
        if cached is not None:
            return cached
        if not text.strip():
            raise DateError("empty; a date is required")
        try:
            parsed = self._parse(text)
        except ValueError:
            if not text.isascii() and any(ch.isdigit() and not ch.isascii() for ch in text):
                raise DateError(NON_ASCII_DIGITS) from None
            raise DateError(self.reason) from None
        implausible = implausible_year(parsed)
        if implausible is not None:
            raise DateError(implausible)
        if len(self.seen) >= DATE_CACHE_SIZE:
            self.seen.clear()
        self.seen[text] = parsed
        return parsed


def implausible_year(day: date) -> str | None:
    """The row-error reason for a date whose year no booking has, or ``None`` when it is fine."""
    if EARLIEST_YEAR <= day.year <= LATEST_YEAR:
        return None
    return f"year {day.year:04d} is outside {EARLIEST_YEAR}-{LATEST_YEAR}; not a booking date"


def read_any_date(text: str) -> date | None:
    """Read a date in any unambiguous supported format, or return ``None``.

    Used to tell footers and titles from transactions, never to import values.
    """
    kind, separator, _ = _classify(text)
    if kind is None:
        return None
    found = _named_format(kind) if kind != "numeric" else numeric_format("", separator)
    if found.order == "":
        found = numeric_format("DMY", separator)
    try:
        return _parser_for(found)(text)
    except ValueError:
        if kind == "numeric":
            try:
                return _parser_for(numeric_format("MDY", separator))(text)
            except ValueError:
                return None
        return None


def _classify(value: str) -> tuple[str | None, str, bool]:
    """Return (kind, numeric separator, two-digit year) for one value."""
    if _YMD.match(value):
        return "ymd", "", False
    match = _NUMERIC.match(value)
    if match is not None and len(match[1]) <= 2:
        return "numeric", match[2], len(match[4]) == 2
    if _COMPACT.match(value):
        return "compact", "", False
    match = _DAY_MONTH_NAME.match(value)
    if match is not None and month_number(match[2]) is not None:
        return "day_month_name", "", False
    match = _MONTH_NAME_DAY.match(value)
    if match is not None and month_number(match[1]) is not None:
        return "month_name_day", "", False
    return None, "", False


def _named_format(kind: str) -> DateFormat:
    labels = {
        "ymd": ("YMD", "YYYY-MM-DD"),
        "compact": ("YMD", "YYYYMMDD"),
        "day_month_name": ("DMY", "DD Mon YYYY"),
        "month_name_day": ("MDY", "Mon DD, YYYY"),
    }
    order, label = labels[kind]
    return DateFormat(kind, order, label)


def month_number(name: str) -> int | None:
    """Month number of an English, German, French, Spanish or Dutch month name or abbreviation."""
    plain = unicodedata.normalize("NFKD", name.lower())
    plain = "".join(ch for ch in plain if ch.isalpha() and ch.isascii())
    for size in (4, 3):
        found = _MONTH_PREFIXES.get(plain[:size])
        if found is not None and len(plain) >= size:
            return found
    return None


def _year(text: str) -> int:
    year = int(text)
    if len(text) == 2:
        year += 2000 if year < TWO_DIGIT_YEAR_PIVOT else 1900
    return year


def _parser_for(found: DateFormat) -> Callable[[str], date]:
    if found.kind == "ymd":
        return _read_ymd
    if found.kind == "compact":
        return _read_compact
    if found.kind == "day_month_name":
        return _read_day_month_name
    if found.kind == "month_name_day":
        return _read_month_name_day
    return _numeric_reader(found.order)


def _read_ymd(text: str) -> date:
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        pass
    match = _YMD.match(text)
    if match is None:
        raise ValueError(text)
    return date(int(match[1]), int(match[3]), int(match[4]))


def _read_compact(text: str) -> date:
    match = _COMPACT.match(text)
    if match is None:
        raise ValueError(text)
    return date(int(match[1]), int(match[2]), int(match[3]))


def _read_day_month_name(text: str) -> date:
    match = _DAY_MONTH_NAME.match(text)
    month = month_number(match[2]) if match is not None else None
    if match is None or month is None:
        raise ValueError(text)
    return date(_year(match[3]), month, int(match[1]))


def _read_month_name_day(text: str) -> date:
    match = _MONTH_NAME_DAY.match(text)
    month = month_number(match[1]) if match is not None else None
    if match is None or month is None:
        raise ValueError(text)
    return date(int(match[3]), month, int(match[2]))


def _numeric_reader(order: str) -> Callable[[str], date]:
    day, month, year = {"DMY": (1, 3, 4), "MDY": (3, 1, 4), "YMD": (4, 3, 1)}[order]
    pattern = _NUMERIC.match

    def read(text: str) -> date:
        match = pattern(text)
        if match is None or (order != "YMD" and len(match[1]) > 2):
            raise ValueError(text)
        return date(_year(match[year]), int(match[month]), int(match[day]))

    return read
