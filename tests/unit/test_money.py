"""Money is exact: integer minor units scaled by the currency's ISO 4217 exponent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.domain.money import Money, exponent, to_minor
from shared.errors import ValidationError


@pytest.mark.parametrize(("currency", "places"), [("USD", 2), ("JPY", 0), ("KWD", 3), ("eur", 2)])
def test_exponent_follows_iso_4217(currency, places):
    assert exponent(currency) == places


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("19.99", "USD", 1999), ("2000", "JPY", 2000), ("1.234", "KWD", 1234), ("-0.01", "EUR", -1)],
)
def test_parses_major_units_to_exact_minor_units(text, currency, minor):
    assert Money.parse(text, currency) == Money(minor, currency.upper())


def test_refuses_more_decimals_than_the_currency_has():
    with pytest.raises(ValidationError, match="more decimal places than USD allows"):
        to_minor(Decimal("1.005"), "USD")
    with pytest.raises(ValidationError, match="more decimal places than JPY allows"):
        Money.parse("20.5", "JPY")


@pytest.mark.parametrize("code", ["XXX1", "ABC", ""])
def test_refuses_unknown_currency_codes(code):
    with pytest.raises(ValidationError, match="unknown currency code"):
        exponent(code)


def test_refuses_currencies_without_minor_units():
    with pytest.raises(ValidationError, match="XAU has no minor unit"):
        exponent("XAU")


@pytest.mark.parametrize("text", ["NaN", "Infinity", "1e", "12,50"])
def test_refuses_text_that_is_not_a_finite_number(text):
    with pytest.raises(ValidationError):
        Money.parse(text, "USD")


def test_renders_with_the_currency_scale():
    assert str(Money(123456, "KWD")) == "123.456 KWD"
    assert str(Money(-5, "JPY")) == "-5 JPY"
    assert Money(1999, "USD").to_decimal() == Decimal("19.99")
