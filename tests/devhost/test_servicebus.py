"""Service Bus triggers of the fixture app, dispatched from the local broker in a real Postgres."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import azure.functions as func
import azure.functions.servicebus
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from devhost.cli import main
from devhost.discovery import SERVICE_BUS_TRIGGER, LoadedApp
from devhost.errors import ConfigError
from devhost.invoke import Invoker
from devhost.servicebus import BusDispatcher, bus_watches
from devhost.services import PostgresHandle
from shared.adapters.local_broker import MAX_DELIVERY_COUNT_EXCEEDED, LocalBroker
from shared.messaging import STRIPE_EVENTS_QUEUE, OutboundMessage
from tests.devhost.conftest import LoopThread, fast_settings, wait_for

ENVIRON = {"FX_FAILING_QUEUE": "fx-failing"}


class Bus:
    """A dispatcher over the fixture app's Service Bus triggers, running on the loop thread."""

    def __init__(
        self,
        app: LoadedApp,
        pg: PostgresHandle,
        loop_thread: LoopThread,
        lock_duration_s: int | None = None,
    ) -> None:
        settings = fast_settings(bus_poll_interval_s=0.05, bus_retry_backoff_s=0.0)
        self.watches = bus_watches(app.by_trigger(SERVICE_BUS_TRIGGER), ENVIRON)
        if lock_duration_s is not None:
            self.watches = [
                replace(w, queue=replace(w.queue, lock_duration_s=lock_duration_s))
                for w in self.watches
            ]
        self._loop = loop_thread
        self._invoker = Invoker(settings.thread_count, str(app.script_path.parent))
        self._dispatcher = BusDispatcher(
            self.watches, self._invoker, settings, database_url=pg.url
        )

        async def start() -> tuple[asyncio.Event, asyncio.Task[None]]:
            await self._dispatcher.open()
            stop = asyncio.Event()
            return stop, asyncio.create_task(self._dispatcher.run(stop))

        self._stop, self._task = loop_thread.run(start())
        self._pool = ConnectionPool(pg.url, min_size=1, max_size=2, open=True)
        self.broker = LocalBroker(self._pool, queues={})

    def close(self) -> None:
        async def stop() -> None:
            self._stop.set()
            await self._task
            await self._dispatcher.drain()
            await self._dispatcher.close()

        self._loop.run(stop())
        self._invoker.shutdown(wait=True)
        self._pool.close()


@pytest.fixture
def bus(fixture_app, pg, loop_thread) -> Iterator[Bus]:
    running = Bus(fixture_app, pg, loop_thread)
    yield running
    running.close()


def calls_for(calls, function: str, key: str) -> list[dict]:
    return [c for c in calls[function] if c.get("key") == key]


class TestWatches:
    def test_queue_names_resolve_settings_and_connections_default_to_the_local_broker(
        self, fixture_app
    ):
        watches = {w.spec.name: w for w in bus_watches(_bus_specs(fixture_app), ENVIRON)}
        assert watches["bus_failing"].queue.name == "fx-failing"
        assert watches["bus_sessions"].queue.requires_session
        assert not watches["bus_orders"].queue.requires_session
        assert all(w.connection is None for w in watches.values())

    def test_a_connection_setting_naming_a_namespace_selects_service_bus(self, fixture_app):
        environ = {**ENVIRON, "FxServiceBus__fullyQualifiedNamespace": "x.servicebus.windows.net"}
        watches = bus_watches(_bus_specs(fixture_app), environ)
        assert {w.connection for w in watches} == {"x.servicebus.windows.net"}

    def test_a_trigger_disagreeing_with_the_queue_definition_is_refused(self, fixture_app):
        spec = next(s for s in _bus_specs(fixture_app) if s.name == "bus_orders")
        wrong = type(spec)(
            name=spec.name,
            trigger_type=spec.trigger_type,
            trigger={**spec.trigger, "queueName": STRIPE_EVENTS_QUEUE},
            bindings=spec.bindings,
            user_function=spec.user_function,
        )
        with pytest.raises(
            ConfigError,
            match="queue stripe-events requires sessions, but the trigger has "
            "is_sessions_enabled=False",
        ):
            bus_watches([wrong], ENVIRON)


def _bus_specs(app: LoadedApp) -> list:
    return app.by_trigger(SERVICE_BUS_TRIGGER)


