"""Log lines never carry an account number, and stay searchable by client id."""

from __future__ import annotations

from shared.telemetry import redact


def test_masks_account_and_card_numbers_to_their_last_four_digits():
    assert redact("account 123456789012 paid") == "account ********9012 paid"
    assert redact("card 4111 1111 1111 1111") == "card ***************1111"


def test_keeps_client_ids_whole():
    line = "imported for 00000000-0000-0000-0000-000000001234 from 123456789012"
    assert redact(line) == ("imported for 00000000-0000-0000-0000-000000001234 from ********9012")


def test_leaves_short_numbers_and_dates_alone():
    line = "3 rows on line 42, 1999 cents, booked 2026-03-05 12:30:45, total 1234567.89"
    assert redact(line) == line
