"""Bank number dialects to integer minor units: decimal comma or point, grouping, signs, symbols.

Handles ``1.234,56``, ``1,000.00``, ``11'373.94``, ``1 234,56``, ``(12.00)``, ``12.00-``,
``-$7,971.39``, ``$-5.00``, ``-123,45 €``, ``CHF 10.00`` and ``12.00 CR``/``DR``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from shared.domain.money import exponent as currency_exponent
from shared.errors import ValidationError


class AmountError(ValueError):
    """A field is not an amount; ``reason`` is the sentence a row error carries."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Amount:
    """A parsed amount before scaling: sign, integer and fraction digits, and a stated currency.

    ``currency`` is the ISO code a sign or code in the field names (``€`` -> ``EUR``), ``""``
    for a sign that names no single currency (``$``, ``kr``), or ``None`` when there is none.
    """

    negative: bool
    whole: str
    fraction: str
    currency: str | None


# Signs that name one currency; "" marks signs shared by several currencies.
_SIGNS: dict[str, str] = {
    "€": "EUR",
    "£": "GBP",
    "₹": "INR",
    "₩": "KRW",
    "₪": "ILS",
    "₺": "TRY",
    "₽": "RUB",
    "₫": "VND",
    "₱": "PHP",
    "฿": "THB",
    "₴": "UAH",
    "₦": "NGN",
    "zł": "PLN",
    "kč": "CZK",
    "ft": "HUF",
    "fr.": "CHF",
    "sfr.": "CHF",
    "us$": "USD",
    "c$": "CAD",
    "ca$": "CAD",
    "a$": "AUD",
    "au$": "AUD",
    "nz$": "NZD",
    "hk$": "HKD",
    "s$": "SGD",
    "r$": "BRL",
    # Limitation: "$", "¥" and "kr" name no single currency, so such rows take the profile's
    # or the default currency; a USD amount in a CAD client's file needs a currency column.
    "$": "",
    "¥": "",
    "kr": "",
    "kr.": "",
}
_DEBIT_CREDIT_SUFFIX = {"cr": False, "dr": True}

MAX_AMOUNT_DIGITS = 15
"""Most digits an amount may have before its decimal separator (leading zeros aside)."""

TOO_LARGE = (
    f"amount is too large: more than {MAX_AMOUNT_DIGITS} digits before the decimal separator"
)
NON_ASCII_DIGITS = "has digits other than 0-9; amounts are read in ASCII digits only"

_TIDY = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u2212": "-"})
# Whitespace runs are possessive (*+): spaces belong to no group, and letting the engine share
# a run between neighbouring \s* makes a field like "(" plus a few hundred spaces take minutes.
_GENERAL = re.compile(
    r"""
    (?P<open>\()?\s*+
    (?P<s1>[-+])?\s*+
    (?P<c1>[^\d\s()+\-.,'’]{1,4})?\s*+
    (?P<s2>[-+])?\s*+
    (?P<num>[0-9][0-9.,'’ ]*[0-9]|[0-9]|[.,][0-9]+)
    \s*+(?P<s3>[-+])?\s*+
    (?P<c2>[^\d\s()+\-.,'’]{1,4}\.?)?\s*+
    (?P<s4>[-+])?\s*+
    (?P<close>\))?
    """,
    re.VERBOSE,
)
_GROUP_SEPARATORS = {".": ",'’ ", ",": ".'’ "}
_POWERS_OF_TEN: list[int] = [10**power for power in range(19)]


def not_a_number(decimal: str) -> str:
    """The row-error reason for a field that does not read as a number in this dialect."""
    return f'not a number; decimal separator is "{decimal}"'