class TestDispatch:
    def test_the_function_gets_a_service_bus_message_with_what_was_sent(self, bus, calls, caplog):
        caplog.set_level(logging.INFO, logger="devhost.invoke")
        message_id = f"evt_{uuid.uuid4().hex[:10]}"
        before = datetime.now(UTC)
        bus.broker.send(
            "fx-orders",
            [
                OutboundMessage(
                    message_id,
                    body=b'{"order": 7}',
                    subject="order.created",
                    application_properties={"traceparent": "00-abc-def-01", "tenant": "t1"},
                )
            ],
        )
        [seen] = wait_for(lambda: calls_for(calls, "bus_orders", message_id), what="the call")
        # The concrete class the Python worker passes, under the public abstract type.
        assert seen["type"] is azure.functions.servicebus.ServiceBusMessage
        assert issubclass(seen["type"], func.ServiceBusMessage)
        assert seen["body"] == b'{"order": 7}'
        assert seen["message_id"] == message_id
        assert seen["session_id"] is None
        assert seen["delivery_count"] == 1
        assert seen["retry"] == 0
        assert seen["content_type"] == "application/json"
        assert seen["subject"] == seen["label"] == "order.created"
        expected = {"traceparent": "00-abc-def-01", "tenant": "t1"}
        assert seen["application_properties"] == seen["user_properties"] == expected
        assert seen["enqueued_time_utc"] >= before.replace(microsecond=0)
        assert seen["enqueued_time_utc"].tzinfo is not None
        assert seen["locked_until"] > seen["enqueued_time_utc"]
        assert seen["expires_at_utc"] > seen["enqueued_time_utc"]
        assert uuid.UUID(seen["lock_token"])
        assert seen["sequence_number"] > 0

        # Completed: nothing is left in the queue, and one log line tells of it.
        wait_for(
            lambda: (
                not _depth(bus.broker, "fx-orders").active
                and not _depth(bus.broker, "fx-orders").locked
            ),
            what="the message to be completed",
        )
        lines = [r for r in caplog.records if getattr(r, "message_id", None) == message_id]
        assert [(r.trigger, r.outcome, r.settled) for r in lines] == [
            ("servicebus", "ok", "completed")
        ]

    def test_a_failing_function_sees_ten_deliveries_then_the_message_is_dead_lettered(
        self, bus, calls
    ):
        message_id = f"evt_{uuid.uuid4().hex[:10]}"
        bus.broker.send("fx-failing", [OutboundMessage(message_id, body=b"{}")])
        wait_for(
            lambda: any(
                d.message_id == message_id for d in bus.broker.peek_dead_letters("fx-failing", 100)
            ),
            what="the message to be dead-lettered",
        )
        seen = calls_for(calls, "bus_failing", message_id)
        assert [c["delivery_count"] for c in seen] == list(range(1, 11))
        [dead] = [
            d
            for d in bus.broker.peek_dead_letters("fx-failing", 100)
            if d.message_id == message_id
        ]
        assert dead.dead_letter_reason == MAX_DELIVERY_COUNT_EXCEEDED
        assert dead.dead_letter_description == (
            "Message could not be consumed after 10 delivery attempts. "
            f"Last error: RuntimeError: cannot handle {message_id}"
        )

    def test_sessions_are_handled_in_order_and_one_message_at_a_time(self, bus, calls):
        run = uuid.uuid4().hex[:6]
        sessions = [f"{run}-{n}" for n in range(4)]
        bus.broker.send(
            "fx-sessions",
            [
                OutboundMessage(f"{s}:{i}", body=f"{s}:{i}".encode(), session_id=s)
                for i in range(6)
                for s in sessions
            ],
        )
        wait_for(
            lambda: (
                sum(
                    1
                    for c in calls["bus_sessions"]
                    if c["event"] == "end" and c["session"] in sessions
                )
                == 24
            ),
            what="every message to be handled",
        )
        events = [c for c in calls["bus_sessions"] if c["session"] in sessions]
        for s in sessions:
            mine = [(c["event"], c["body"]) for c in events if c["session"] == s]
            expected = [(e, f"{s}:{i}") for i in range(6) for e in ("start", "end")]
            assert mine == expected, f"session {s} out of order or overlapping: {mine}"
        # Different sessions did run side by side.
        running, most = set(), 0
        for c in events:
            (running.add if c["event"] == "start" else running.discard)(c["session"])
            most = max(most, len(running))
        assert most >= 2


