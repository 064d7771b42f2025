"""Durable Functions on the devhost: a task hub in PostgreSQL and the engine that replays
orchestrators through the SDK's out-of-process protocol and runs their activities.

The orchestrator handle gets the instance's history and returns the actions it wants; the
engine records them, carries them out (activities, timers, sub-orchestrations, events) and
appends their outcomes to the history. Every step commits in one transaction, and work is
claimed with leases, so a host killed at any point resumes where the database says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from devhost import sdk_timestamps
from devhost.discovery import FunctionSpec, LoadedApp
from devhost.invoke import Invoker, log_invocation, new_invocation_id

log = logging.getLogger(__name__)

ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"
DEFAULT_HUB = "DevhostHub"
# How long a claimed orchestration episode or activity is ours before another worker may
# take it over (a killed host's claims lapse after this).
DEFAULT_LEASE_S = 30.0
DEFAULT_POLL_INTERVAL_S = 0.1
DEFAULT_WORKERS = 4
# Work items one claim takes: activities, and orchestration instances (a quarter as many).
CLAIM_BATCH = 32
_SCHEMA_LOCK_KEY = 0x0DE7_D0AB
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

# History event types of the out-of-process protocol.
EXECUTION_STARTED, EXECUTION_COMPLETED, EXECUTION_FAILED, EXECUTION_TERMINATED = 0, 1, 2, 3
TASK_SCHEDULED, TASK_COMPLETED, TASK_FAILED = 4, 5, 6
SUB_CREATED, SUB_COMPLETED, SUB_FAILED = 7, 8, 9
TIMER_CREATED, TIMER_FIRED = 10, 11
ORCHESTRATOR_STARTED, ORCHESTRATOR_COMPLETED = 12, 13
EVENT_RAISED, CONTINUE_AS_NEW = 15, 16
EVENT_NAMES = {
    0: "ExecutionStarted",
    1: "ExecutionCompleted",
    2: "ExecutionFailed",
    3: "ExecutionTerminated",
    4: "TaskScheduled",
    5: "TaskCompleted",
    6: "TaskFailed",
    7: "SubOrchestrationInstanceCreated",
    8: "SubOrchestrationInstanceCompleted",
    9: "SubOrchestrationInstanceFailed",
    10: "TimerCreated",
    11: "TimerFired",
    12: "OrchestratorStarted",
    13: "OrchestratorCompleted",
    15: "EventRaised",
    16: "ContinueAsNew",
}

# Action types an orchestrator returns.
A_ACTIVITY, A_ACTIVITY_RETRY, A_SUB, A_SUB_RETRY, A_CONTINUE = 0, 1, 2, 3, 4
A_TIMER, A_WAIT_EVENT, A_CALL_ENTITY, A_CALL_HTTP, A_SIGNAL_ENTITY = 5, 6, 7, 8, 9
A_WHEN_ANY, A_WHEN_ALL = 11, 12
_ACTION_KINDS = {
    A_ACTIVITY: "activity",
    A_ACTIVITY_RETRY: "activity",
    A_SUB: "sub-orchestration",
    A_SUB_RETRY: "sub-orchestration",
    A_TIMER: "timer",
    A_CONTINUE: "continue-as-new",
}

RUNNING, PENDING, COMPLETED, FAILED, TERMINATED = (
    "Running",
    "Pending",
    "Completed",
    "Failed",
    "Terminated",
)
ACTIVE_STATUSES = (RUNNING, PENDING)

SCHEMA_DDL = """
CREATE SCHEMA IF NOT EXISTS devhost;
CREATE TABLE IF NOT EXISTS devhost.durable_instances (
    hub                text NOT NULL,
    instance_id        text NOT NULL,
    name               text NOT NULL,
    execution_id       text NOT NULL,
    status             text NOT NULL,
    input              text,
    output             text,
    custom_status      text,
    parent_instance_id text,
    parent_task_id     integer,
    engine_state       jsonb NOT NULL DEFAULT '{}',
    lease_owner        text,
    lease_until        timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hub, instance_id)
);
CREATE TABLE IF NOT EXISTS devhost.durable_history (
    hub         text NOT NULL,
    instance_id text NOT NULL,
    position    integer NOT NULL,
    event       jsonb NOT NULL,
    PRIMARY KEY (hub, instance_id, position)
);
CREATE TABLE IF NOT EXISTS devhost.durable_inbox (
    id          bigserial PRIMARY KEY,
    hub         text NOT NULL,
    instance_id text NOT NULL,
    event       jsonb NOT NULL,
    visible_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS durable_inbox_due ON devhost.durable_inbox (hub, visible_at);
CREATE INDEX IF NOT EXISTS durable_inbox_instance ON devhost.durable_inbox (hub, instance_id);
CREATE TABLE IF NOT EXISTS devhost.durable_activities (
    id           bigserial PRIMARY KEY,
    hub          text NOT NULL,
    instance_id  text NOT NULL,
    execution_id text NOT NULL,
    task_id      integer NOT NULL,
    name         text NOT NULL,
    input        text,
    visible_at   timestamptz NOT NULL DEFAULT now(),
    lease_owner  text,
    lease_until  timestamptz
);
CREATE INDEX IF NOT EXISTS durable_activities_due ON devhost.durable_activities (hub, visible_at);
"""


class DurableError(Exception):
    """A management request the task hub refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def utc_now() -> datetime:
    return datetime.now(UTC)


def stamp(moment: datetime) -> str:
    """A timestamp in the SDK's own format."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_stamp(text: str) -> datetime:
    """Parse an ISO-8601 UTC timestamp as the SDK writes it (``fireAt``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def event(event_type: int, moment: datetime, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    """One history event as the SDK reads it."""
    return {
        "EventType": event_type,
        "EventId": event_id,
        "IsPlayed": False,
        "Timestamp": stamp(moment),
        **fields,
    }


def flatten(actions: Iterable[Iterable[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    """Leaf actions in the order the SDK numbers them (compound actions by their children)."""
    leaves: list[Mapping[str, Any]] = []

    def walk(action: Mapping[str, Any]) -> None:
        if action.get("actionType") in (A_WHEN_ANY, A_WHEN_ALL):
            for child in action.get("compoundActions") or []:
                walk(child)
        else:
            leaves.append(action)

    for group in actions:
        for action in group:
            walk(action)
    return leaves


@dataclass
class EngineState:
    """What the engine remembers of an instance between episodes.

    Attributes:
        actions: numbered actions the orchestrator had returned by the end of its last
            episode (the SDK numbers tasks in that order).
        noops: for each task number the SDK took for a retry timer or a retry attempt,
            how many actions existed when it took it; task numbers are derived from both.
        scheduled: task number -> "kind:name" of what was carried out, to detect an
            orchestrator that asks for something else on replay.
        retries: task number of a with-retry action -> its attempt, limit, interval and
            the task numbers of its current attempt and timer.
    """

    actions: int = 0
    noops: list[int] = field(default_factory=list)
    scheduled: dict[str, str] = field(default_factory=dict)
    retries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> EngineState:
        return cls(
            actions=int(data.get("actions", 0)),
            noops=list(data.get("noops", [])),
            scheduled=dict(data.get("scheduled", {})),
            retries=dict(data.get("retries", {})),
        )

    def dump(self) -> dict[str, Any]:
        return {
            "actions": self.actions,
            "noops": self.noops,
            "scheduled": self.scheduled,
            "retries": self.retries,
        }

    def task_id(self, index: int) -> int:
        """The SDK's task number of the action at ``index`` among the numbered actions."""
        return index + sum(1 for at in self.noops if at <= index)

    def take_noop(self) -> int:
        """Take the next task number for a retry timer or attempt (as the SDK does)."""
        number = self.actions + len(self.noops)
        self.noops.append(self.actions)
        return number

    def retry_for_child(self, task_id: int) -> tuple[str, dict[str, Any]] | None:
        for key, retry in self.retries.items():
            if retry.get("child") == task_id and not retry.get("done"):
                return key, retry
        return None

    def retry_for_timer(self, timer_id: int) -> tuple[str, dict[str, Any]] | None:
        for key, retry in self.retries.items():
            if retry.get("timer") == timer_id and not retry.get("done"):
                return key, retry
        return None


@dataclass
class _Episode:
    """What one episode decided, written in one transaction."""

    history: list[dict[str, Any]] = field(default_factory=list)
    inbox: list[tuple[str, dict[str, Any], datetime | None]] = field(default_factory=list)
    activities: list[tuple[int, str, str | None, datetime | None]] = field(default_factory=list)
    children: list[tuple[str, str, str | None, int]] = field(default_factory=list)
    cancel_timers: list[int] = field(default_factory=list)
    status: str = RUNNING
    output: str | None = None
    custom_status: str | None = None
    restart_input: str | None = None
    restarted: bool = False


@dataclass
class _Decided:
    """An episode ready to write: the instance, the messages it consumed and its outcome."""

    instance_id: str
    execution_id: str
    consumed: list[int]
    plan: _Episode
    state: EngineState
    keep_status: bool = False
    parent: str | None = None
    parent_task: int | None = None


# An activity's work id, instance id, name and outcome event, ready to record.
_ActivityOutcome = tuple[int, str, str, dict[str, Any]]


class NonDeterminism(Exception):
    """The orchestrator asked on replay for something other than what it asked before."""


class TaskHub:
    """The task hub's tables and every change to them; used by the engine and the API.

    Args:
        database_url: ``postgresql://`` URL; the app's database is fine (schema ``devhost``).
        hub: the task hub name (host.json ``extensions.durableTask.hubName``).
        pool_size: connections kept open.
    """

    def __init__(self, database_url: str, hub: str = DEFAULT_HUB, pool_size: int = 16) -> None:
        self.hub = hub
        self.pool = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"autocommit": True},
        )

    async def open(self) -> None:
        """Connect and create the schema and tables when missing."""
        await self.pool.open(wait=True)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            await conn.execute(SCHEMA_DDL)

    async def close(self) -> None:
        await self.pool.close()

    async def start(self, name: str, instance_id: str, input_json: str | None) -> str:
        """Create (or re-create, when it has ended) an instance and queue its start.

        Raises:
            DurableError: 409 when an instance with that id is still running or pending.
        """
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT status FROM devhost.durable_instances WHERE hub = %s AND instance_id = %s"
                " FOR UPDATE",
                (self.hub, instance_id),
            )
            row = await cur.fetchone()
            if row is not None and row[0] in ACTIVE_STATUSES:
                raise DurableError(
                    f"An orchestration instance with id {instance_id} is already "
                    f"{str(row[0]).lower()}; wait for it to end or terminate it first",
                    409,
                )
            if row is not None:
                await self._forget(conn, instance_id)
            await self._create(conn, name, instance_id, input_json, None, None)
        return instance_id

    async def _create(
        self,
        conn: AsyncConnection[Any],
        name: str,
        instance_id: str,
        input_json: str | None,
        parent: str | None,
        parent_task: int | None,
    ) -> None:
        await conn.execute(
            "INSERT INTO devhost.durable_instances (hub, instance_id, name, execution_id,"
            " status, input, parent_instance_id, parent_task_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                self.hub,
                instance_id,
                name,
                uuid.uuid4().hex,
                PENDING,
                input_json,
                parent,
                parent_task,
            ),
        )
        started = event(
            EXECUTION_STARTED,
            utc_now(),
            Name=name,
            Input=input_json,
            Version="",
            ParentInstance=parent,
        )
        await self._post(conn, instance_id, started, None)

    async def _post(
        self,
        conn: AsyncConnection[Any],
        instance_id: str,
        message: dict[str, Any],
        visible_at: datetime | None,
    ) -> None:
        await conn.execute(
            "INSERT INTO devhost.durable_inbox (hub, instance_id, event, visible_at)"
            " VALUES (%s, %s, %s, coalesce(%s, now()))",
            (self.hub, instance_id, Jsonb(message), visible_at),
        )

    async def _forget(self, conn: AsyncConnection[Any], instance_id: str) -> None:
        for table in (
            "durable_history",
            "durable_inbox",
            "durable_activities",
            "durable_instances",
        ):
            await conn.execute(
                f"DELETE FROM devhost.{table} WHERE hub = %s AND instance_id = %s",
                (self.hub, instance_id),
            )

    async def raise_event(self, instance_id: str, name: str, data_json: str | None) -> None:
        """Queue an external event; one raised before the orchestrator waits is kept.

        Raises:
            DurableError: 404 no such instance, 410 it has ended.
        """
        async with self.pool.connection() as conn, conn.transaction():
            status = await self._status_for_update(conn, instance_id)
            if status not in ACTIVE_STATUSES:
                raise DurableError(f"instance {instance_id} has ended ({status})", 410)
            await self._post(
                conn,
                instance_id,
                event(EVENT_RAISED, utc_now(), Name=name, Input=data_json),
                None,
            )

    async def _status_for_update(self, conn: AsyncConnection[Any], instance_id: str) -> str:
        cur = await conn.execute(
            "SELECT status FROM devhost.durable_instances WHERE hub = %s AND instance_id = %s"
            " FOR UPDATE",
            (self.hub, instance_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise DurableError(f"no orchestration instance with id {instance_id}", 404)
        return str(row[0])

    async def terminate(self, instance_id: str, reason: str) -> None:
        """End a running instance now; its queued work is dropped and a parent told.

        Raises:
            DurableError: 404 no such instance, 410 it has already ended.
        """
        async with self.pool.connection() as conn, conn.transaction():
            status = await self._status_for_update(conn, instance_id)
            if status not in ACTIVE_STATUSES:
                raise DurableError(f"instance {instance_id} has already ended ({status})", 410)
            await self._end(conn, instance_id, TERMINATED, json.dumps(reason), reason)

    async def _end(
        self,
        conn: AsyncConnection[Any],
        instance_id: str,
        status: str,
        output: str | None,
        reason: str,
    ) -> None:
        for table in ("durable_inbox", "durable_activities"):
            await conn.execute(
                f"DELETE FROM devhost.{table} WHERE hub = %s AND instance_id = %s",
                (self.hub, instance_id),
            )
        cur = await conn.execute(
            "UPDATE devhost.durable_instances SET status = %s, output = %s, updated_at = now(),"
            " lease_owner = NULL, lease_until = NULL WHERE hub = %s AND instance_id = %s"
            " RETURNING parent_instance_id, parent_task_id",
            (status, output, self.hub, instance_id),
        )
        row = await cur.fetchone()
        await self._append(
            conn, instance_id, [event(EXECUTION_TERMINATED, utc_now(), Input=json.dumps(reason))]
        )
        if row is not None and row[0] is not None:
            failed = event(
                SUB_FAILED,
                utc_now(),
                TaskScheduledId=row[1],
                Reason=reason,
                Details=f"sub-orchestration {instance_id} was {status.lower()}",
            )
            await self._post(conn, str(row[0]), failed, None)

    async def _append(
        self, conn: AsyncConnection[Any], instance_id: str, events: list[dict[str, Any]]
    ) -> None:
        if not events:
            return
        await conn.execute(
            "INSERT INTO devhost.durable_history (hub, instance_id, position, event)"
            " SELECT %(hub)s, %(id)s, base.n + t.ord, t.ev"
            " FROM (SELECT coalesce(max(position), -1) AS n FROM devhost.durable_history"
            "       WHERE hub = %(hub)s AND instance_id = %(id)s) base,"
            " unnest(%(events)s::jsonb[]) WITH ORDINALITY AS t(ev, ord)",
            {"hub": self.hub, "id": instance_id, "events": [Jsonb(e) for e in events]},
        )

    async def purge(self, instance_id: str) -> int:
        """Delete an ended instance and its history; returns how many were deleted (0 or 1).

        Raises:
            DurableError: 400 when it is still running (terminate it first).
        """
        async with self.pool.connection() as conn, conn.transaction():
            try:
                status = await self._status_for_update(conn, instance_id)
            except DurableError:
                return 0
            if status in ACTIVE_STATUSES:
                raise DurableError(
                    f"instance {instance_id} is {status.lower()}; terminate it before purging",
                    400,
                )
            await self._forget(conn, instance_id)
            return 1

    async def status(self, instance_id: str, *, with_history: bool = False) -> dict[str, Any]:
        """The instance's status as the management API answers it.

        Raises:
            DurableError: 404 no such instance.
        """
        rows = await self.query(instance_ids=[instance_id])
        if not rows:
            raise DurableError(f"no orchestration instance with id {instance_id}", 404)
        found = rows[0]
        if with_history:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT event FROM devhost.durable_history WHERE hub = %s AND"
                    " instance_id = %s ORDER BY position",
                    (self.hub, instance_id),
                )
                events = [r[0] for r in await cur.fetchall()]
            found["historyEvents"] = [
                {**e, "EventType": EVENT_NAMES.get(int(e["EventType"]), str(e["EventType"]))}
                for e in events
                if int(e["EventType"]) not in (ORCHESTRATOR_STARTED, ORCHESTRATOR_COMPLETED)
            ]
        return found

    async def query(
        self,
        *,
        instance_ids: list[str] | None = None,
        statuses: list[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        prefix: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Instances matching every filter given, oldest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT instance_id, name, status, input, output, custom_status, created_at,"
                " updated_at FROM devhost.durable_instances WHERE hub = %(hub)s"
                " AND (%(ids)s::text[] IS NULL OR instance_id = ANY(%(ids)s))"
                " AND (%(st)s::text[] IS NULL OR status = ANY(%(st)s))"
                " AND (%(f)s::timestamptz IS NULL OR created_at >= %(f)s)"
                " AND (%(t)s::timestamptz IS NULL OR created_at <= %(t)s)"
                " AND (%(p)s::text IS NULL OR starts_with(instance_id, %(p)s))"
                " ORDER BY created_at, instance_id LIMIT %(n)s",
                {
                    "hub": self.hub,
                    "ids": instance_ids,
                    "st": statuses,
                    "f": created_from,
                    "t": created_to,
                    "p": prefix,
                    "n": limit,
                },
            )
            rows = await cur.fetchall()
        return [
            {
                "name": name,
                "instanceId": iid,
                "runtimeStatus": status,
                "input": _loads(input_json),
                "output": _loads(output),
                "customStatus": _loads(custom),
                "createdTime": stamp(created).replace(".000000", ""),
                "lastUpdatedTime": stamp(updated),
            }
            for iid, name, status, input_json, output, custom, created, updated in rows
        ]

    async def purge_where(
        self,
        *,
        statuses: list[str] | None,
        created_from: datetime | None,
        created_to: datetime | None,
    ) -> int:
        """Delete every ended instance matching the filters; returns how many."""
        ended = [
            s for s in (statuses or [COMPLETED, FAILED, TERMINATED]) if s not in ACTIVE_STATUSES
        ]
        rows = await self.query(statuses=ended, created_from=created_from, created_to=created_to)
        deleted = 0
        for row in rows:
            deleted += await self.purge(str(row["instanceId"]))
        return deleted


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class _Doorbell:
    """Wakes one idle worker per ring, so new work costs one claim rather than one per
    worker; a ring while no worker is idle is kept for the next one to go idle."""

    def __init__(self) -> None:
        self._idle: list[asyncio.Future[None]] = []
        self._rung = False

    def ring(self) -> None:
        while self._idle:
            waiter = self._idle.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._rung = True

    async def wait(self, stop: asyncio.Event, timeout_s: float | None) -> None:
        """Return on a ring (or one kept), on ``stop``, or after ``timeout_s`` (None: never)."""
        if self._rung:
            self._rung = False
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                [waiter, stopper], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
            if not waiter.done():
                waiter.cancel()
                self._idle.remove(waiter)


class DurableEngine:
    """Runs the app's orchestrations and activities from the task hub until stopped.

    Args:
        app: the loaded app; its orchestration and activity triggers are served.
        hub: the task hub.
        invoker: runs orchestrator episodes and activities in the host's thread pool.
        workers: concurrent orchestration claimers (each claims up to a quarter of
            ``CLAIM_BATCH`` instances) and as many activity claimers (each up to
            ``CLAIM_BATCH`` activities, run in the invoker's pool).
        lease_s: seconds a claim holds before another worker may take it over.
        poll_interval_s: seconds between the first worker of each kind's own looks for due
            work (timers, lapsed claims, other hosts' work); the others wait to be woken.
    """

    def __init__(
        self,
        app: LoadedApp,
        hub: TaskHub,
        invoker: Invoker,
        *,
        workers: int = DEFAULT_WORKERS,
        lease_s: float = DEFAULT_LEASE_S,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        self.hub = hub
        self._invoker = invoker
        self._orchestrators = {f.name: f for f in app.by_trigger(ORCHESTRATION_TRIGGER)}
        self._activities = {f.name: f for f in app.by_trigger(ACTIVITY_TRIGGER)}
        self._workers = workers
        self._lease_s = lease_s
        self._poll_s = poll_interval_s
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._orchestrator_bell = _Doorbell()
        self._activity_bell = _Doorbell()
        sdk_timestamps.install()

    @property
    def orchestrator_names(self) -> set[str]:
        return set(self._orchestrators)

    def wake(self) -> None:
        """Look for work now (a start or an event was just queued)."""
        self._orchestrator_bell.ring()
        self._activity_bell.ring()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        loops = [
            self._loop(
                stop, self._orchestrator_batch, self._orchestrator_bell, CLAIM_BATCH // 4, n
            )
            for n in range(self._workers)
        ]
        loops += [
            self._loop(stop, self._activity_batch, self._activity_bell, CLAIM_BATCH, n)
            for n in range(self._workers)
        ]
        await asyncio.gather(*loops)

    async def _loop(
        self, stop: asyncio.Event, batch: Any, bell: _Doorbell, limit: int, number: int
    ) -> None:
        # Work queued in this process rings the bell; only the first worker of each kind
        # also looks on its own, for timers coming due, lapsed claims and other hosts'
        # work. It rings for help when it finds a full batch, as does every worker.
        timeout_s = self._poll_s if number == 0 else None
        while not stop.is_set():
            try:
                did = await batch(bell)
            except Exception:
                log.exception("durable worker failed; trying again")
                did = 0
            if did < limit:
                await bell.wait(stop, timeout_s)

    # -- activities -------------------------------------------------------------------------

    async def _activity_batch(self, bell: _Doorbell) -> int:
        async with self.hub.pool.connection() as conn:
            cur = await conn.execute(
                "WITH due AS MATERIALIZED (SELECT id FROM devhost.durable_activities"
                "   WHERE hub = %(hub)s AND visible_at <= now()"
                "   AND (lease_until IS NULL OR lease_until < now())"
                "   ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED)"
                " UPDATE devhost.durable_activities a SET lease_owner = %(o)s,"
                " lease_until = now() + make_interval(secs => %(l)s)"
                " FROM due WHERE a.id = due.id"
                " RETURNING a.id, a.instance_id, a.execution_id, a.task_id, a.name, a.input",
                {"o": self._owner, "l": self._lease_s, "hub": self.hub.hub, "n": CLAIM_BATCH},
            )
            rows = await cur.fetchall()
        if not rows:
            return 0
        if len(rows) == CLAIM_BATCH:
            bell.ring()

        # Results are recorded as they come in, each group in one statement, so a slow
        # activity holds back no other's result and a busy hub pays one round trip per group.
        running = {asyncio.ensure_future(self._run_activity(*row)) for row in rows}
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            await self._record_activities([task.result() for task in done])
        return len(rows)

    async def _run_activity(
        self,
        work_id: int,
        instance_id: str,
        execution_id: str,
        task_id: int,
        name: str,
        input_json: str | None,
    ) -> _ActivityOutcome:
        """Run one claimed activity; returns its work id, instance, name and outcome event."""
        spec = self._activities.get(name)
        invocation_id = new_invocation_id()
        started = time.monotonic()
        if spec is None:
            outcome = event(
                TASK_FAILED,
                utc_now(),
                TaskScheduledId=task_id,
                Reason=f"The activity function '{name}' doesn't exist",
                Details=f"no activity named {name} in the app",
            )
            return work_id, instance_id, name, outcome
        try:
            value = await self._invoker.call(
                spec,
                None if input_json is None else json.loads(input_json),
                invocation_id=invocation_id,
            )
            outcome = event(
                TASK_COMPLETED, utc_now(), TaskScheduledId=task_id, Result=json.dumps(value)
            )
        except Exception as exc:  # noqa: BLE001 - any failure of an activity is its outcome
            log.warning(
                "activity %s of %s failed: %s",
                name,
                instance_id,
                exc,
                extra={"instance_id": instance_id, "function": name},
            )
            outcome = event(
                TASK_FAILED,
                utc_now(),
                TaskScheduledId=task_id,
                Reason=f"{type(exc).__name__}: {exc}",
                Details=repr(exc),
            )
        failed = int(outcome["EventType"]) == TASK_FAILED
        log_invocation(
            spec,
            invocation_id,
            started,
            "failed" if failed else "ok",
            failed=failed,
            instance_id=instance_id,
        )
        return work_id, instance_id, name, outcome

    async def _record_activities(self, results: list[_ActivityOutcome]) -> None:
        """Record activity outcomes in the statement that settles their work items.

        A work item whose lease lapsed records nothing; an instance that ended or started
        over meanwhile gets nothing.
        """
        async with self.hub.pool.connection() as conn:
            cur = await conn.execute(
                "WITH outcome AS (SELECT * FROM unnest(%(ids)s::bigint[], %(evs)s::jsonb[])"
                "   AS t(id, ev)),"
                " done AS (DELETE FROM devhost.durable_activities a USING outcome o"
                "   WHERE a.id = o.id AND a.lease_owner = %(o)s"
                "   RETURNING a.id, a.hub, a.instance_id, a.execution_id, o.ev),"
                " posted AS (INSERT INTO devhost.durable_inbox (hub, instance_id, event)"
                "   SELECT d.hub, d.instance_id, d.ev FROM done d"
                "   JOIN devhost.durable_instances i ON i.hub = d.hub"
                "     AND i.instance_id = d.instance_id AND i.execution_id = d.execution_id"
                "     AND i.status = ANY(%(active)s) ORDER BY d.id RETURNING 1)"
                " SELECT array(SELECT id FROM done), (SELECT count(*) FROM posted)",
                {
                    "ids": [work_id for work_id, _, _, _ in results],
                    "evs": [Jsonb(outcome) for _, _, _, outcome in results],
                    "o": self._owner,
                    "active": list(ACTIVE_STATUSES),
                },
            )
            row = await cur.fetchone()
        settled = set(row[0]) if row is not None else set()
        for work_id, instance_id, name, _ in results:
            if work_id not in settled:
                log.warning(
                    "activity %s of %s lost its lease; its result is dropped", name, instance_id
                )
        if settled:
            self._orchestrator_bell.ring()

    # -- orchestrations ---------------------------------------------------------------------

    async def _orchestrator_batch(self, bell: _Doorbell) -> int:
        # The rows to claim are picked once, in a materialised step: as a subquery of the
        # UPDATE the planner may run the pick again for each row, each time waiting on locks.
        async with self.hub.pool.connection() as conn:
            cur = await conn.execute(
                "WITH due AS MATERIALIZED (SELECT i.instance_id"
                "   FROM devhost.durable_instances i"
                "   WHERE i.hub = %(hub)s AND (i.lease_until IS NULL OR i.lease_until < now())"
                "   AND EXISTS (SELECT 1 FROM devhost.durable_inbox m WHERE m.hub = i.hub"
                "       AND m.instance_id = i.instance_id AND m.visible_at <= now())"
                "   LIMIT %(n)s FOR UPDATE SKIP LOCKED)"
                " UPDATE devhost.durable_instances c SET lease_owner = %(o)s,"
                " lease_until = now() + make_interval(secs => %(l)s)"
                " FROM due WHERE c.hub = %(hub)s AND c.instance_id = due.instance_id"
                " RETURNING c.instance_id",
                {"o": self._owner, "l": self._lease_s, "hub": self.hub.hub, "n": CLAIM_BATCH // 4},
            )
            claimed = [str(r[0]) for r in await cur.fetchall()]
            if not claimed:
                return 0
            if len(claimed) == CLAIM_BATCH // 4:
                bell.ring()

            # One more round trip reads every claimed instance with its history and due
            # messages. It is a statement of its own: the claim's snapshot may predate the
            # commit of the episode that released an instance, and would replay its messages.
            cur = await conn.execute(
                "SELECT i.instance_id, i.name, i.execution_id, i.status, i.input,"
                " i.engine_state, i.parent_instance_id, i.parent_task_id,"
                " (SELECT coalesce(jsonb_agg(h.event ORDER BY h.position), '[]')"
                "    FROM devhost.durable_history h"
                "    WHERE h.hub = i.hub AND h.instance_id = i.instance_id),"
                " (SELECT coalesce(jsonb_agg(jsonb_build_array(m.id, m.event) ORDER BY m.id),"
                "    '[]') FROM devhost.durable_inbox m WHERE m.hub = i.hub"
                "    AND m.instance_id = i.instance_id AND m.visible_at <= now())"
                " FROM devhost.durable_instances i WHERE i.hub = %s"
                " AND i.instance_id = ANY(%s) AND i.lease_owner = %s",
                (self.hub.hub, claimed, self._owner),
            )
            rows = await cur.fetchall()
        decided = await asyncio.gather(*(self._episode(row) for row in rows))
        await self._commit_all(list(decided))
        return len(claimed)

    async def _episode(self, row: tuple[Any, ...]) -> _Decided:
        """Replay one claimed instance with its due messages; returns what it decided."""
        instance_id = str(row[0])
        name, execution_id, status, input_json, raw_state, parent, parent_task = row[1:8]
        history: list[dict[str, Any]] = row[8]
        messages = [(int(i), e) for i, e in row[9]]

        state = EngineState.load(raw_state)
        if status not in ACTIVE_STATUSES:
            return _Decided(
                instance_id,
                execution_id,
                [m for m, _ in messages],
                _Episode(status=str(status)),
                state,
                keep_status=True,
            )
        batch_ids, batch = _choose_batch(messages, state)
        now = utc_now()
        plan = _Episode()
        plan.history.append(event(ORCHESTRATOR_STARTED, now))
        plan.history.extend(batch)
        self._apply_retries(batch, state, plan, now)
        spec = self._orchestrators.get(str(name))
        if spec is None:
            plan.status = FAILED
            plan.output = json.dumps(f"no orchestrator function named {name} in the app")
        else:
            await self._replay(spec, instance_id, parent, input_json, history, state, plan, now)
        return _Decided(
            instance_id,
            execution_id,
            batch_ids,
            plan,
            state,
            parent=parent,
            parent_task=parent_task,
        )

    def _apply_retries(
        self, batch: list[dict[str, Any]], state: EngineState, plan: _Episode, now: datetime
    ) -> None:
        """Carry out the SDK's retry protocol: after a failure a timer, then a new attempt."""
        for message in batch:
            kind = int(message["EventType"])
            if kind in (TASK_FAILED, SUB_FAILED):
                found = state.retry_for_child(int(message["TaskScheduledId"]))
                if found is None:
                    continue
                _, retry = found
                timer_id = state.take_noop()
                fire_at = now + timedelta(milliseconds=int(retry["interval_ms"]))
                retry["timer"] = timer_id
                plan.history.append(event(TIMER_CREATED, now, timer_id, FireAt=stamp(fire_at)))
                plan.inbox.append(
                    ("", event(TIMER_FIRED, now, TimerId=timer_id, FireAt=stamp(fire_at)), fire_at)
                )
            elif kind == TIMER_FIRED:
                found = state.retry_for_timer(int(message["TimerId"]))
                if found is None:
                    continue
                _, retry = found
                retry["timer"] = None
                if int(retry["attempt"]) >= int(retry["max"]):
                    retry["done"] = True
                    continue
                attempt_id = state.take_noop()
                retry["attempt"] = int(retry["attempt"]) + 1
                retry["child"] = attempt_id
                self._schedule_call(plan, attempt_id, retry["action"], now)

    def _schedule_call(
        self, plan: _Episode, task_id: int, action: Mapping[str, Any], now: datetime
    ) -> None:
        kind = int(action["actionType"])
        name = str(action.get("functionName"))
        if kind in (A_ACTIVITY, A_ACTIVITY_RETRY):
            plan.history.append(
                event(TASK_SCHEDULED, now, task_id, Name=name, Input=action.get("input"))
            )
            plan.activities.append((task_id, name, action.get("input"), None))
        else:
            child_id = action.get("instanceId") or uuid.uuid4().hex
            plan.history.append(
                event(
                    SUB_CREATED,
                    now,
                    task_id,
                    Name=name,
                    InstanceId=child_id,
                    Input=action.get("input"),
                )
            )
            plan.children.append((str(child_id), name, action.get("input"), task_id))

    async def _replay(
        self,
        spec: FunctionSpec,
        instance_id: str,
        parent: str | None,
        input_json: str | None,
        history: list[dict[str, Any]],
        state: EngineState,
        plan: _Episode,
        now: datetime,
    ) -> None:
        new_events = [
            e
            for e in plan.history
            if int(e["EventType"]) not in (TIMER_CREATED, TASK_SCHEDULED, SUB_CREATED)
        ]
        # The SDK parses every event's timestamp on each replay and reads nothing from an
        # episode's end marker, so the markers older task hubs stored are left out.
        replayed = [e for e in history if int(e["EventType"]) != ORCHESTRATOR_COMPLETED]
        payload = json.dumps(
            {
                "history": replayed + new_events,
                "instanceId": instance_id,
                "isReplaying": False,
                "parentInstanceId": parent,
                "input": input_json,
                "upperSchemaVersion": 2,
            }
        )
        invocation_id = new_invocation_id()
        started = time.monotonic()
        try:
            raw = await self._invoker.call(spec, payload, invocation_id=invocation_id, inline=True)
            result = json.loads(raw)
        except Exception as exc:  # noqa: BLE001 - the SDK raises a bare Exception
            message = str(exc).split("\n\n$OutOfProcData$", 1)[0]
            data = str(exc).split("$OutOfProcData$:", 1)
            if len(data) == 2:
                with contextlib.suppress(ValueError, AttributeError):
                    custom = json.loads(data[1]).get("customStatus")
                    plan.custom_status = None if custom is None else json.dumps(custom)
            plan.status = FAILED
            plan.output = json.dumps(f"Orchestrator function '{spec.name}' failed: {message}")
            log_invocation(
                spec, invocation_id, started, "failed", failed=True, instance_id=instance_id
            )
            return
        log_invocation(spec, invocation_id, started, "ok", instance_id=instance_id)
        if "customStatus" in result:
            plan.custom_status = json.dumps(result["customStatus"])
        try:
            self._schedule_actions(result, state, plan, now)
        except NonDeterminism as exc:
            plan.status = FAILED
            plan.output = json.dumps(str(exc))
            return
        if result.get("isDone"):
            if result.get("error"):
                plan.status = FAILED
                plan.output = json.dumps(str(result["error"]))
            else:
                plan.status = COMPLETED
                plan.output = json.dumps(result.get("output"))

    def _schedule_actions(
        self, result: Mapping[str, Any], state: EngineState, plan: _Episode, now: datetime
    ) -> None:
        numbered = [
            a for a in flatten(result.get("actions") or []) if a.get("actionType") != A_WAIT_EVENT
        ]
        for index, action in enumerate(numbered):
            kind = int(action["actionType"])
            task_id = state.task_id(index)
            label = f"{_ACTION_KINDS.get(kind, str(kind))}:{action.get('functionName') or ''}"
            known = state.scheduled.get(str(task_id))
            if known is not None:
                if known != label:
                    raise NonDeterminism(_non_determinism(task_id, known, label))
                if kind == A_TIMER and action.get("isCanceled"):
                    plan.cancel_timers.append(task_id)
                continue
            state.scheduled[str(task_id)] = label
            if kind in (A_ACTIVITY, A_SUB):
                self._schedule_call(plan, task_id, action, now)
            elif kind in (A_ACTIVITY_RETRY, A_SUB_RETRY):
                options = action.get("retryOptions") or {}
                state.retries[str(task_id)] = {
                    "attempt": 1,
                    "max": int(options.get("maxNumberOfAttempts", 1)),
                    "interval_ms": int(options.get("firstRetryIntervalInMilliseconds", 1000)),
                    "child": task_id,
                    "timer": None,
                    "action": dict(action),
                }
                self._schedule_call(plan, task_id, action, now)
            elif kind == A_TIMER:
                fire_at = parse_stamp(str(action["fireAt"]))
                plan.history.append(event(TIMER_CREATED, now, task_id, FireAt=action["fireAt"]))
                plan.inbox.append(
                    (
                        "",
                        event(TIMER_FIRED, now, TimerId=task_id, FireAt=action["fireAt"]),
                        fire_at,
                    )
                )
            elif kind == A_CONTINUE:
                plan.restarted = True
                plan.restart_input = action.get("input")
            else:
                raise NonDeterminism(
                    f"action type {kind} ({label}) is not supported by the devhost: durable "
                    "entities and durable HTTP calls are not served"
                )
        state.actions = len(numbered)

    async def _commit_all(self, decided: list[_Decided]) -> None:
        """Write the episodes of one claim in one transaction.

        Should that transaction fail, each episode is written in one of its own, so one
        instance whose writes fail holds back no other; an episode not written is replayed
        once its claim lapses.
        """
        if not decided:
            return
        try:
            ended = await self._write_episodes(decided)
        except Exception:
            if len(decided) == 1:
                raise
            log.warning(
                "writing %d episodes together failed; writing each alone",
                len(decided),
                exc_info=True,
            )
            ended = []
            for one in decided:
                try:
                    ended += await self._write_episodes([one])
                except Exception:
                    log.exception(
                        "orchestration %s: its episode could not be written",
                        one.instance_id,
                        extra={"instance_id": one.instance_id},
                    )
        for one in ended:
            log.info(
                "orchestration %s %s",
                one.instance_id,
                one.plan.status.lower(),
                extra={"instance_id": one.instance_id, "outcome": one.plan.status},
            )
        self.wake()

    async def _write_episodes(self, decided: list[_Decided]) -> list[_Decided]:
        """Write episodes whose claims are still ours; returns those whose instance ended."""
        ended: list[_Decided] = []
        # Pipelined: the claim check is one round trip, and every write plus the commit one more.
        async with self.hub.pool.connection() as conn, conn.pipeline(), conn.transaction():
            cur = await conn.execute(
                "SELECT instance_id, execution_id FROM devhost.durable_instances"
                " WHERE hub = %s AND instance_id = ANY(%s) AND lease_owner = %s"
                " ORDER BY instance_id FOR UPDATE",
                (self.hub.hub, [d.instance_id for d in decided], self._owner),
            )
            held = {(str(i), str(e)) for i, e in await cur.fetchall()}
            for one in decided:
                if (one.instance_id, one.execution_id) not in held:
                    log.warning(
                        "orchestration %s lost its claim; the episode is replayed",
                        one.instance_id,
                    )
                    continue
                if await self._write_episode(conn, one):
                    ended.append(one)
        return ended

    async def _write_episode(self, conn: AsyncConnection[Any], one: _Decided) -> bool:
        """Write one episode's outcome; returns whether its instance ended."""
        instance_id, plan = one.instance_id, one.plan
        await conn.execute("DELETE FROM devhost.durable_inbox WHERE id = ANY(%s)", (one.consumed,))
        if one.keep_status:
            await self._release(conn, instance_id)
            return False
        if plan.restarted:
            await self._continue_as_new(conn, instance_id, plan)
            return False
        now = utc_now()
        done = plan.status in (COMPLETED, FAILED)
        events = list(plan.history)
        if plan.status == COMPLETED:
            events.append(event(EXECUTION_COMPLETED, now, Result=plan.output))
        elif plan.status == FAILED:
            events.append(event(EXECUTION_FAILED, now, Reason=_loads(plan.output)))
        await self.hub._append(conn, instance_id, events)
        if done:
            await conn.execute(
                "DELETE FROM devhost.durable_inbox WHERE hub = %s AND instance_id = %s",
                (self.hub.hub, instance_id),
            )
            await conn.execute(
                "DELETE FROM devhost.durable_activities WHERE hub = %s AND instance_id = %s",
                (self.hub.hub, instance_id),
            )
            if one.parent is not None:
                await self._tell_parent(conn, one.parent, one.parent_task, plan)
        else:
            await self._queue_work(conn, instance_id, one.execution_id, plan)
        await conn.execute(
            "UPDATE devhost.durable_instances SET status = %s, output = %s,"
            " custom_status = coalesce(%s, custom_status), engine_state = %s,"
            " updated_at = now(), lease_owner = NULL, lease_until = NULL"
            " WHERE hub = %s AND instance_id = %s",
            (
                plan.status,
                plan.output,
                plan.custom_status,
                Jsonb(one.state.dump()),
                self.hub.hub,
                instance_id,
            ),
        )
        return done

    async def _queue_work(
        self, conn: AsyncConnection[Any], instance_id: str, execution_id: str, plan: _Episode
    ) -> None:
        for task_id, name, input_json, visible_at in plan.activities:
            await conn.execute(
                "INSERT INTO devhost.durable_activities (hub, instance_id, execution_id,"
                " task_id, name, input, visible_at) VALUES (%s, %s, %s, %s, %s, %s,"
                " coalesce(%s, now()))",
                (self.hub.hub, instance_id, execution_id, task_id, name, input_json, visible_at),
            )
        for _, message, visible_at in plan.inbox:
            await self.hub._post(conn, instance_id, message, visible_at)
        for timer_id in plan.cancel_timers:
            await conn.execute(
                "DELETE FROM devhost.durable_inbox WHERE hub = %s AND instance_id = %s AND"
                " (event->>'EventType')::int = %s AND (event->>'TimerId')::int = %s",
                (self.hub.hub, instance_id, TIMER_FIRED, timer_id),
            )
        for child_id, name, input_json, task_id in plan.children:
            cur = await conn.execute(
                "SELECT status FROM devhost.durable_instances WHERE hub = %s AND"
                " instance_id = %s FOR UPDATE",
                (self.hub.hub, child_id),
            )
            row = await cur.fetchone()
            if row is not None and row[0] in ACTIVE_STATUSES:
                failed = event(
                    SUB_FAILED,
                    utc_now(),
                    TaskScheduledId=task_id,
                    Reason=f"sub-orchestration {child_id} is already running",
                    Details="choose another instance id",
                )
                await self.hub._post(conn, instance_id, failed, None)
                continue
            if row is not None:
                await self.hub._forget(conn, child_id)
            await self.hub._create(conn, name, child_id, input_json, instance_id, task_id)

    async def _tell_parent(
        self, conn: AsyncConnection[Any], parent: str, task_id: int | None, plan: _Episode
    ) -> None:
        if plan.status == COMPLETED:
            message = event(SUB_COMPLETED, utc_now(), TaskScheduledId=task_id, Result=plan.output)
        else:
            reason = str(_loads(plan.output))
            message = event(
                SUB_FAILED, utc_now(), TaskScheduledId=task_id, Reason=reason, Details=reason
            )
        await self.hub._post(conn, parent, message, None)

    async def _continue_as_new(
        self, conn: AsyncConnection[Any], instance_id: str, plan: _Episode
    ) -> None:
        """Start the instance over with the new input; events not yet delivered stay queued."""
        await conn.execute(
            "DELETE FROM devhost.durable_history WHERE hub = %s AND instance_id = %s",
            (self.hub.hub, instance_id),
        )
        await conn.execute(
            "DELETE FROM devhost.durable_activities WHERE hub = %s AND instance_id = %s",
            (self.hub.hub, instance_id),
        )
        await conn.execute(
            "DELETE FROM devhost.durable_inbox WHERE hub = %s AND instance_id = %s AND"
            " (event->>'EventType')::int <> %s",
            (self.hub.hub, instance_id, EVENT_RAISED),
        )
        cur = await conn.execute(
            "UPDATE devhost.durable_instances SET execution_id = %s, status = %s, input = %s,"
            " output = NULL, custom_status = coalesce(%s, custom_status), engine_state = '{}',"
            " updated_at = now(), lease_owner = NULL, lease_until = NULL"
            " WHERE hub = %s AND instance_id = %s RETURNING name",
            (
                uuid.uuid4().hex,
                RUNNING,
                plan.restart_input,
                plan.custom_status,
                self.hub.hub,
                instance_id,
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        started = event(
            EXECUTION_STARTED, utc_now(), Name=row[0], Input=plan.restart_input, Version=""
        )
        # The start goes before any event already waiting, so those are delivered after it.
        await conn.execute(
            "INSERT INTO devhost.durable_inbox (id, hub, instance_id, event, visible_at)"
            " VALUES (-nextval('devhost.durable_inbox_id_seq'), %s, %s, %s, now())",
            (self.hub.hub, instance_id, Jsonb(started)),
        )
        self.wake()

    async def _release(self, conn: AsyncConnection[Any], instance_id: str) -> None:
        await conn.execute(
            "UPDATE devhost.durable_instances SET lease_owner = NULL, lease_until = NULL"
            " WHERE hub = %s AND instance_id = %s",
            (self.hub.hub, instance_id),
        )


def _choose_batch(
    messages: list[tuple[int, dict[str, Any]]], state: EngineState
) -> tuple[list[int], list[dict[str, Any]]]:
    """The messages for this episode: a retry step goes first and alone among retry steps,
    so the task numbers the SDK takes for it are the ones the engine expects.

    A start message sorts first; once started, a second start is dropped.
    """
    chosen: list[tuple[int, dict[str, Any]]] = []
    retry_taken = False
    for message_id, message in messages:
        kind = int(message["EventType"])
        is_retry = (
            kind in (TASK_FAILED, SUB_FAILED)
            and state.retry_for_child(int(message["TaskScheduledId"])) is not None
        ) or (kind == TIMER_FIRED and state.retry_for_timer(int(message["TimerId"])) is not None)
        if is_retry:
            if retry_taken:
                continue
            retry_taken = True
            chosen.insert(0, (message_id, message))
        else:
            chosen.append((message_id, message))
    starts = [c for c in chosen if int(c[1]["EventType"]) == EXECUTION_STARTED]
    others = [c for c in chosen if int(c[1]["EventType"]) != EXECUTION_STARTED]
    ordered = starts[:1] + others
    return [m for m, _ in chosen], [e for _, e in ordered]


def _non_determinism(task_id: int, before: str, now: str) -> str:
    return (
        "Non-deterministic workflow detected: a previous execution of this orchestration "
        f"scheduled {before.replace(':', ' ')} as task {task_id}, but on replay it asked for "
        f"{now.replace(':', ' ')}. Was the orchestrator changed while this instance was "
        "running? Give the changed orchestrator a new name instead."
    )
