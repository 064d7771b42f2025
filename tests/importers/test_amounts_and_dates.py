"""The number and date readers on their own: grouping rules, signs, marks and month names."""

from __future__ import annotations

from datetime import date

import pytest

from shared.importers.amounts import (
    AmountError,
    AmountReader,
    detect_decimal,
    parse_amount,
    to_minor,
)
from shared.importers.dates import DateError, DateReader, detect_date_format, month_number


@pytest.mark.parametrize(
    ("text", "decimal", "minor", "currency"),
    [
        ("1,234.56", ".", 123_456, None),
        ("1.234,56", ",", 123_456, None),
        ("-1 234,5", ",", -123_450, None),
        ("(1,000)", ".", -100_000, None),
        ("12.00 CR", ".", 1200, None),
        ("12.00 DR", ".", -1200, None),
        ("CHF 10.00", ".", 1000, "CHF"),
        ("10,00 EUR", ",", 1000, "EUR"),
        ("£3.50", ".", 350, "GBP"),
        ("US$ 3.50", ".", 350, "USD"),
        ("$3.50", ".", 350, ""),
        ("+5", ".", 500, None),
        (".5", ".", 50, None),
    ],
)
def test_reads_amount_dialects(text: str, decimal: str, minor: int, currency: str | None) -> None:
    amount = parse_amount(text, decimal)
    assert (to_minor(amount, 2, "USD"), amount.currency) == (minor, currency)


@pytest.mark.parametrize(
    ("text", "decimal"),
    [
        ("12,34", "."),
        ("1,00,000.00", "."),
        ("1.234,56", "."),
        ("1,234.56", ","),
        ("--5", "."),
        ("-5-", "."),
        ("(5", "."),
        ("5 apples", "."),
        ("1,2,3", ","),
    ],
)
def test_refuses_what_is_not_an_amount_in_the_dialect(text: str, decimal: str) -> None:
    with pytest.raises(AmountError, match="not a number"):
        parse_amount(text, decimal)


@pytest.mark.parametrize(
    ("text", "decimal"),
    [
        ("-1.234.567,89", ","),
        ("1 234,5", ","),
        ("11'373.94", "."),
        ("-1,000", "."),
        ("1234.5", "."),
        ("-0,01", ","),
        ("1,234.56", ","),
        ("12,34", "."),
    ],
)
def test_reads_the_same_through_the_fast_paths(text: str, decimal: str) -> None:
    try:
        expected: object = parse_amount(text, decimal)
    except AmountError as exc:
        expected = exc.reason
    try:
        found: object = AmountReader(decimal).read(text)
    except AmountError as exc:
        found = exc.reason
    assert found == expected


def test_refuses_an_empty_amount() -> None:
    with pytest.raises(AmountError, match="empty; an amount is required"):
        parse_amount("  ", ".")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1.234,56", "12,00"], ","),
        (["1,234.56", "-7.5"], "."),
        (["1,000", "2,000"], None),
        (["1.000.000"], ","),
        (["1,000,000"], "."),
        (["11'373.94"], "."),
        (["50000"], None),
    ],
)
def test_detects_the_decimal_separator(values: list[str], expected: str | None) -> None:
    assert detect_decimal(values) == expected


@pytest.mark.parametrize(
    ("name", "month"),
    [("Jan", 1), ("März", 3), ("mrt", 3), ("juin", 6), ("juil.", 7), ("août", 8), ("Dez", 12)],
)
def test_knows_month_names_in_five_languages(name: str, month: int) -> None:
    assert month_number(name) == month


def test_leaves_the_order_open_when_no_date_settles_it() -> None:
    found = detect_date_format(["01/02/2024", "03/04/2024"])
    assert found is not None
    assert (found.kind, found.order) == ("numeric", "")


def test_refuses_a_day_that_does_not_exist() -> None:
    found = detect_date_format(["31.01.2024"])
    assert found is not None
    reader = DateReader(found)
    assert reader.read("29.02.2024") == date(2024, 2, 29)
    with pytest.raises(DateError, match=r"not a date; expected DD\.MM\.YYYY"):
        reader.read("30.02.2024")


class TestHostileValues:
    def test_refuses_an_amount_with_thousands_of_digits_before_converting_it(self) -> None:
        amount = AmountReader(".").read("1" * 5000)
        with pytest.raises(AmountError, match="amount is too large"):
            to_minor(amount, 2, "USD")

    def test_reads_fifteen_digits_and_leading_zeros(self) -> None:
        assert to_minor(AmountReader(".").read("0" * 5000 + "9" * 15), 0, "JPY") == int("9" * 15)

    @pytest.mark.parametrize("text", ["١٢٣", "١٢٣.٤٥", "１２３", "-１,２３４.００"])
    def test_refuses_digits_other_than_ascii_in_amounts(self, text: str) -> None:
        with pytest.raises(AmountError, match="digits other than 0-9"):
            AmountReader(".").read(text)

    @pytest.mark.parametrize("text", ["٢٠٢٤-٠١-٠٥", "０５.０１.２０２４"])
    def test_refuses_digits_other_than_ascii_in_dates(self, text: str) -> None:
        found = detect_date_format(["05.01.2024"] if "." in text else ["2024-01-05"])
        assert found is not None
        with pytest.raises(DateError, match="digits other than 0-9"):
            DateReader(found).read(text)

    @pytest.mark.parametrize("text", ["0001-01-05", "9999-12-31", "1899-12-31", "2101-01-01"])
    def test_refuses_years_no_booking_has(self, text: str) -> None:
        found = detect_date_format(["2024-01-05"])
        assert found is not None
        with pytest.raises(DateError, match=r"outside 1900-2100; not a booking date"):
            DateReader(found).read(text)

    def test_reads_the_first_and_last_plausible_years(self) -> None:
        found = detect_date_format(["2024-01-05"])
        assert found is not None
        reader = DateReader(found)
        assert (reader.read("1900-01-01"), reader.read("2100-12-31")) == (
            date(1900, 1, 1),
            date(2100, 12, 31),
        )

    def test_refuses_a_long_run_of_spaces_inside_an_amount_at_once(self) -> None:
        # Backtracking over the spaces took minutes with 400 of them; this must be instant.
        with pytest.raises(AmountError):
            parse_amount("(" + " " * 5000 + "x", ".")

    @pytest.mark.parametrize(
        ("values", "places", "expected"),
        [
            (["-12,500", "3,250"], 3, ","),
            (["-12.500"], 3, "."),
            (["-12,500"], 2, None),
        ],
    )
    def test_takes_three_decimals_as_decimal_in_a_three_place_currency(
        self, values: list[str], places: int, expected: str | None
    ) -> None:
        assert detect_decimal(values, places) == expected
