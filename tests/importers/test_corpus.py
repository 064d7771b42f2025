"""Every bank-csv, ofx and journal-csv file of the shared corpus against its expected outcome.

The table is ``corpus_expectations.EXPECTED``, shared with the end-to-end tests.
"""

from __future__ import annotations

from collections import Counter

import pytest

from shared.domain.imports import BankTxn, FileFormat, JournalLine, ParsedFile
from shared.importers import UnsupportedFile, parse_file
from tests.importers.corpus_expectations import CORPUS, EXPECTED, Expected, corpus_files


def _parse(key: str, expected: Expected) -> tuple[ParsedFile, list[BankTxn | JournalLine]]:
    with (CORPUS / key).open("rb") as stream:
        parsed = parse_file(stream, name=key, default_currency=expected.default_currency)
        return parsed, list(parsed.records)


def test_every_corpus_file_has_an_expectation() -> None:
    assert corpus_files() == sorted(EXPECTED)


@pytest.mark.parametrize("key", sorted(key for key, e in EXPECTED.items() if e.rejection))
def test_rejects_corpus_file_with_its_reason(key: str) -> None:
    expected = EXPECTED[key]
    with pytest.raises(UnsupportedFile) as caught:
        _parse(key, expected)
    assert str(caught.value) == expected.rejection
    assert caught.value.file_name == key


@pytest.mark.parametrize("key", sorted(key for key, e in EXPECTED.items() if not e.rejection))
def test_reads_corpus_file_as_expected(key: str) -> None:
    expected = EXPECTED[key]
    parsed, records = _parse(key, expected)

    assert parsed.format == expected.format
    assert len(records) == expected.records
    assert parsed.details["error_count"] == expected.row_errors == len(parsed.errors)
    dates = [record.booked_on for record in records]
    assert (min(dates, default=None), max(dates, default=None)) == (
        expected.earliest,
        expected.latest,
    )
    assert tuple(parsed.balances) == expected.balances
    if expected.format == FileFormat.JOURNAL_CSV:
        assert _journal_sums(records) == (expected.debits, expected.credits)
    else:
        assert _bank_sums(records) == expected.totals


def _bank_sums(records: list[BankTxn | JournalLine]) -> dict[str, int]:
    sums: Counter[str] = Counter()
    for record in records:
        assert isinstance(record, BankTxn)
        sums[record.currency] += record.amount_minor
    return dict(sums)


def _journal_sums(records: list[BankTxn | JournalLine]) -> tuple[dict[str, int], dict[str, int]]:
    debits: Counter[str] = Counter()
    credits: Counter[str] = Counter()
    for record in records:
        assert isinstance(record, JournalLine)
        assert (record.debit_minor > 0) != (record.credit_minor > 0)
        debits[record.currency] += record.debit_minor
        credits[record.currency] += record.credit_minor
    return dict(debits), dict(credits)
