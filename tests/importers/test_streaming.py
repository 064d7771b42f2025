"""Large bank CSVs and OFX files are streamed: memory stays flat however many rows they have."""

from __future__ import annotations

import io
import tracemalloc

import pytest

from shared.importers import parse_file


def _records_and_peak(data: io.BytesIO, name: str) -> tuple[int, int]:
    """Read every record of the file in ``data``; return their count and peak traced bytes."""
    data.seek(0)
    tracemalloc.start()
    try:
        parsed = parse_file(data, name=name, default_currency="USD")
        count = sum(1 for _ in parsed.records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, peak


def _peak_bytes_reading(rows: int) -> tuple[int, int]:
    """Parse a generated file of ``rows`` rows; return records read and peak traced bytes."""
    data = io.BytesIO()
    data.write(b"Date,Description,Amount\n")
    for i in range(rows):
        data.write(f"2024-01-{1 + i % 28:02d},Payment {i},-{i % 1000}.{i % 100:02d}\n".encode())
    return _records_and_peak(data, "big.csv")


@pytest.mark.slow
def test_reads_five_times_the_rows_in_the_same_memory() -> None:
    small_count, small_peak = _peak_bytes_reading(40_000)
    large_count, large_peak = _peak_bytes_reading(200_000)
    assert (small_count, large_count) == (40_000, 200_000)
    assert large_peak < small_peak * 1.2


def _peak_bytes_reading_ofx(transactions: int) -> tuple[int, int]:
    """Parse an OFX statement of ``transactions``; return records read and peak traced bytes."""
    data = io.BytesIO()
    data.write(b"OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\n\n<OFX><BANKMSGSRSV1><STMTTRNRS>")
    data.write(
        b"<STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>1<ACCTID>2</BANKACCTFROM><BANKTRANLIST>\n"
    )
    for i in range(transactions):
        data.write(
            f"<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>202401{1 + i % 28:02d}"
            f"<TRNAMT>-{i % 1000}.{i % 100:02d}<FITID>F{i}<NAME>Payment {i}</STMTTRN>\n".encode()
        )
    data.write(b"</BANKTRANLIST></STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>\n")
    return _records_and_peak(data, "big.ofx")


@pytest.mark.slow
def test_reads_four_times_the_ofx_transactions_in_the_same_memory() -> None:
    # Both files are larger than a piece and than the chunks the encoding checks read.
    small_count, small_peak = _peak_bytes_reading_ofx(20_000)
    large_count, large_peak = _peak_bytes_reading_ofx(80_000)
    assert (small_count, large_count) == (20_000, 80_000)
    assert large_peak < small_peak * 1.2
