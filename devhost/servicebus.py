"""Service Bus triggers: receive in peek-lock mode, invoke, then complete or abandon.

Messages come from the local broker in PostgreSQL (``shared.adapters.local_broker``), or
from a namespace through azure-servicebus when the trigger's connection setting names one.
The function gets an ``azure.functions.ServiceBusMessage`` built by the library's own
converter from the trigger metadata the Functions host sends, so it sees what it would
see in Azure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import azure.functions as func
from azure.functions import meta
from azure.functions.servicebus import ServiceBusMessageInConverter
from psycopg_pool import ConnectionPool

from devhost.blobs import resolve_setting_refs
from devhost.discovery import FunctionSpec
from devhost.errors import ConfigError
from devhost.invoke import Invoker, log_invocation, new_invocation_id
from devhost.settings import BUS_RETRY_BACKOFF_MAX_S, HostSettings
from shared.adapters.local_broker import LocalBroker, ReceivedMessage, SessionBatch
from shared.messaging import QUEUES, QueueSpec

log = logging.getLogger(__name__)

# The Functions host's default connection setting when a trigger names none.
DEFAULT_CONNECTION = "AzureWebJobsServiceBus"
NAMESPACE_SUFFIX = "__fullyQualifiedNamespace"
DB_POOL_SIZE = 8
# Messages of one session that a receive from the local broker locks together, as a Service
# Bus session receiver keeps its session between messages: one receive, one settlement
# transaction and one lock renewal then serve the whole run instead of each message. A
# function that takes lists gets batches of up to host.json's maxMessageBatchSize instead.
LOCAL_SESSION_BATCH = 32


@dataclass(frozen=True)
class BusWatch:
    """A Service Bus-triggered function and where its messages come from.

    Attributes:
        spec: the function.
        queue: the queue's properties (from ``shared.messaging.QUEUES`` when listed there).
        connection: the connection string or namespace of a real namespace, or None for the
            local broker.
    """

    spec: FunctionSpec
    queue: QueueSpec
    connection: str | None

    @property
    def batched(self) -> bool:
        """True when the function takes a list of messages (``cardinality="many"``)."""
        return str(self.spec.trigger.get("cardinality") or "one").lower() == "many"


def bus_watches(specs: list[FunctionSpec], environ: Mapping[str, str]) -> list[BusWatch]:
    """Resolve the queue and the connection of each Service Bus-triggered function.

    Raises:
        ConfigError: a queue name references a missing setting, or the trigger's
            ``isSessionsEnabled`` disagrees with the queue's definition.
    """
    watches = []
    for spec in specs:
        name = resolve_setting_refs(str(spec.trigger["queueName"]), environ)
        sessions = bool(spec.trigger.get("isSessionsEnabled"))
        queue = QUEUES.get(name) or QueueSpec(name, requires_session=sessions)
        if queue.requires_session != sessions:
            raise ConfigError(
                f"Service Bus trigger {spec.name}: queue {name} "
                f"{'requires' if queue.requires_session else 'does not use'} sessions, but "
                f"the trigger has is_sessions_enabled={sessions}"
            )
        setting = str(spec.trigger.get("connection") or DEFAULT_CONNECTION)
        connection = environ.get(setting) or environ.get(setting + NAMESPACE_SUFFIX) or None
        watches.append(BusWatch(spec, queue, connection))
    return watches


def functions_message(message: ReceivedMessage) -> func.ServiceBusMessage:
    """The ``func.ServiceBusMessage`` the Python worker would build for a delivery.

    The trigger metadata has the names and types the Functions host sends, and the
    library's converter turns it into the message object, as the worker does.
    """
    properties = json.dumps(dict(message.application_properties))
    metadata: dict[str, meta.Datum] = {
        "MessageId": meta.Datum(message.message_id, "string"),
        "DeliveryCount": meta.Datum(message.delivery_count, "int"),
        "SequenceNumber": meta.Datum(message.sequence_number, "int"),
        "EnqueuedTimeUtc": meta.Datum(_utc_text(message.enqueued_time), "string"),
        "ExpiresAtUtc": meta.Datum(_utc_text(message.expires_at), "string"),
        "LockedUntil": meta.Datum(_utc_text(message.locked_until), "string"),
        "LockToken": meta.Datum(message.lock_token, "string"),
        "ApplicationProperties": meta.Datum(properties, "json"),
        "UserProperties": meta.Datum(properties, "json"),
    }
    optional = {
        "SessionId": message.session_id,
        "ContentType": message.content_type,
        "Subject": message.subject,
        "Label": message.subject,
        "ScheduledEnqueueTimeUtc": (
            _utc_text(message.scheduled_enqueue_time) if message.scheduled_enqueue_time else None
        ),
    }
    metadata.update({k: meta.Datum(v, "string") for k, v in optional.items() if v is not None})
    decoded = ServiceBusMessageInConverter.decode(
        meta.Datum(message.body, "bytes"), trigger_metadata=metadata
    )
    assert isinstance(decoded, func.ServiceBusMessage)
    return decoded


@dataclass(frozen=True, slots=True)
class _Collection:
    """A collection datum's value, in the shape of the worker's protobuf message."""

    bytes: list[bytes] = field(default_factory=list)
    string: list[str] = field(default_factory=list)
    sint64: list[int] = field(default_factory=list)


def functions_messages(messages: list[ReceivedMessage]) -> list[func.ServiceBusMessage]:
    """The list of ``func.ServiceBusMessage`` the Python worker builds for a batch (a
    function with ``cardinality="many"``), from the per-message arrays the host sends."""
    columns: dict[str, list[Any]] = {
        "MessageId": [m.message_id for m in messages],
        "DeliveryCount": [m.delivery_count for m in messages],
        "SequenceNumber": [m.sequence_number for m in messages],
        "EnqueuedTimeUtc": [_utc_text(m.enqueued_time) for m in messages],
        "ExpiresAtUtc": [_utc_text(m.expires_at) for m in messages],
        "LockedUntil": [_utc_text(m.locked_until) for m in messages],
        "LockToken": [m.lock_token for m in messages],
        "ApplicationProperties": [dict(m.application_properties) for m in messages],
        "UserProperties": [dict(m.application_properties) for m in messages],
        "SessionId": [m.session_id for m in messages],
        "ContentType": [m.content_type for m in messages],
        "Subject": [m.subject for m in messages],
        "Label": [m.subject for m in messages],
        "ScheduledEnqueueTimeUtc": [
            _utc_text(m.scheduled_enqueue_time) if m.scheduled_enqueue_time else None
            for m in messages
        ],
    }
    metadata = {f"{name}Array": _array(values) for name, values in columns.items()}
    bodies = meta.Datum(_Collection(bytes=[m.body for m in messages]), "collection_bytes")
    decoded = ServiceBusMessageInConverter.decode(bodies, trigger_metadata=metadata)
    assert isinstance(decoded, list)
    return list(decoded)


def _array(values: list[Any]) -> meta.Datum:
    # Text and integers travel as typed collections, which the library indexes directly;
    # JSON (for objects and missing values) it decodes again for every message it reads.
    if all(isinstance(v, str) for v in values):
        return meta.Datum(_Collection(string=values), "collection_string")
    if all(isinstance(v, int) for v in values):
        return meta.Datum(_Collection(sint64=values), "collection_sint64")
    return meta.Datum(json.dumps(values), "json")


def _utc_text(moment: datetime) -> str:
    # Whole seconds in the form the library tries first: each other form it tries is a
    # failed parse. Sequence numbers, not these times, order the messages.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


class Delivery(Protocol):
    """One locked message, however it was received."""

    @property
    def message(self) -> ReceivedMessage: ...

    async def renew(self) -> bool: ...

    async def complete(self) -> str: ...

    async def abandon(self, error: str, redeliver_after_s: float) -> str: ...


class Source(Protocol):
    """Where one queue's messages are received from."""

    async def receive(self) -> Delivery | None: ...

    async def close(self) -> None: ...