class TestBatches:
    def test_a_batched_function_gets_a_sessions_messages_in_one_call_in_order(self, bus, calls):
        session = f"batch-{uuid.uuid4().hex[:6]}"
        bodies = [f"{session}:{i}" for i in range(5)]
        bus.broker.send(
            "fx-batches",
            [OutboundMessage(b, body=b.encode(), session_id=session, subject="s") for b in bodies],
        )
        wait_for(
            lambda: (
                not _depth(bus.broker, "fx-batches").active
                and not _depth(bus.broker, "fx-batches").locked
            ),
            what="the batch to be completed",
        )
        [call] = [c for c in calls["bus_batches"] if c["bodies"][0].startswith(session)]
        assert call["bodies"] == bodies
        messages = call["messages"]
        assert all(isinstance(m, azure.functions.servicebus.ServiceBusMessage) for m in messages)
        assert [m.message_id for m in messages] == bodies
        assert {m.session_id for m in messages} == {session}
        assert [m.delivery_count for m in messages] == [1] * 5
        assert [m.subject for m in messages] == ["s"] * 5
        assert [m.sequence_number for m in messages] == sorted(m.sequence_number for m in messages)
        assert all(m.locked_until > m.enqueued_time_utc for m in messages)

    def test_a_poison_message_in_a_batch_is_dead_lettered_alone(self, bus, calls):
        session = f"poison-{uuid.uuid4().hex[:6]}"
        bodies = [f"{session}:0", f"{session}:1", f"{session}:2:poison", f"{session}:3"]
        bus.broker.send(
            "fx-batches",
            [OutboundMessage(b, body=b.encode(), session_id=session) for b in bodies],
        )
        wait_for(
            lambda: any(
                d.message_id == bodies[2] for d in bus.broker.peek_dead_letters("fx-batches", 100)
            ),
            what="the poison message to be dead-lettered",
        )
        wait_for(
            lambda: (
                not _depth(bus.broker, "fx-batches").active
                and not _depth(bus.broker, "fx-batches").locked
            ),
            what="the rest of the session to be completed",
        )
        # Only the poison message is dead-lettered, with its own error.
        dead = [
            d for d in bus.broker.peek_dead_letters("fx-batches", 100) if session in d.message_id
        ]
        assert [(d.message_id, d.delivery_count) for d in dead] == [(bodies[2], 10)]
        assert dead[0].dead_letter_description == (
            "Message could not be consumed after 10 delivery attempts. "
            f"Last error: ValueError: cannot apply {bodies[2]}"
        )
        # Every other message took effect once, the one behind the poison one after it.
        applied = [c["body"] for c in calls["applied"] if c["body"].startswith(session)]
        assert applied == [bodies[0], bodies[1], bodies[3]]
        # The failed batch was tried again one message at a time: the two before the poison
        # message completed then; each later delivery of the poison message (with the one
        # behind it) failed the same way; the one behind ran alone once it was dead-lettered.
        seen = [c["bodies"] for c in calls["bus_batches"] if c["bodies"][0].startswith(session)]
        assert seen[:4] == [bodies, [bodies[0]], [bodies[1]], [bodies[2]]]
        assert seen[-1] == [bodies[3]]
        assert all(b in ([bodies[2], bodies[3]], [bodies[2]]) for b in seen[4:-1])
        assert sum(1 for b in seen if b == [bodies[2]]) == 10


def _depth(broker: LocalBroker, queue: str):
    return next(d for d in broker.depths() if d.queue == queue)


