"""Large bank CSVs are streamed: memory stays flat however many rows the file has."""

from __future__ import annotations

import io
import tracemalloc

import pytest

from shared.importers import parse_file


def _peak_bytes_reading(rows: int) -> tuple[int, int]:
    """Parse a generated file of ``rows`` rows; return records read and peak traced bytes."""
    data = io.BytesIO()
    data.write(b"Date,Description,Amount\n")
    for i in range(rows):
        data.write(f"2024-01-{1 + i % 28:02d},Payment {i},-{i % 1000}.{i % 100:02d}\n".encode())
    tracemalloc.start()
    try:
        parsed = parse_file(data, name="big.csv", default_currency="USD")
        count = sum(1 for _ in parsed.records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, peak


@pytest.mark.slow
def test_reads_five_times_the_rows_in_the_same_memory() -> None:
    small_count, small_peak = _peak_bytes_reading(40_000)
    large_count, large_peak = _peak_bytes_reading(200_000)
    assert (small_count, large_count) == (40_000, 200_000)
    assert large_peak < small_peak * 1.2