@dataclass
class _LocalDelivery:
    broker: LocalBroker
    message: ReceivedMessage

    async def renew(self) -> bool:
        queue, token = self.message.queue, self.message.lock_token
        return await asyncio.to_thread(self.broker.renew_lock, queue, token) is not None

    async def complete(self) -> str:
        queue, token = self.message.queue, self.message.lock_token
        return await asyncio.to_thread(self.broker.complete, queue, token)

    async def abandon(self, error: str, redeliver_after_s: float) -> str:
        return await asyncio.to_thread(
            lambda: self.broker.abandon(
                self.message.queue,
                self.message.lock_token,
                error,
                redeliver_after_s=redeliver_after_s,
            )
        )


class LocalSource:
    """A queue of the local broker."""

    def __init__(self, broker: LocalBroker, queue: QueueSpec) -> None:
        self._broker = broker
        self._queue = queue

    async def receive(self) -> Delivery | None:
        """The next message, locked, or None when the queue has none to give."""
        got = await asyncio.to_thread(self._broker.receive, self._queue.name)
        return _LocalDelivery(self._broker, got) if got else None

    async def receive_batches(self, max_sessions: int, max_count: int) -> list[SessionBatch]:
        """Up to ``max_sessions`` free sessions' next messages, locked with their sessions."""
        return await asyncio.to_thread(
            self._broker.receive_session_batches, self._queue.name, max_sessions, max_count
        )

    async def renew_batch(self, batch: SessionBatch) -> bool:
        """Extend the batch's locks; False when the session lock was lost."""
        return await asyncio.to_thread(self._broker.renew_session_batch, batch) is not None

    async def settle_batch(
        self, batch: SessionBatch, completed: list[str], failed: tuple[str, str, float] | None
    ) -> dict[str, str]:
        """Complete, abandon and release the batch's messages in one transaction."""
        outcome = await asyncio.to_thread(
            lambda: self._broker.settle_session_batch(batch, completed, failed=failed)
        )
        return dict(outcome)

    async def close(self) -> None:
        """Nothing to close: the broker belongs to the dispatcher."""


