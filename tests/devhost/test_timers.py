"""Timer triggers: NCRONTAB schedules with seconds, %SETTING% schedules, run on start-up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from azure.functions.timer import TimerRequest

from devhost.discovery import TIMER_TRIGGER
from devhost.errors import ConfigError
from devhost.invoke import Invoker
from devhost.timers import Schedule, TimerRunner, time_zone, timer_jobs
from tests.devhost.conftest import wait_for

START = datetime(2026, 3, 2, 8, 59, 58, 500000, tzinfo=UTC)


def test_per_second_timer_fires_each_second_and_startup_timer_once(
    fixture_app, calls, loop_thread
):
    jobs = timer_jobs(
        fixture_app.by_trigger(TIMER_TRIGGER), {"FX_TICK_SCHEDULE": "* * * * * *"}, UTC
    )
    invoker = Invoker(4, str(fixture_app.script_path.parent))
    stop = asyncio.Event()
    ticks_before = len(calls["tick"])
    startups_before = len(calls["startup_tick"])
    running = asyncio.run_coroutine_threadsafe(
        TimerRunner(jobs, invoker).run(stop), loop_thread.loop
    )
    try:
        wait_for(lambda: len(calls["tick"]) >= ticks_before + 3, 10, "three ticks")
    finally:
        loop_thread.loop.call_soon_threadsafe(stop.set)
        running.result(timeout=10)
        invoker.shutdown(wait=False)

    ticks = calls["tick"][ticks_before:]
    assert all(t["kind"] is TimerRequest and t["past_due"] is False for t in ticks)
    nexts = [t["status"]["Next"] for t in ticks]
    assert len(set(nexts)) == len(nexts)
    assert len(calls["startup_tick"]) == startups_before + 1
    assert calls["startup_tick"][-1]["past_due"] is False


class TestSchedule:
    def test_six_fields_start_with_seconds(self):
        assert Schedule.parse("*/15 * * * * *", {}).next_after(START) == START.replace(
            second=0, microsecond=0
        ) + timedelta(minutes=1)

    def test_weekday_morning_schedule(self):
        schedule = Schedule.parse("0 30 9 * * 1-5", {})
        assert schedule.next_after(START) == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)

    def test_setting_reference(self):
        schedule = Schedule.parse("%NIGHTLY%", {"NIGHTLY": "0 0 2 * * *"})
        assert schedule.next_after(START) == datetime(2026, 3, 3, 2, 0, tzinfo=UTC)

    def test_timespan_interval(self):
        assert Schedule.parse("00:05:00", {}).next_after(START) == START + timedelta(minutes=5)

    def test_time_zone_from_website_time_zone(self):
        schedule = Schedule.parse("0 0 9 * * *", {}, time_zone("Europe/Paris"))
        assert schedule.next_after(START) == datetime(
            2026, 3, 3, 9, tzinfo=ZoneInfo("Europe/Paris")
        )

    def test_invalid_schedule_names_the_timer(self, fixture_app):
        with pytest.raises(ConfigError, match=r"timer tick: .*FX_TICK_SCHEDULE"):
            timer_jobs(fixture_app.by_trigger(TIMER_TRIGGER), {}, UTC)
        with pytest.raises(ConfigError, match="not an NCRONTAB expression"):
            Schedule.parse("every day", {})

    def test_unknown_time_zone_is_a_config_error(self):
        with pytest.raises(ConfigError, match="WEBSITE_TIME_ZONE"):
            time_zone("Mars/Olympus")
