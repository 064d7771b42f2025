"""Timer triggers by their NCRONTAB schedules (six fields, seconds first) or TimeSpan intervals.

``%SETTING%`` schedules are read from the environment; ``runOnStartup`` is honoured and
``useMonitor`` is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from azure.functions.timer import TimerRequest
from croniter import croniter

from devhost.blobs import resolve_setting_refs
from devhost.discovery import FunctionSpec
from devhost.errors import ConfigError
from devhost.invoke import Invoker, log_invocation, new_invocation_id

log = logging.getLogger(__name__)

# A run that starts this much later than its scheduled time is reported as past due.
PAST_DUE_TOLERANCE_S = 1.0
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; ``next_after`` gives the first occurrence after a time.

    Attributes:
        expression: the schedule as written, after ``%SETTING%`` resolution.
        interval: the TimeSpan interval, or None for a cron expression.
        tz: the time zone the expression is read in.
    """

    expression: str
    interval: timedelta | None
    tz: tzinfo

    @classmethod
    def parse(cls, raw: str, environ: Mapping[str, str], tz: tzinfo = UTC) -> Schedule:
        """Parse an NCRONTAB (6 fields, or 5 without seconds) or ``[d.]hh:mm:ss`` schedule.

        Raises:
            ConfigError: the schedule (or the setting it names) is missing or invalid.
        """
        expression = resolve_setting_refs(raw, environ).strip()
        span = _TIMESPAN.match(expression)
        if span:
            days, hours, minutes, seconds = (int(g or 0) for g in span.groups())
            interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
            if interval <= timedelta(0):
                raise ConfigError(f"timer schedule {expression!r} must be longer than zero")
            return cls(expression, interval, tz)
        fields = expression.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(
            expression, second_at_beginning=len(fields) == 6
        ):
            raise ConfigError(
                f"timer schedule {expression!r} is not an NCRONTAB expression "
                "('{second} {minute} {hour} {day} {month} {day-of-week}')"
            )
        return cls(expression, None, tz)

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (an aware datetime)."""
        if self.interval is not None:
            return moment + self.interval
        six = len(self.expression.split()) == 6
        itr = croniter(self.expression, moment.astimezone(self.tz), second_at_beginning=six)
        found: datetime = itr.get_next(datetime)
        return found


def time_zone(name: str | None) -> tzinfo:
    """The zone of ``WEBSITE_TIME_ZONE`` (an IANA name), UTC when unset.

    Raises:
        ConfigError: the name is not a known IANA zone.
    """
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"WEBSITE_TIME_ZONE {name!r} is not an IANA time zone name (e.g. Europe/Paris)"
        ) from None


@dataclass(frozen=True)
class TimerJob:
    """A timer-triggered function and its schedule."""

    spec: FunctionSpec
    schedule: Schedule
    run_on_startup: bool


def timer_jobs(
    specs: list[FunctionSpec], environ: Mapping[str, str], tz: tzinfo
) -> list[TimerJob]:
    """Parse the schedule of each timer-triggered function.

    Raises:
        ConfigError: a schedule is invalid; the message names it.
    """
    jobs = []
    for spec in specs:
        try:
            schedule = Schedule.parse(str(spec.trigger["schedule"]), environ, tz)
        except ConfigError as exc:
            raise ConfigError(f"timer {spec.name}: {exc}") from None
        jobs.append(TimerJob(spec, schedule, bool(spec.trigger.get("runOnStartup"))))
    return jobs


# Limitation: two devhost processes serving one app both fire every timer (the real host
# keeps a singleton lock in storage), and occurrences missed while no devhost ran are not
# made up on start (``useMonitor`` is ignored), so ``past_due`` is only true after a stall.
class TimerRunner:
    """Fires every timer function on its schedule until stopped; one run at a time each."""

    def __init__(self, jobs: list[TimerJob], invoker: Invoker) -> None:
        self._jobs = jobs
        self._invoker = invoker

    async def run(self, stop: asyncio.Event) -> None:
        """Run every job until ``stop`` is set."""
        await asyncio.gather(*(self._run_job(job, stop) for job in self._jobs))

    async def _run_job(self, job: TimerJob, stop: asyncio.Event) -> None:
        last: datetime | None = None
        if job.run_on_startup and not stop.is_set():
            now = datetime.now(UTC)
            await self._fire(job, past_due=False, last=None, scheduled=now)
            last = now
        while not stop.is_set():
            now = datetime.now(UTC)
            due = job.schedule.next_after(max(now, last) if last else now)
            if not await _sleep_until(due, stop):
                return
            late_s = (datetime.now(UTC) - due).total_seconds()
            await self._fire(job, past_due=late_s > PAST_DUE_TOLERANCE_S, last=last, scheduled=due)
            last = due

    async def _fire(
        self, job: TimerJob, *, past_due: bool, last: datetime | None, scheduled: datetime
    ) -> None:
        following = job.schedule.next_after(scheduled)
        request = TimerRequest(
            past_due=past_due,
            schedule_status={
                "Last": last.isoformat() if last else None,
                "Next": following.isoformat(),
                "LastUpdated": datetime.now(UTC).isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        invocation_id = new_invocation_id()
        started = time.monotonic()
        try:
            await self._invoker.call(job.spec, request, invocation_id=invocation_id)
        except Exception:
            log.exception(
                "timer function %s failed",
                job.spec.name,
                extra={"function": job.spec.name, "invocation_id": invocation_id},
            )
            log_invocation(job.spec, invocation_id, started, "failed", failed=True)
        else:
            log_invocation(job.spec, invocation_id, started, "ok", past_due=past_due)


async def _sleep_until(due: datetime, stop: asyncio.Event) -> bool:
    """Wait until wall-clock ``due``; False when ``stop`` was set first."""
    while True:
        remaining = (due - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            return not stop.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), remaining)
            return False
