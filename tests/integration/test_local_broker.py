"""The local broker against a real Postgres: each Service Bus semantic it promises."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from psycopg_pool import ConnectionPool

from shared.adapters.local_broker import (
    MAX_DELIVERY_COUNT_EXCEEDED,
    TTL_EXPIRED,
    LocalBroker,
)
from shared.errors import NotFound, ValidationError
from shared.messaging import (
    ORIGINAL_MESSAGE_ID_PROPERTY,
    QUEUES,
    STRIPE_EVENTS_QUEUE,
    OutboundMessage,
    QueueSpec,
    resubmitted_message_id,
)
from tests.conftest import REPO


@pytest.fixture(scope="module")
def pool(services: dict[str, str]) -> Iterator[ConnectionPool]:
    with ConnectionPool(services["DATABASE_URL"], min_size=1, max_size=8, open=True) as p:
        yield p


@pytest.fixture
def broker(pool: ConnectionPool) -> LocalBroker:
    return LocalBroker(pool)


def new_queue(broker: LocalBroker, **values: object) -> str:
    """Declare a queue no other test uses."""
    spec = QueueSpec(f"q-{uuid.uuid4().hex[:10]}", **values)  # type: ignore[arg-type]
    broker.declare(spec)
    return spec.name


def msg(message_id: str, session: str | None = None, **values: object) -> OutboundMessage:
    return OutboundMessage(message_id, body=message_id.encode(), session_id=session, **values)  # type: ignore[arg-type]


def wait_for(predicate, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class TestQueues:
    def test_app_queues_are_declared_on_first_use(self, broker):
        assert set(QUEUES) <= set(broker.queue_names())
        assert broker.spec(STRIPE_EVENTS_QUEUE).requires_session

    def test_a_queue_declared_elsewhere_is_found_in_the_database(self, broker, pool):
        name = new_queue(broker, requires_session=False, lock_duration_s=5)
        assert LocalBroker(pool, queues={}).spec(name).lock_duration_s == 5

    def test_unknown_queue_is_not_found(self, broker):
        with pytest.raises(NotFound, match="queue 'no-such-queue' does not exist"):
            broker.send("no-such-queue", [msg("a")])

    def test_session_queue_refuses_a_message_without_session(self, broker):
        queue = new_queue(broker, requires_session=True)
        with pytest.raises(ValidationError, match=f"queue {queue} requires a session id"):
            broker.send(queue, [msg("a")])


class TestPeekLock:
    def test_received_message_carries_what_was_sent(self, broker):
        queue = new_queue(broker, requires_session=False)
        broker.send(
            queue,
            [
                OutboundMessage(
                    "evt_1",
                    body=b'{"id": "evt_1"}',
                    subject="invoice.paid",
                    application_properties={"traceparent": "00-abc-01"},
                )
            ],
        )
        got = broker.receive(queue)
        assert got is not None
        assert (got.message_id, got.body, got.subject) == (
            "evt_1",
            b'{"id": "evt_1"}',
            "invoice.paid",
        )
        assert got.application_properties == {"traceparent": "00-abc-01"}
        assert got.content_type == "application/json"
        assert got.delivery_count == 1
        assert got.locked_until > got.enqueued_time

    def test_a_locked_message_is_not_delivered_twice(self, broker):
        queue = new_queue(broker, requires_session=False)
        broker.send(queue, [msg("a")])
        assert broker.receive(queue) is not None
        assert broker.receive(queue) is None

    def test_complete_removes_and_abandon_redelivers_with_count_plus_one(self, broker):
        queue = new_queue(broker, requires_session=False)
        broker.send(queue, [msg("a"), msg("b")])
        first = broker.receive(queue)
        assert broker.abandon(queue, first.lock_token, "ValueError: bad") == "abandoned"
        again = broker.receive(queue)
        assert (again.message_id, again.delivery_count) == ("a", 2)
        assert broker.complete(queue, again.lock_token) == "completed"
        assert broker.complete(queue, again.lock_token) == "lost"
        assert broker.receive(queue).message_id == "b"

    def test_renewal_extends_the_lock(self, broker):
        queue = new_queue(broker, requires_session=False, lock_duration_s=30)
        broker.send(queue, [msg("a")])
        got = broker.receive(queue)
        renewed = broker.renew_lock(queue, got.lock_token)
        assert renewed is not None and renewed >= got.locked_until
        assert broker.renew_lock(queue, str(uuid.uuid4())) is None

    def test_max_delivery_count_dead_letters_with_reason_and_last_error(self, broker):
        queue = new_queue(broker, requires_session=False)
        broker.send(queue, [msg("poison")])
        outcomes = []
        for attempt in range(1, 11):
            got = broker.receive(queue)
            assert got.delivery_count == attempt
            outcomes.append(broker.abandon(queue, got.lock_token, f"RuntimeError: try {attempt}"))
        assert outcomes == ["abandoned"] * 9 + ["dead-lettered"]
        assert broker.receive(queue) is None
        [dead] = broker.peek_dead_letters(queue, 10)
        assert dead.message_id == "poison"
        assert dead.delivery_count == 10
        assert dead.dead_letter_reason == MAX_DELIVERY_COUNT_EXCEEDED
        assert dead.dead_letter_description == (
            "Message could not be consumed after 10 delivery attempts. "
            "Last error: RuntimeError: try 10"
        )

    def test_a_consumer_killed_with_sigkill_leaves_the_message_to_be_redelivered(
        self, broker, services
    ):
        queue = new_queue(broker, requires_session=True, lock_duration_s=1)
        broker.send(queue, [msg("m1", session="cus_1"), msg("m2", session="cus_1")])
        consumer = textwrap.dedent(
            f"""
            import sys, time
            from psycopg_pool import ConnectionPool
            from shared.adapters.local_broker import LocalBroker
            with ConnectionPool({services["DATABASE_URL"]!r}, min_size=1, open=True) as pool:
                got = LocalBroker(pool, queues={{}}).receive({queue!r})
                print(got.message_id, got.delivery_count, flush=True)
                time.sleep(600)
            """
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", consumer], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().split() == ["m1", "1"]
            # While the killed consumer's lock lasts, its session is nobody else's.
            assert broker.receive(queue) is None
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        again = wait_for(lambda: broker.receive(queue), what="the lock to expire")
        assert (again.message_id, again.delivery_count) == ("m1", 2)

    def test_expired_messages_are_dead_lettered(self, broker):
        queue = new_queue(broker, requires_session=False, default_message_ttl_s=1)
        broker.send(queue, [msg("short-lived")])
        time.sleep(1.5)  # past its time to live, before any receive
        assert broker.receive(queue) is None
        [dead] = broker.peek_dead_letters(queue, 1)
        assert dead.dead_letter_reason == TTL_EXPIRED


class TestDuplicateDetection:
    def test_a_repeated_message_id_within_the_window_is_dropped(self, broker):
        queue = new_queue(broker, requires_session=False)
        broker.send(queue, [msg("evt_1")])
        broker.send(queue, [msg("evt_1"), msg("evt_2")])
        received = [broker.receive(queue), broker.receive(queue), broker.receive(queue)]
        assert [m.message_id if m else None for m in received] == ["evt_1", "evt_2", None]

    def test_the_same_id_is_accepted_again_after_the_window(self, broker):
        queue = new_queue(broker, requires_session=False, duplicate_detection_window_s=1)
        broker.send(queue, [msg("evt_1")])
        first = broker.receive(queue)
        broker.complete(queue, first.lock_token)
        broker.send(queue, [msg("evt_1")])
        assert broker.receive(queue) is None

        def resent() -> bool:
            broker.send(queue, [msg("evt_1")])
            return any(d.active for d in broker.depths() if d.queue == queue)

        wait_for(resent, what="the duplicate detection window to pass")
        assert broker.receive(queue).message_id == "evt_1"

    def test_dropped_duplicates_never_reach_a_consumer_even_when_sent_concurrently(self, broker):
        queue = new_queue(broker, requires_session=False)
        barrier = threading.Barrier(6)

        def send() -> None:
            barrier.wait()
            broker.send(queue, [msg("evt_same")])

        threads = [threading.Thread(target=send) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert broker.receive(queue).message_id == "evt_same"
        assert broker.receive(queue) is None


class TestSessions:
    def test_messages_of_a_session_come_in_order_one_after_the_other(self, broker):
        queue = new_queue(broker, requires_session=True)
        broker.send(queue, [msg(f"a{i}", session="cus_a") for i in range(5)])
        seen = []
        while (got := broker.receive(queue)) is not None:
            assert broker.receive(queue) is None, "a second message of a busy session"
            seen.append(got.message_id)
            broker.complete(queue, got.lock_token)
        assert seen == ["a0", "a1", "a2", "a3", "a4"]

    def test_an_abandoned_head_blocks_its_session_and_comes_back_first(self, broker):
        queue = new_queue(broker, requires_session=True)
        broker.send(queue, [msg("a1", session="s"), msg("a2", session="s")])
        head = broker.receive(queue)
        broker.abandon(queue, head.lock_token, "boom", redeliver_after_s=30)
        assert broker.receive(queue) is None, "a2 overtook a1 during its retry delay"

    def test_a_dead_lettered_head_lets_the_next_one_through(self, broker):
        queue = new_queue(broker, requires_session=True, max_delivery_count=1)
        broker.send(queue, [msg("a1", session="s"), msg("a2", session="s")])
        head = broker.receive(queue)
        assert broker.abandon(queue, head.lock_token, "boom") == "dead-lettered"
        assert broker.receive(queue).message_id == "a2"

    def test_each_session_goes_to_one_consumer_and_sessions_run_side_by_side(self, broker):
        queue = new_queue(broker, requires_session=True)
        broker.send(
            queue,
            [msg(f"{s}{i}", session=s) for i in range(3) for s in ("x", "y", "z")],
        )
        held = [broker.receive(queue) for _ in range(4)]
        assert sorted(m.session_id for m in held[:3]) == ["x", "y", "z"]
        assert held[3] is None

    def test_concurrent_consumers_keep_every_session_in_order(self, broker, pool):
        queue = new_queue(broker, requires_session=True)
        sessions = [f"cus_{n}" for n in range(6)]
        broker.send(queue, [msg(f"{s}:{i}", session=s) for i in range(8) for s in sessions])
        log: list[tuple[str, int]] = []
        active: dict[str, int] = {}
        overlaps: list[str] = []
        guard = threading.Lock()

        def consume() -> None:
            mine = LocalBroker(pool, queues={})
            idle = 0
            while idle < 20:
                got = mine.receive(queue)
                if got is None:
                    idle += 1
                    time.sleep(0.01)
                    continue
                idle = 0
                with guard:
                    if active.get(got.session_id):
                        overlaps.append(got.session_id)
                    active[got.session_id] = 1
                    session, index = got.message_id.split(":")
                    log.append((session, int(index)))
                time.sleep(0.002)
                with guard:
                    active[got.session_id] = 0
                mine.complete(queue, got.lock_token)

        threads = [threading.Thread(target=consume) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert overlaps == []
        for s in sessions:
            assert [i for sess, i in log if sess == s] == list(range(8))


class TestScheduled:
    def test_a_scheduled_message_is_invisible_until_its_time(self, broker):
        queue = new_queue(broker, requires_session=False)
        at = datetime.now(UTC) + timedelta(seconds=1)
        broker.send(queue, [msg("later", scheduled_enqueue_time=at)])
        assert broker.receive(queue) is None
        assert [d.scheduled for d in broker.depths() if d.queue == queue] == [1]
        got = wait_for(lambda: broker.receive(queue), what="the scheduled time")
        assert got.message_id == "later"
        assert got.scheduled_enqueue_time is not None


class TestResubmit:
    def test_resubmit_sends_a_copy_and_empties_the_dlq(self, broker):
        queue = new_queue(broker, requires_session=True, max_delivery_count=1)
        broker.send(queue, [msg("evt_9", session="cus_9", application_properties={"k": "v"})])
        got = broker.receive(queue)
        broker.abandon(queue, got.lock_token, "boom")
        [dead] = broker.peek_dead_letters(queue, 5)

        outcome = broker.resubmit_dead_letters(queue, ["evt_9", "evt_unknown"])
        assert outcome.resubmitted == ("evt_9",)
        assert outcome.not_found == ("evt_unknown",)
        assert broker.peek_dead_letters(queue, 5) == []
        copy = broker.receive(queue)
        assert copy.message_id == resubmitted_message_id("evt_9", dead.sequence_number)
        assert copy.session_id == "cus_9"
        assert copy.body == b"evt_9"
        assert copy.delivery_count == 1
        assert copy.application_properties == {"k": "v", ORIGINAL_MESSAGE_ID_PROPERTY: "evt_9"}
        # Nothing is left to resubmit a second time.
        assert broker.resubmit_dead_letters(queue, ["evt_9"]).not_found == ("evt_9",)


class TestRestart:
    def test_messages_and_dead_letters_outlive_the_broker_and_its_pool(self, services):
        url = services["DATABASE_URL"]
        with ConnectionPool(url, min_size=1, open=True) as first_pool:
            first = LocalBroker(first_pool)
            queue = new_queue(first, requires_session=False, max_delivery_count=1)
            first.send(queue, [msg("dead"), msg("kept")])
            got = first.receive(queue)
            assert first.abandon(queue, got.lock_token, "boom") == "dead-lettered"
        with ConnectionPool(url, min_size=1, open=True) as second_pool:
            second = LocalBroker(second_pool, queues={})
            assert [d.message_id for d in second.peek_dead_letters(queue, 5)] == ["dead"]
            assert second.receive(queue).message_id == "kept"


class TestNamedSession:
    def test_a_receiver_can_ask_for_one_session(self, broker):
        queue = new_queue(broker, requires_session=True)
        broker.send(queue, [msg("a1", session="a"), msg("b1", session="b")])
        assert broker.receive(queue, session_id="b").message_id == "b1"
        assert broker.receive(queue, session_id="b") is None
        assert broker.receive(queue, session_id="nobody") is None
        assert broker.receive(queue).message_id == "a1"


def delivery_counts(pool: ConnectionPool, queue: str) -> dict[str, int]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT message_id, delivery_count FROM local_broker.messages WHERE queue = %s",
            (queue,),
        ).fetchall()
    return {str(m): int(c) for m, c in rows}


class TestSessionBatches:
    def test_one_search_locks_runs_of_several_sessions_in_order(self, broker):
        queue = new_queue(broker, requires_session=True)
        broker.send(queue, [msg(f"{s}{i}", session=s) for i in range(4) for s in "abc"])

        batches = broker.receive_session_batches(queue, max_sessions=2, max_count=3)

        assert [(b.session_id, [m.message_id for m in b.messages]) for b in batches] == [
            ("a", ["a0", "a1", "a2"]),
            ("b", ["b0", "b1", "b2"]),
        ]
        assert len({m.lock_token for b in batches for m in b.messages}) == 6
        # Locked sessions are nobody else's, message by message or in batches.
        assert broker.receive(queue).session_id == "c"
        assert broker.receive_session_batches(queue, max_sessions=5, max_count=3) == []

    def test_a_failure_ends_the_batch_and_untried_messages_keep_their_count(self, broker, pool):
        queue = new_queue(broker, requires_session=True)
        broker.send(queue, [msg(f"a{i}", session="a") for i in range(5)])
        [batch] = broker.receive_session_batches(queue, max_sessions=1, max_count=5)
        a0, a1, a2 = batch.messages[:3]

        settled = broker.settle_session_batch(
            batch, [a0.lock_token, a1.lock_token], failed=(a2.lock_token, "boom", 0.0)
        )

        assert settled == {
            a0.lock_token: "completed",
            a1.lock_token: "completed",
            a2.lock_token: "abandoned",
        }
        assert delivery_counts(pool, queue) == {"a2": 1, "a3": 0, "a4": 0}
        [again] = broker.receive_session_batches(queue, max_sessions=1, max_count=5)
        assert [(m.message_id, m.delivery_count) for m in again.messages] == [
            ("a2", 2),
            ("a3", 1),
            ("a4", 1),
        ]

    def test_a_batch_stops_before_a_message_waiting_out_its_retry_delay(self, broker):
        queue = new_queue(broker, requires_session=True)
        broker.send(queue, [msg(f"a{i}", session="a") for i in range(3)])
        [batch] = broker.receive_session_batches(queue, max_sessions=1, max_count=5)
        head = batch.messages[0]
        broker.settle_session_batch(batch, [], failed=(head.lock_token, "boom", 30.0))

        assert broker.receive_session_batches(queue, max_sessions=1, max_count=5) == []
        assert broker.receive(queue) is None, "a1 overtook a0 during its retry delay"

    def test_the_last_allowed_delivery_failing_in_a_batch_dead_letters(self, broker):
        queue = new_queue(broker, requires_session=True, max_delivery_count=1)
        broker.send(queue, [msg("a1", session="s"), msg("a2", session="s")])
        [batch] = broker.receive_session_batches(queue, max_sessions=1, max_count=5)
        first = batch.messages[0]

        settled = broker.settle_session_batch(batch, [], failed=(first.lock_token, "boom", 0.0))

        assert settled == {first.lock_token: "dead-lettered"}
        [dead] = broker.peek_dead_letters(queue, 10)
        assert (dead.message_id, dead.dead_letter_reason) == ("a1", MAX_DELIVERY_COUNT_EXCEEDED)
        [next_batch] = broker.receive_session_batches(queue, max_sessions=1, max_count=5)
        assert [(m.message_id, m.delivery_count) for m in next_batch.messages] == [("a2", 1)]

    def test_an_expired_batch_lock_settles_as_lost(self, broker):
        queue = new_queue(broker, requires_session=True, lock_duration_s=1)
        broker.send(queue, [msg("a1", session="s")])
        [batch] = broker.receive_session_batches(queue, max_sessions=1, max_count=5)
        time.sleep(1.2)
        [taken] = broker.receive_session_batches(queue, max_sessions=1, max_count=5)

        assert broker.settle_session_batch(batch, [batch.messages[0].lock_token]) == {
            batch.messages[0].lock_token: "lost"
        }
        assert broker.settle_session_batch(taken, [taken.messages[0].lock_token]) == {
            taken.messages[0].lock_token: "completed"
        }

    def test_renewal_extends_every_lock_of_the_batch(self, broker, pool):
        queue = new_queue(broker, requires_session=True)
        broker.send(queue, [msg("a1", session="s"), msg("a2", session="s")])
        [batch] = broker.receive_session_batches(queue, max_sessions=1, max_count=5)
        until = broker.renew_session_batch(batch)
        assert until is not None and until > batch.messages[0].locked_until
        with pool.connection() as conn:
            locks = conn.execute(
                "SELECT locked_until FROM local_broker.messages WHERE queue = %s", (queue,)
            ).fetchall()
        assert [row[0] for row in locks] == [until, until]
