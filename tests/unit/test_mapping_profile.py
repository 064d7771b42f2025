"""A client's mapping profile is checked field by field when it is set, not at import."""

from __future__ import annotations

import pytest

from shared.domain.imports import MappingProfile
from shared.errors import ValidationError


def test_accepts_a_full_profile():
    profile = MappingProfile.from_json(
        {
            "columns": {"date": 0, "description": "Payee", "amount": 2},
            "has_header": False,
            "date_order": "DMY",
            "decimal_separator": ",",
            "delimiter": ";",
            "encoding": "cp1252",
            "currency": "eur",
            "debit_is_negative": True,
        }
    )
    assert profile.columns["date"] == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"date_order": "DDMM"}, "date_order: must be one of DMY, MDY, YMD"),
        ({"encoding": "rot13"}, "encoding: 'rot13' is not a text encoding"),
        ({"encoding": "base64"}, "encoding: 'base64' is not a text encoding"),
        ({"encoding": "klingon"}, "encoding: 'klingon' is not a known text encoding"),
        ({"currency": "XAU"}, "currency: currency XAU has no minor unit"),
        ({"currency": "dollars"}, "currency: unknown currency code"),
        ({"columns": {"date": 10**30}}, "columns: date index must be from 0 to 999"),
        ({"columns": {"date": "A", "amount": "a"}}, "amount and date name the same column"),
        ({"columns": {"colour": 1}}, "columns: unknown role(s) colour"),
        ({"has_header": "no"}, "has_header: must be true or false"),
        ({"delimeter": ";"}, "unknown mapping profile field(s) delimeter"),
        ([1, 2], "a mapping profile must be a JSON object"),
    ],
)
def test_refuses_a_wrong_field_and_names_it(data, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MappingProfile.from_json(data)
