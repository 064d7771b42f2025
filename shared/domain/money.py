"""Money as integer minor units plus an ISO 4217 code, and the one place text becomes money.

The currency's exponent (JPY 0, USD 2, KWD 3) decides the scale. Amounts are parsed with
``Decimal`` and never pass through ``float``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import iso4217

from shared.errors import ValidationError


@lru_cache(maxsize=512)
def exponent(currency: str) -> int:
    """Return the ISO 4217 minor-unit exponent of ``currency``.

    Raises:
        ValidationError: the code is not an ISO 4217 currency with minor units
            (unknown codes, and metals or funds such as XAU that have none).
    """
    code = currency.strip().upper()
    try:
        found = iso4217.Currency(code)
    except ValueError:
        raise ValidationError(f"unknown currency code {currency!r}") from None
    if found.exponent is None:
        raise ValidationError(f"currency {code} has no minor unit; it cannot hold money")
    return int(found.exponent)


def normalise_currency(currency: str) -> str:
    """Return the upper-case ISO code, after checking that it is one."""
    code = currency.strip().upper()
    exponent(code)
    return code


def to_minor(amount: Decimal, currency: str) -> int:
    """Convert a decimal major-unit amount to integer minor units, exactly.

    Raises:
        ValidationError: the amount has more decimals than the currency allows
            (``1.005`` USD), because rounding money silently is never right.
    """
    scaled = amount.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValidationError(
            f"{amount} has more decimal places than {currency.upper()} allows "
            f"({exponent(currency)})"
        )
    return int(scaled)


def parse_decimal(text: str) -> Decimal:
    """Parse a plain decimal string (``-1234.50``); see ``shared.importers`` for bank formats.

    Raises:
        ValidationError: the text is not a finite number.
    """
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValidationError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ValidationError(f"{text!r} is not a finite number")
    return value


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: integer minor units of one ISO 4217 currency."""

    amount_minor: int
    currency: str

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """Build Money from a plain decimal string in major units (``"19.99"``)."""
        code = normalise_currency(currency)
        return cls(to_minor(parse_decimal(text), code), code)

    def to_decimal(self) -> Decimal:
        """Return the amount in major units, exact."""
        return Decimal(self.amount_minor).scaleb(-exponent(self.currency))

    def __str__(self) -> str:
        places = exponent(self.currency)
        return f"{self.to_decimal():.{places}f} {self.currency}"
