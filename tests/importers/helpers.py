"""Small helpers for importer tests: parse bytes held in memory."""

from __future__ import annotations

import io

from shared.domain.imports import BankTxn, JournalLine, MappingProfile, ParsedFile
from shared.importers import parse_file


def parse_bytes(
    data: bytes,
    *,
    currency: str = "USD",
    profile: MappingProfile | None = None,
    name: str = "upload.csv",
) -> tuple[ParsedFile, list[BankTxn]]:
    """Parse ``data`` and read all its bank records."""
    parsed = parse_file(io.BytesIO(data), name=name, default_currency=currency, profile=profile)
    records = list(parsed.records)
    bank = [record for record in records if isinstance(record, BankTxn)]
    assert len(bank) == len(records)
    return parsed, bank


def parse_journal(
    data: bytes, *, currency: str = "USD", profile: MappingProfile | None = None
) -> tuple[ParsedFile, list[JournalLine]]:
    """Parse ``data`` and read all its journal lines."""
    parsed = parse_file(
        io.BytesIO(data), name="journal.csv", default_currency=currency, profile=profile
    )
    records = list(parsed.records)
    lines = [record for record in records if isinstance(record, JournalLine)]
    assert len(lines) == len(records)
    return parsed, lines


def amounts(records: list[BankTxn]) -> list[int]:
    """The signed minor amounts of bank records, in file order."""
    return [record.amount_minor for record in records]
