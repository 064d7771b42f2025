"""Format detection from content: OFX or CSV, and for CSV the delimiter, header and column roles.

Works on the decoded start of the file only; the parsers stream the rest.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass

from shared.domain.imports import MappingProfile
from shared.importers.columns import (
    BANK_SYNONYMS,
    JOURNAL_SYNONYMS,
    PROFILE_ROLES,
    ColumnMap,
    fold,
    map_headers,
    recognised_count,
)
from shared.importers.dates import read_any_date
from shared.importers.report import clipped, listed
from shared.importers.text import FileRejected, LineTooLong, capped_lines

DELIMITERS = (",", ";", "\t", "|")
SNIFF_ROWS = 200
"""Rows of the sample used to pick the delimiter and to detect date and number dialects."""

# Limitation: a header below the first 60 rows, or past the first SNIFF_BYTES, is not found.
HEADER_SEARCH_ROWS = 60
"""A header further down than this many rows is not looked for."""

MAX_FIELDS_PER_ROW = 1000
"""Most cells a header may have; data rows may not fill more cells than their header."""

SHOWN_HEADER_CELLS = 30
"""Cells of a header or first row a rejection quotes (real headers rarely have more)."""

NOT_RECOGNISED = "not a bank CSV, OFX/QFX or journal CSV file"

_OFX_START = re.compile(r"<OFX>", re.IGNORECASE)
_SPACES = re.compile(r"\s++")
_HEADER_FIELD = re.compile(r"[A-Z][A-Z0-9.]*+:[^\r\n<]*+", re.IGNORECASE)
_MARKUP_ENDS = {"<?": "?>", "<!--": "-->"}


@dataclass(frozen=True, slots=True)
class SampleRow:
    """A row of the sniffed sample with its 1-based starting line."""

    line: int
    cells: list[str]


@dataclass(slots=True)
class CsvPlan:
    """What the sniffer settled for a CSV file.

    Attributes:
        kind: ``bank`` or ``journal``.
        delimiter: the field delimiter.
        header_line: 1-based line of the header row, or ``None`` for headerless files.
        header: the header cells (empty for headerless files).
        skip_rows: CSV rows before the first data row (preamble plus the header row).
        columns: the role mapping.
        sample: data rows after the header in the sniffed sample, for dialect detection.
    """

    kind: str
    delimiter: str
    header_line: int | None
    header: list[str]
    skip_rows: int
    columns: ColumnMap
    sample: list[SampleRow]


def looks_like_ofx(text: str) -> bool:
    """Whether the text is OFX/QFX: an ``<OFX>`` element preceded only by an OFX header.

    The header may be the SGML ``KEY:VALUE`` lines, the XML prolog and ``<?OFX ...?>``, only
    some of those, or nothing at all; comments and blank lines are allowed before it.
    """
    start = _OFX_START.search(text)
    if start is None:
        return False
    # A scan that never steps back: pattern alternatives here could backtrack quadratically.
    end = start.start()
    position = 1 if text.startswith("\ufeff") else 0
    while position < end:
        token = _SPACES.match(text, position, end) or _HEADER_FIELD.match(text, position, end)
        if token is not None:
            position = token.end()
            continue
        opener = next((mark for mark in _MARKUP_ENDS if text.startswith(mark, position)), None)
        if opener is None:
            return False
        close = text.find(_MARKUP_ENDS[opener], position + len(opener), end)
        if close < 0:
            return False
        position = close + len(_MARKUP_ENDS[opener])
    return True


def looks_like_markup(text: str) -> bool:
    """Whether the text starts like XML or HTML (and so is no CSV)."""
    return text.lstrip("\ufeff \t\r\n").startswith("<")


def read_sample(text: str, delimiter: str, *, complete: bool) -> list[SampleRow]:
    """Split the decoded start of a file into rows; a row cut by the sample's end is dropped.

    Reading stops at a line the csv module cannot read (or one longer than
    ``MAX_LINE_CHARS``); the rows before it are kept whole, and ``sample_problem`` says why.
    """
    return _read_sample(text, delimiter, complete=complete)[0]


def sample_problem(text: str, delimiter: str) -> str | None:
    """Why reading the sample stopped before its end, naming the line; ``None`` if it did not."""
    return _read_sample(text, delimiter, complete=False)[1]


def _read_sample(
    text: str, delimiter: str, *, complete: bool
) -> tuple[list[SampleRow], str | None]:
    reader = csv.reader(capped_lines(io.StringIO(text, newline="")), delimiter=delimiter)
    rows: list[SampleRow] = []
    previous = 0
    try:
        for cells in reader:
            rows.append(SampleRow(previous + 1, cells))
            previous = reader.line_num
    except LineTooLong as exc:
        return rows, f"line {reader.line_num + 1} cannot be read: {exc.reason}"
    except csv.Error as exc:
        return rows, f"line {previous + 1} cannot be read as CSV ({exc})"
    if not complete and rows:
        rows.pop()
    return rows, None


def sniff_delimiter(text: str, *, complete: bool) -> str:
    """Pick the delimiter that splits the most sample rows into the same number of fields.

    Raises:
        FileRejected: no delimiter splits the rows into columns.
    """
    best: tuple[int, int, str] | None = None
    for delimiter in DELIMITERS:
        rows = read_sample(text, delimiter, complete=complete)[: SNIFF_ROWS * 2]
        counts = Counter(len(row.cells) for row in rows if len(row.cells) > 1)
        if not counts:
            continue
        width, frequency = max(counts.items(), key=lambda item: (item[1], item[0]))
        if best is None or (frequency, width) > best[:2]:
            best = (frequency, width, delimiter)
    if best is None:
        raise FileRejected(f"{NOT_RECOGNISED}: no delimited columns found (tried , ; tab |)")
    return best[2]


def plan_csv(text: str, profile: MappingProfile | None, *, complete: bool) -> CsvPlan:
    """Settle delimiter, header row, file kind and column roles from the file's start.

    Raises:
        FileRejected: no usable header, a header without the required roles, or a mapping
            profile that does not fit the file.
    """
    fixed_names = _profile_columns(profile)
    delimiter = profile.delimiter if profile else None
    try:
        delimiter = delimiter or sniff_delimiter(text, complete=complete)
        rows = read_sample(text, delimiter, complete=complete)
        if profile is not None and profile.has_header is False:
            return _headerless_plan(rows, delimiter, fixed_names)
        return _headed_plan(rows, delimiter, fixed_names)
    except FileRejected:
        # A line that cannot be read explains a missing header better than its absence does.
        problem = sample_problem(text, delimiter or ",")
        if problem is not None:
            raise FileRejected(f"{NOT_RECOGNISED}: {problem}") from None
        raise


def _profile_columns(profile: MappingProfile | None) -> dict[str, str | int]:
    columns = dict(profile.columns) if profile else {}
    unknown = sorted(set(columns) - PROFILE_ROLES)
    if unknown:
        raise FileRejected(
            f"the mapping profile names unknown column role(s) {', '.join(unknown)}; "
            f"known roles: {', '.join(sorted(PROFILE_ROLES))}"
        )
    return columns


def _headerless_plan(
    rows: list[SampleRow], delimiter: str, fixed: dict[str, str | int]
) -> CsvPlan:
    named = sorted(role for role, where in fixed.items() if not isinstance(where, int))
    if named:
        raise FileRejected(
            "the mapping profile says the file has no header, so its columns must be 0-based "
            f"indexes, not names (role(s) {', '.join(named)})"
        )
    indexes = {role: int(where) for role, where in fixed.items()}
    columns = map_headers([], BANK_SYNONYMS, indexes)
    kind = "journal" if "entry" in indexes else "bank"
    _require_roles(kind, columns, None, [])
    data = [row for row in rows if any(cell.strip() for cell in row.cells)]
    return CsvPlan(kind, delimiter, None, [], 0, columns, data[:SNIFF_ROWS])


def _headed_plan(rows: list[SampleRow], delimiter: str, fixed: dict[str, str | int]) -> CsvPlan:
    best: tuple[int, int] | None = None
    for position, row in enumerate(rows[:HEADER_SEARCH_ROWS]):
        score = recognised_count(row.cells) + _profile_hits(row.cells, fixed)
        if score >= 2:
            plan = _plan_for_header(rows, position, delimiter, fixed)
            if plan is not None:
                return plan
        if score and (best is None or score > best[0]):
            best = (score, position)
    indexed = _plan_by_indexes(rows, delimiter, fixed)
    if indexed is not None:
        return indexed
    if best is not None and (best[0] >= 2 or not _starts_with_data(rows)):
        header = rows[best[1]]
        kind = _kind_of(rows, best[1], fixed)
        columns = _map_row(header.cells, kind, fixed)
        _require_roles(kind, columns, header.line, header.cells)
    raise FileRejected(_no_header_reason(rows))


def _plan_by_indexes(
    rows: list[SampleRow], delimiter: str, fixed: dict[str, str | int]
) -> CsvPlan | None:
    """With every column given by index, the first row is a header unless it holds a date."""
    date_index = fixed.get("date")
    if not isinstance(date_index, int) or any(isinstance(where, str) for where in fixed.values()):
        return None
    for position, row in enumerate(rows):
        if not any(cell.strip() for cell in row.cells):
            continue
        if date_index < len(row.cells) and read_any_date(row.cells[date_index]) is not None:
            return _headerless_plan(rows, delimiter, fixed)
        return _plan_for_header(rows, position, delimiter, fixed)
    return None


def _plan_for_header(
    rows: list[SampleRow], position: int, delimiter: str, fixed: dict[str, str | int]
) -> CsvPlan | None:
    header = rows[position]
    kind = _kind_of(rows, position, fixed)
    columns = _map_row(header.cells, kind, fixed)
    if not _has_required(kind, columns):
        return None
    if len(header.cells) > MAX_FIELDS_PER_ROW:
        raise FileRejected(
            f"the header on line {header.line} has {len(header.cells)} cells; "
            f"at most {MAX_FIELDS_PER_ROW} are read"
        )
    key = [fold(cell) for cell in header.cells]
    data = [
        row
        for row in rows[position + 1 :]
        if any(cell.strip() for cell in row.cells) and [fold(c) for c in row.cells] != key
    ]
    return CsvPlan(
        kind, delimiter, header.line, header.cells, position + 1, columns, data[:SNIFF_ROWS]
    )


def _kind_of(rows: list[SampleRow], position: int, fixed: dict[str, str | int]) -> str:
    """A journal needs entry, account and money columns and entries of several lines."""
    header = rows[position].cells
    columns = _map_row(header, "journal", fixed)
    if not _has_required("journal", columns):
        return "bank"
    entry = columns.single["entry"]
    values = [row.cells[entry].strip() for row in rows[position + 1 :] if len(row.cells) > entry]
    values = [value for value in values if value != header[entry].strip()]
    several_lines = "" in values or len(set(values)) < len(values)
    return "journal" if several_lines else "bank"


def _map_row(cells: list[str], kind: str, fixed: dict[str, str | int]) -> ColumnMap:
    synonyms = JOURNAL_SYNONYMS if kind == "journal" else BANK_SYNONYMS
    return map_headers(cells, synonyms, _resolve_fixed(cells, fixed))


def _resolve_fixed(cells: list[str], fixed: dict[str, str | int]) -> dict[str, int]:
    resolved: dict[str, int] = {}
    folded = [fold(cell) for cell in cells]
    for role, where in fixed.items():
        if isinstance(where, int):
            resolved[role] = where
            continue
        try:
            resolved[role] = folded.index(fold(where))
        except ValueError:
            raise FileRejected(
                f'the mapping profile maps {role} to column "{where}", but the header has: '
                f"{_shown_cells(cells)}"
            ) from None
    return resolved


def _profile_hits(cells: list[str], fixed: dict[str, str | int]) -> int:
    folded = {fold(cell) for cell in cells}
    return sum(1 for where in fixed.values() if isinstance(where, str) and fold(where) in folded)


def _has_required(kind: str, columns: ColumnMap) -> bool:
    return not _missing_roles(kind, columns)


def _missing_roles(kind: str, columns: ColumnMap) -> list[str]:
    missing = []
    if kind == "journal":
        missing += [role for role in ("entry", "account") if not columns.has(role)]
    if not columns.has("date"):
        missing.append("the date")
    money = columns.has("amount") or (columns.has("debit") and columns.has("credit"))
    if not money:
        missing.append("the amount (or debit and credit)")
    return missing


def _require_roles(kind: str, columns: ColumnMap, line: int | None, cells: list[str]) -> None:
    missing = _missing_roles(kind, columns)
    if not missing:
        return
    if line is None:
        raise FileRejected(
            "the mapping profile says the file has no header but gives no column index for "
            f"{' and '.join(missing)}"
        )
    shown = _shown_cells(cells)
    raise FileRejected(
        f"{NOT_RECOGNISED}: the header on line {line} ({shown}) has no column for "
        f"{' and '.join(missing)}; map it in the client's mapping profile"
    )


def _shown_cells(cells: list[str]) -> str:
    """Cells of a row for a message: the first ``SHOWN_HEADER_CELLS``, each cut short."""
    return listed([clipped(cell.strip()) for cell in cells], SHOWN_HEADER_CELLS)


def _first_filled(rows: list[SampleRow]) -> SampleRow | None:
    return next((row for row in rows if any(cell.strip() for cell in row.cells)), None)


def _starts_with_data(rows: list[SampleRow]) -> bool:
    """Whether the first non-blank row already holds a date, so the file has no header."""
    first = _first_filled(rows)
    return first is not None and any(read_any_date(cell) is not None for cell in first.cells[:3])


def _no_header_reason(rows: list[SampleRow]) -> str:
    first = _first_filled(rows)
    if first is None:
        return "file has no rows, only blank lines"
    if _starts_with_data(rows):
        shown = _shown_cells(first.cells)
        return (
            f"file has no header row: line {first.line} already holds data ({shown}); set "
            "has_header to false and the column indexes in the client's mapping profile"
        )
    return f"{NOT_RECOGNISED}: no header row naming a date and an amount column was found"
