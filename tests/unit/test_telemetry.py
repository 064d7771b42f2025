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


def test_traceparent_takes_the_first_valid_candidate():
    from shared.telemetry import traceparent

    valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    zero_trace = "00-" + "0" * 32 + "-b7ad6b7169203331-01"
    assert traceparent(None, "garbage", zero_trace, valid) == valid


def test_traceparent_starts_a_new_trace_when_none_is_valid():
    from shared.telemetry import traceparent

    made = traceparent(None, "")
    version, trace_id, parent_id, flags = made.split("-")
    assert (version, len(trace_id), len(parent_id), flags) == ("00", 32, 16, "01")
    assert traceparent(None) != made