def parse_amount(text: str, decimal: str) -> Amount:
    """Parse one amount field in full generality.

    Args:
        text: the raw field.
        decimal: the file's decimal separator, ``"."`` or ``","``; the other one, apostrophes
            and spaces are accepted only as thousands separators in groups of three.

    Raises:
        AmountError: the field is empty or is not an amount in this dialect.
    """
    tidy = text.translate(_TIDY).strip()
    if not tidy:
        raise AmountError("empty; an amount is required")
    match = _GENERAL.fullmatch(tidy)
    if match is None or bool(match["open"]) != bool(match["close"]):
        if not tidy.isascii() and any(ch.isdigit() and not ch.isascii() for ch in tidy):
            raise AmountError(NON_ASCII_DIGITS)
        raise AmountError(not_a_number(decimal))
    negative = _sign(match, decimal)
    currency, suffix_negative = _marks(match["c1"], match["c2"], decimal)
    if suffix_negative is not None:
        negative = suffix_negative if not negative else True
    whole, fraction = _split_number(match["num"], decimal)
    return Amount(negative, whole, fraction, currency)


def to_minor(amount: Amount, exponent: int, currency: str) -> int:
    """Scale a parsed amount to minor units of ``currency`` exactly.

    Raises:
        AmountError: the amount has more than ``MAX_AMOUNT_DIGITS`` digits before the decimal
            separator, or more decimals than the currency has minor units.
    """
    # Checked before int(): Python refuses to convert strings of over 4,300 digits.
    whole = amount.whole.lstrip("0")
    if len(whole) > MAX_AMOUNT_DIGITS:
        raise AmountError(TOO_LARGE)
    fraction = amount.fraction
    if len(fraction) > exponent:
        if fraction[exponent:].strip("0"):
            raise AmountError(f"has more decimal places than {currency} allows ({exponent})")
        fraction = fraction[:exponent]
    value = int(whole or "0") * _POWERS_OF_TEN[exponent]
    if exponent:
        value += int(fraction.ljust(exponent, "0"))
    return -value if amount.negative else value


def detect_decimal(values: Iterable[str], places: int = 2) -> str | None:
    """Work out the decimal separator from sample amounts; ``None`` when nothing tells.

    Each value votes as ``decimal_vote`` says; the majority wins, a tie says nothing.

    Args:
        values: raw amount fields.
        places: decimal places of the amounts' currency (3 makes ``12,500`` a vote for ``,``).
    """
    votes = {".": 0, ",": 0}
    for value in values:
        vote = decimal_vote(value, places)
        if vote:
            votes[vote] += 1
    if votes["."] == votes[","]:
        return None
    return "." if votes["."] > votes[","] else ","


def decimal_vote(value: str, places: int = 2) -> str | None:
    """The decimal separator one amount shows, or ``None`` when it shows none.

    A value with both ``.`` and ``,`` decides by whichever comes last; a single separator
    followed by other than three digits is a decimal separator; repeated separators are
    grouping. ``1,000`` and ``1.000`` say nothing, except in a currency of three decimal
    places (``places`` 3), where they are written that way and so vote for their separator.
    """
    vote = _decimal_vote(value)
    if vote is None and places == 3:
        return ambiguous_separator(value)
    return vote


def ambiguous_separator(value: str) -> str | None:
    """The separator of an amount that reads both as grouped and as decimal, else ``None``.

    That is one ``.`` or ``,`` followed by exactly three digits (``1.000``, ``-12,500``):
    a thousand, or one with three decimals.
    """
    digits = _digits_and_separators(value)
    for separator, other in ((".", ","), (",", ".")):
        if digits.count(separator) == 1 and other not in digits:
            whole, tail = digits.split(separator)
            return separator if whole and len(tail) == 3 else None
    return None