class BusDispatcher:
    """Receives for every Service Bus-triggered function until stopped.

    Concurrency follows host.json ``extensions.serviceBus``: ``maxConcurrentSessions``
    sessions at a time on a session queue (one message of each at a time, in order, or a
    list of up to ``maxMessageBatchSize`` of them for a function with
    ``cardinality="many"``), else ``maxConcurrentCalls`` messages; locks are renewed while a
    function runs, for at most ``maxAutoLockRenewalDuration``.

    Args:
        watches: the functions (see ``bus_watches``).
        invoker: runs the functions.
        settings: poll interval, retry backoff and the concurrency limits.
        database_url: the local broker's database; needed when a watch has no connection.
    """

    def __init__(
        self,
        watches: list[BusWatch],
        invoker: Invoker,
        settings: HostSettings,
        *,
        database_url: str | None,
    ) -> None:
        self._watches = watches
        self._invoker = invoker
        self._settings = settings
        self._database_url = database_url
        self._pool: ConnectionPool | None = None
        self.broker: LocalBroker | None = None
        self._sources: dict[str, Source] = {}
        self._inflight: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """Connect to the local broker (declaring its queues) and to any namespace.

        Raises:
            ConfigError: a trigger needs the local broker and there is no database.
        """
        local = [w for w in self._watches if w.connection is None]
        if local:
            if not self._database_url:
                raise ConfigError("Service Bus triggers need DATABASE_URL for the local broker")
            self._pool = ConnectionPool(
                self._database_url, min_size=1, max_size=DB_POOL_SIZE, open=False
            )
            await asyncio.to_thread(self._pool.open, True)
            self.broker = LocalBroker(self._pool)
            for watch in local:
                await asyncio.to_thread(self.broker.declare, watch.queue)
        for watch in self._watches:
            if watch.connection is None:
                assert self.broker is not None
                self._sources[watch.spec.name] = LocalSource(self.broker, watch.queue)
            else:
                from devhost.servicebus_remote import RemoteSource

                self._sources[watch.spec.name] = RemoteSource(
                    watch.connection, watch.queue, self._settings.bus_poll_interval_s
                )

    async def close(self) -> None:
        """Cancel what still runs and close the connections."""
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        for source in self._sources.values():
            await source.close()
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)

    async def run(self, stop: asyncio.Event) -> None:
        """Receive for every function until ``stop`` is set."""
        await asyncio.gather(*(self._run_watch(w, stop) for w in self._watches))

    async def drain(self) -> None:
        """Wait until every invocation started has finished."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def _run_watch(self, watch: BusWatch, stop: asyncio.Event) -> None:
        settings = self._settings
        limit = (
            settings.bus_max_concurrent_sessions
            if watch.queue.requires_session
            else settings.bus_max_concurrent_calls
        )
        slots = asyncio.Semaphore(limit)
        source = self._sources[watch.spec.name]
        last_error = ""
        while not stop.is_set():
            await slots.acquire()
            try:
                if isinstance(source, LocalSource) and watch.queue.requires_session:
                    received = await self._receive_sessions(watch, source, slots)
                else:
                    received = await self._receive_one(watch, source)
            except Exception as exc:  # noqa: BLE001 - a broker outage must not stop the host
                slots.release()
                if str(exc) != last_error:
                    log.warning("cannot receive from queue %s: %s", watch.queue.name, exc)
                last_error = str(exc)
                await _pause(stop, settings.bus_poll_interval_s)
                continue
            last_error = ""
            if not received:
                slots.release()
                await _pause(stop, settings.bus_poll_interval_s)
                continue
            # The slot acquired above, and any more taken for further sessions, each go
            # back when their job ends.
            for job in received:
                task = asyncio.create_task(job)
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                task.add_done_callback(lambda _t: slots.release())

    async def _receive_one(
        self, watch: BusWatch, source: Source
    ) -> list[Coroutine[Any, Any, None]]:
        delivery = await source.receive()
        return [self._process(watch, delivery)] if delivery is not None else []

    async def _receive_sessions(
        self, watch: BusWatch, source: LocalSource, slots: asyncio.Semaphore
    ) -> list[Coroutine[Any, Any, None]]:
        # One search for free sessions fills every free slot: the search is what a receive
        # from the local broker costs, not the number of messages it locks.
        taken = 1
        while not slots.locked():
            await slots.acquire()
            taken += 1
        try:
            size = (
                self._settings.bus_max_message_batch_size if watch.batched else LOCAL_SESSION_BATCH
            )
            batches = await source.receive_batches(taken, size)
        except BaseException:
            for _ in range(taken - 1):
                slots.release()
            raise
        # Keep one slot per batch (the caller releases the first when there is none).
        for _ in range(taken - max(len(batches), 1)):
            slots.release()
        return [self._process_batch(watch, source, batch) for batch in batches]

    async def _process(self, watch: BusWatch, delivery: Delivery) -> None:
        message = delivery.message
        fields: dict[str, Any] = {
            "queue": watch.queue.name,
            "message_id": message.message_id,
            "delivery_count": message.delivery_count,
        }
        if message.session_id is not None:
            fields["session_id"] = message.session_id
        invocation_id = new_invocation_id()
        started = time.monotonic()
        # Limitation: messages are always completed on success (autoCompleteMessages: false
        # is ignored); Python functions cannot settle messages themselves here.
        keeper = asyncio.create_task(self._keep_lock(watch, delivery))
        try:
            await self._invoke_one(watch, message, invocation_id)
        except asyncio.CancelledError:
            # The host is stopping: give the message back for the next start.
            keeper.cancel()
            await asyncio.shield(delivery.abandon("the host stopped", 0.0))
            raise
        except Exception as exc:  # noqa: BLE001 - the app's failure settles the message
            keeper.cancel()
            settled = await delivery.abandon(
                f"{type(exc).__name__}: {exc}", self._backoff(message.delivery_count)
            )
            fields["settled"] = settled
            log_invocation(watch.spec, invocation_id, started, "failed", failed=True, **fields)
            self._report_failure(watch, message, settled, exc)
        else:
            keeper.cancel()
            fields["settled"] = await delivery.complete()
            log_invocation(watch.spec, invocation_id, started, "ok", **fields)

    async def _invoke_one(
        self, watch: BusWatch, message: ReceivedMessage, invocation_id: str
    ) -> None:
        """Call the function with one message, telling it how often it was tried."""
        await self._invoker.call(
            watch.spec,
            _trigger_value(watch, [message]),
            invocation_id=invocation_id,
            retry_count=message.delivery_count - 1,
            max_retry_count=watch.queue.max_delivery_count - 1,
        )

    async def _process_batch(
        self, watch: BusWatch, source: LocalSource, batch: SessionBatch
    ) -> None:
        # A function that takes lists gets the session's batch in one call. Otherwise, and
        # when that call fails, the messages run one after another (``_run_in_turn``).
        keeper = asyncio.create_task(self._keep_batch_lock(watch, source, batch))
        run = _Run()
        try:
            whole = watch.batched and len(batch.messages) > 1
            if whole and await self._call_batch(watch, batch):
                run.completed = [m.lock_token for m in batch.messages]
            else:
                await self._run_in_turn(watch, batch, keeper, run)
        except asyncio.CancelledError:
            # The host is stopping: give the batch back for the next start.
            if run.failed is None and not run.completed:
                run.failed = (batch.messages[0].lock_token, "the host stopped", 0.0)
            raise
        finally:
            keeper.cancel()
            settled = await asyncio.shield(source.settle_batch(batch, run.completed, run.failed))
        for message, invocation_id, started in run.ran:
            fields: dict[str, Any] = {
                "queue": watch.queue.name,
                "message_id": message.message_id,
                "delivery_count": message.delivery_count,
                "session_id": message.session_id,
                "settled": settled.get(message.lock_token, "lost"),
            }
            failed = run.failed is not None and run.failed[0] == message.lock_token
            if run.error is not None and failed:
                log_invocation(watch.spec, invocation_id, started, "failed", failed=True, **fields)
                self._report_failure(watch, message, fields["settled"], run.error)
            else:
                log_invocation(watch.spec, invocation_id, started, "ok", **fields)

    async def _run_in_turn(
        self, watch: BusWatch, batch: SessionBatch, keeper: asyncio.Task[bool], run: _Run
    ) -> None:
        """Invoke the function once per message of the batch, in order, noting each in
        ``run``; the first failure ends the batch, and the messages behind it go back
        untried."""
        for message in batch.messages:
            if keeper.done() and keeper.result():
                # The session's lock is lost: another receiver may hold the session now,
                # so the rest go back untried rather than run beside its work.
                return
            invocation_id = new_invocation_id()
            run.ran.append((message, invocation_id, time.monotonic()))
            try:
                await self._invoke_one(watch, message, invocation_id)
            except asyncio.CancelledError:
                run.failed = (message.lock_token, "the host stopped", 0.0)
                raise
            except Exception as exc:  # noqa: BLE001 - the app's failure settles it
                reason = f"{type(exc).__name__}: {exc}"
                run.failed = (message.lock_token, reason, self._backoff(message.delivery_count))
                run.error = exc
                return
            run.completed.append(message.lock_token)

    async def _call_batch(self, watch: BusWatch, batch: SessionBatch) -> bool:
        """Invoke a batched function with a session's whole batch; True when it succeeded.

        Limitation: the Functions host abandons a failed batch whole; the devhost instead
        tries its messages again one at a time (``_process_batch``), so that each is settled
        by its own outcome. A function must therefore take a message it applied before
        as a no-op, as it must under any redelivery.
        """
        invocation_id = new_invocation_id()
        started = time.monotonic()
        first = batch.messages[0]
        fields: dict[str, Any] = {
            "queue": watch.queue.name,
            "message_id": first.message_id,
            "message_count": len(batch.messages),
            "delivery_count": max(m.delivery_count for m in batch.messages),
            "session_id": batch.session_id,
        }
        try:
            await self._invoker.call(
                watch.spec,
                functions_messages(batch.messages),
                invocation_id=invocation_id,
                retry_count=first.delivery_count - 1,
                max_retry_count=watch.queue.max_delivery_count - 1,
            )
        except Exception as exc:  # noqa: BLE001 - the messages are tried one at a time next
            log_invocation(watch.spec, invocation_id, started, "failed", failed=True, **fields)
            log.warning(
                "function failed on a batch of %s messages; trying them one at a time: %s",
                len(batch.messages),
                exc,
                extra={"function": watch.spec.name, "queue": watch.queue.name},
            )
            return False
        log_invocation(watch.spec, invocation_id, started, "ok", **fields)
        return True

    async def _keep_batch_lock(
        self, watch: BusWatch, source: LocalSource, batch: SessionBatch
    ) -> bool:
        """Renew a batch's locks at half their duration until cancelled or the time is up.

        Returns:
            True when the session's lock was found lost.
        """
        interval = watch.queue.lock_duration_s / 2
        until = time.monotonic() + self._settings.bus_max_lock_renewal_s
        while time.monotonic() + interval < until:
            await asyncio.sleep(interval)
            try:
                if not await source.renew_batch(batch):
                    log.warning("lost the lock on session %s", batch.session_id)
                    return True
            except Exception as exc:  # noqa: BLE001 - the next renewal may work
                log.warning("renewing the lock failed: %s", exc)
        return False

    def _report_failure(
        self, watch: BusWatch, message: ReceivedMessage, settled: str, exc: Exception
    ) -> None:
        extra = {
            "function": watch.spec.name,
            "queue": watch.queue.name,
            "message_id": message.message_id,
        }
        if settled == "dead-lettered":
            log.error(
                "message dead-lettered after %s deliveries",
                message.delivery_count,
                exc_info=exc,
                extra=extra,
            )
        else:
            log.warning(
                "function failed on a message (delivery %s of %s)",
                message.delivery_count,
                watch.queue.max_delivery_count,
                exc_info=exc,
                extra=extra,
            )

    # Limitation: Service Bus redelivers an abandoned message at once; the devhost waits
    # DEVHOST_BUS_RETRY_BACKOFF_S (doubling) so that a failing dependency is not hammered ten
    # times in a second. Set it to 0 for Service Bus's own timing.
    def _backoff(self, delivery_count: int) -> float:
        first = self._settings.bus_retry_backoff_s
        return min(first * 2 ** (delivery_count - 1), BUS_RETRY_BACKOFF_MAX_S) if first else 0.0

    async def _keep_lock(self, watch: BusWatch, delivery: Delivery) -> None:
        """Renew the lock at half its duration until cancelled or the renewal time is up."""
        interval = watch.queue.lock_duration_s / 2
        until = time.monotonic() + self._settings.bus_max_lock_renewal_s
        while time.monotonic() + interval < until:
            await asyncio.sleep(interval)
            try:
                if not await delivery.renew():
                    log.warning("lost the lock on message %s", delivery.message.message_id)
                    return
            except Exception as exc:  # noqa: BLE001 - the next renewal may work
                log.warning("renewing the lock failed: %s", exc)


@dataclass
class _Run:
    """What became of a batch's messages: those invoked (with their invocation id and start
    time), the lock tokens to complete, and the one failure with its error."""

    ran: list[tuple[ReceivedMessage, str, float]] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    failed: tuple[str, str, float] | None = None
    error: Exception | None = None


def _trigger_value(
    watch: BusWatch, messages: list[ReceivedMessage]
) -> func.ServiceBusMessage | list[func.ServiceBusMessage]:
    if watch.batched:
        return functions_messages(messages)
    (message,) = messages
    return functions_message(message)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
