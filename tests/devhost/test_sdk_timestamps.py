"""The fast history-timestamp reader answers exactly what dateutil answers."""

from __future__ import annotations

import importlib
import random
from datetime import UTC, datetime, timedelta

import pytest
from dateutil.parser import parse as dateutil_parse

from devhost import sdk_timestamps
from devhost.durable import stamp


def test_engine_stamps_read_the_same_as_dateutil_reads_them():
    fast = sdk_timestamps.fast_parser(dateutil_parse)
    rng = random.Random(7)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(500):
        moment = base + timedelta(microseconds=rng.randrange(10**14))
        text = stamp(moment)
        got, want = fast(text), dateutil_parse(text)
        assert got == want
        assert got.tzinfo == want.tzinfo
        assert str(got) == str(want)


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:00:00.5Z",
        "2026-03-01T10:00:00+02:00",
        "2026-03-01 10:00:00",
        "March 1, 2026",
    ],
)
def test_other_forms_are_read_as_dateutil_reads_them(text: str):
    fast = sdk_timestamps.fast_parser(dateutil_parse)
    assert fast(text) == dateutil_parse(text)
    assert str(fast(text)) == str(dateutil_parse(text))


def test_install_puts_the_reader_in_the_sdk_once():
    module = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
    sdk_timestamps.install()
    installed = module.dt_parse
    sdk_timestamps.install()
    assert module.dt_parse is installed
    assert installed.__wrapped__ is dateutil_parse
    event = module.HistoryEvent(
        EventType=12, EventId=-1, IsPlayed=False, Timestamp="2026-12-04T23:26:36.123456Z"
    )
    assert event.timestamp == dateutil_parse("2026-12-04T23:26:36.123456Z")