class AmountReader:
    """Reads amounts of one detected dialect.

    Plain numbers (``-1234,5``) and numbers grouped in threes (``-1.234,56``) take
    precompiled fast paths; anything else (signs, symbols, parentheses) the general parser.
    """

    __slots__ = ("_grouped", "_plain", "decimal")

    def __init__(self, decimal: str) -> None:
        self.decimal = decimal
        point = re.escape(decimal)
        self._plain = re.compile(rf"(-?)([0-9]+)(?:{point}([0-9]*))?").fullmatch
        separators = "[,'’ \u00a0]" if decimal == "." else "[.'’ \u00a0]"
        self._grouped = re.compile(
            rf"\s*+(-?)([0-9]{{1,3}}({separators})[0-9]{{3}}(?:\3[0-9]{{3}})*+)(?:{point}([0-9]*))?\s*"
        ).fullmatch

    def read(self, text: str) -> Amount:
        """Parse ``text``; see ``parse_amount`` for the general rules."""
        match = self._plain(text)
        if match is not None:
            return Amount(match[1] == "-", match[2], match[3] or "", None)
        match = self._grouped(text)
        if match is not None:
            return Amount(match[1] == "-", match[2].replace(match[3], ""), match[4] or "", None)
        return parse_amount(text, self.decimal)


def _sign(match: re.Match[str], decimal: str) -> bool:
    signs = [match[name] for name in ("s1", "s2", "s3", "s4") if match[name]]
    if len(signs) + (1 if match["open"] else 0) > 1:
        raise AmountError(not_a_number(decimal))
    return bool(match["open"]) or signs == ["-"]


def _marks(before: str | None, after: str | None, decimal: str) -> tuple[str | None, bool | None]:
    """Read the currency sign or code and a CR/DR suffix around the number."""
    currency: str | None = None
    suffix_negative: bool | None = None
    for mark in (before, after):
        if not mark:
            continue
        key = mark.lower()
        if mark is after and key in _DEBIT_CREDIT_SUFFIX:
            suffix_negative = _DEBIT_CREDIT_SUFFIX[key]
        elif key in _SIGNS:
            currency = _SIGNS[key]
        elif _is_currency_code(mark):
            currency = mark.upper()
        else:
            raise AmountError(not_a_number(decimal))
    return currency, suffix_negative


def currency_for_mark(mark: str) -> str | None:
    """ISO code for a currency sign or code (``€`` -> ``EUR``, ``usd`` -> ``USD``).

    Returns ``""`` for signs shared by several currencies (``$``, ``¥``, ``kr``) and ``None``
    for text that is neither.
    """
    key = mark.strip().lower()
    if key in _SIGNS:
        return _SIGNS[key]
    return key.upper() if _is_currency_code(key) else None


def _is_currency_code(mark: str) -> bool:
    if len(mark) != 3 or not mark.isalpha():
        return False
    try:
        currency_exponent(mark)
    except ValidationError:
        return False
    return True


def _split_number(number: str, decimal: str) -> tuple[str, str]:
    if number.count(decimal) > 1:
        raise AmountError(not_a_number(decimal))
    whole, _, fraction = number.partition(decimal)
    if fraction and not _ascii_digits(fraction):
        raise AmountError(not_a_number(decimal))
    if _ascii_digits(whole) or not whole:
        return whole, fraction
    return _ungroup(whole, decimal), fraction


def _ungroup(whole: str, decimal: str) -> str:
    # Limitation: Indian lakh grouping (1,00,000.00) is refused; such amounts are row errors.
    separators = {ch for ch in whole if not "0" <= ch <= "9"}
    if len(separators) != 1 or not separators <= set(_GROUP_SEPARATORS[decimal]):
        raise AmountError(not_a_number(decimal))
    groups = whole.split(separators.pop())
    if not 1 <= len(groups[0]) <= 3 or any(len(group) != 3 for group in groups[1:]):
        raise AmountError(not_a_number(decimal))
    return "".join(groups)


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _digits_and_separators(value: str) -> str:
    return "".join(ch for ch in value if "0" <= ch <= "9" or ch in ".,")


def _decimal_vote(value: str) -> str | None:
    digits = _digits_and_separators(value)
    last_dot, last_comma = digits.rfind("."), digits.rfind(",")
    if last_dot >= 0 and last_comma >= 0:
        return "." if last_dot > last_comma else ","
    for separator in (".", ","):
        if separator in digits:
            if digits.count(separator) > 1:
                return "," if separator == "." else "."
            tail = digits.rsplit(separator, 1)[1]
            return separator if len(tail) != 3 and tail else None
    return None