class TestLockRenewal:
    def test_a_session_whose_lock_is_lost_runs_no_further_message_of_its_batch(
        self, fixture_app, pg, loop_thread, calls, caplog
    ):
        caplog.set_level(logging.INFO, logger="devhost.invoke")
        bus = Bus(fixture_app, pg, loop_thread, lock_duration_s=1)
        session = f"lost-{uuid.uuid4().hex[:6]}"
        bodies = [f"{session}:0:slow", f"{session}:1", f"{session}:2"]
        started = lambda body: [  # noqa: E731
            c for c in calls["bus_sessions"] if c["event"] == "start" and c["body"] == body
        ]
        try:
            bus.broker.send(
                "fx-sessions",
                [OutboundMessage(b, body=b.encode(), session_id=session) for b in bodies],
            )
            wait_for(lambda: started(bodies[0]), what="the slow first message to start")
            # Another receiver takes the session while the first message runs (1.5 s, and
            # the lock is renewed every 0.5 s): the renewal finds the lock lost.
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE local_broker.sessions SET lock_token = gen_random_uuid(),"
                    " locked_until = now() + interval '1 hour'"
                    " WHERE queue = 'fx-sessions' AND session_id = %s",
                    (session,),
                )
            wait_for(
                lambda: any(getattr(r, "message_id", None) == bodies[0] for r in caplog.records),
                what="the batch to be settled",
            )
            assert started(bodies[1]) == []
            # The other receiver lets go: the rest run once each, in order.
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE local_broker.sessions SET locked_until = now() - interval '1 second'"
                    " WHERE queue = 'fx-sessions' AND session_id = %s",
                    (session,),
                )
            wait_for(
                lambda: any(getattr(r, "message_id", None) == bodies[2] for r in caplog.records),
                what="the rest of the session to run",
            )
        finally:
            bus.close()
        # The first message's own lock lapsed with the session's, so it may run again
        # (at least once); the two behind it ran once each, after it, in order.
        starts = [
            c["body"]
            for c in calls["bus_sessions"]
            if c["session"] == session and c["event"] == "start"
        ]
        assert starts[-2:] == bodies[1:] and set(starts[:-2]) == {bodies[0]}, starts

    def test_a_function_outlasting_the_lock_keeps_it_and_completes(
        self, fixture_app, pg, loop_thread, calls, caplog
    ):
        caplog.set_level(logging.INFO, logger="devhost.invoke")
        bus = Bus(fixture_app, pg, loop_thread, lock_duration_s=1)
        try:
            message_id = f"slow-{uuid.uuid4().hex[:8]}"
            # The function runs 2.5 s against a 1 s lock.
            bus.broker.send("fx-slow", [OutboundMessage(message_id, body=b"2.5")])
            wait_for(
                lambda: any(getattr(r, "message_id", None) == message_id for r in caplog.records),
                what="the invocation to end",
            )
        finally:
            bus.close()
        assert len(calls_for(calls, "bus_slow", message_id)) == 1
        [line] = [r for r in caplog.records if getattr(r, "message_id", None) == message_id]
        assert (line.outcome, line.settled) == ("ok", "completed")


class TestBusCli:
    def test_send_list_and_peek_the_dead_letters(self, pg, monkeypatch, tmp_path, capsys):
        monkeypatch.setattr("devhost.cli.setup_console_logging", lambda level: None)
        monkeypatch.setenv("DATABASE_URL", pg.url)

        def cli(*args: str) -> int:
            return main(["--app-dir", str(tmp_path), "bus", *args])

        assert cli("send", "quickbooks-events", "{}", "--id", "cli-1") == 1
        assert "queue quickbooks-events requires a session id" in capsys.readouterr().err
        sent = cli(
            "send",
            "quickbooks-events",
            '{"realm": 1}',
            "--id",
            "cli-1",
            "--session",
            "realm-1",
            "--property",
            "source=cli",
        )
        assert sent == 0
        assert capsys.readouterr().out == "sent cli-1 to quickbooks-events\n"
        assert cli("ls") == 0
        [row] = [
            line.split()
            for line in capsys.readouterr().out.splitlines()
            if line.startswith("quickbooks-events")
        ]
        assert row == ["quickbooks-events", "1", "0", "0", "0"]

        with ConnectionPool(pg.url, min_size=1, open=True) as pool:
            broker = LocalBroker(pool)
            got = broker.receive("quickbooks-events", session_id="realm-1")
            assert got.application_properties == {"source": "cli"}
            while broker.abandon("quickbooks-events", got.lock_token, "boom") != "dead-lettered":
                got = broker.receive("quickbooks-events", session_id="realm-1")
        assert cli("dlq", "quickbooks-events") == 0
        out = capsys.readouterr().out
        assert "cli-1  session=realm-1  deliveries=10  MaxDeliveryCountExceeded:" in out
        assert cli("dlq", "no-such-queue") == 1
        assert "queue 'no-such-queue' does not exist" in capsys.readouterr().err
