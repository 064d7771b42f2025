"""What a parse reports about the file as it goes: row errors (capped), skipped lines, and
the helpers that keep lists and raw values in messages short.
"""

from __future__ import annotations

from shared.domain.imports import RowError

MAX_STORED_ERRORS = 1000
"""Row errors kept in ``ParsedFile.errors``; all are counted in ``details["error_count"]``."""

MAX_VALUE_CHARS = 200
"""Raw values in row errors are cut to this many characters."""


class ErrorLog:
    """Appends row errors to a parsed file, keeping the first ``MAX_STORED_ERRORS``.

    ``details["error_count"]`` always holds the full count, and ``details["skipped"]`` the
    number of lines skipped per reason, so the report is right even while records are read.
    """

    __slots__ = ("_details", "_errors", "count", "skipped")

    def __init__(self, errors: list[RowError], details: dict[str, object]) -> None:
        self._errors = errors
        self._details = details
        self.count = 0
        self.skipped: dict[str, int] = {}
        details["error_count"] = 0
        details["skipped"] = self.skipped

    def add(self, line: int | None, column: str | None, value: str | None, reason: str) -> None:
        """Record one problem; ``value`` is cut to ``MAX_VALUE_CHARS``."""
        self.count += 1
        self._details["error_count"] = self.count
        if len(self._errors) < MAX_STORED_ERRORS:
            shown = value[:MAX_VALUE_CHARS] if value is not None else None
            self._errors.append(RowError(line, column, shown, reason))

    def skip(self, reason: str, lines: int = 1) -> None:
        """Count lines that are not transactions and are no error (blank, footer...)."""
        if lines > 0:
            self.skipped[reason] = self.skipped.get(reason, 0) + lines


MAX_LISTED_ITEMS = 10
"""Items a rejection reason lists before it says how many more there are."""

MAX_SHOWN_CHARS = 40
"""Characters of one raw value a rejection reason quotes."""


def listed(items: list[str], limit: int = MAX_LISTED_ITEMS) -> str:
    """Join items with commas for a message, naming only the first ``limit`` of them.

    ``listed(["A", "B", "C"], 2)`` gives ``A, B and 1 more``.
    """
    shown = ", ".join(items[:limit])
    rest = len(items) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def clipped(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """A raw value cut to ``limit`` characters for a message, marked with ``...`` when cut."""
    return text if len(text) <= limit else text[:limit] + "..."
