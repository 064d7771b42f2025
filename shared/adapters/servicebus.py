"""Service Bus: azure-servicebus against a namespace, or the local broker when none is set.

``get_sender()`` is what services hand messages to; ``peek_dead_letters`` and
``resubmit_dead_letters`` are the dead-letter tools ops uses. Both backends behave the same
way; no SDK object leaves this module.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from azure.core.exceptions import AzureError
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusSender,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import ServiceBusError
from psycopg_pool import ConnectionPool

from shared.config import get_settings
from shared.errors import NotFound, UpstreamError
from shared.messaging import (
    QUEUES,
    DeadLetter,
    MessageSender,
    OutboundMessage,
    ResubmitOutcome,
)

log = logging.getLogger(__name__)

PROVIDER = "servicebus"
# A resubmission looks at no more dead letters than this before it gives up on the others.
RESUBMIT_SCAN_LIMIT = 1000
RECEIVE_BATCH = 50
RECEIVE_WAIT_S = 5.0


class ServiceBusBackend(MessageSender, Protocol):
    """What both backends offer: sending plus the dead-letter tools."""

    def peek_dead_letters(self, queue: str, max_count: int) -> list[DeadLetter]: ...

    def resubmit_dead_letters(self, queue: str, message_ids: Sequence[str]) -> ResubmitOutcome: ...


_backend: ServiceBusBackend | None = None
_backend_lock = threading.Lock()
# The local broker's own connections (see ``postgres.open_pool``), when it is the backend.
_broker_pool: ConnectionPool | None = None


def get_sender() -> MessageSender:
    """The worker's sender: Service Bus when a namespace is configured, else the local broker.

    A namespace is configured by ``ServiceBusConnection__fullyQualifiedNamespace`` (reached
    with ``DefaultAzureCredential``) or by a ``ServiceBusConnection`` connection string.
    """
    return backend()


def backend() -> ServiceBusBackend:
    """The worker's backend, created on first use."""
    global _backend
    with _backend_lock:
        if _backend is None:
            _backend = _create_backend()
        return _backend


def reset() -> None:
    """Close and forget the backend (tests and scripts; workers keep it for the process)."""
    global _backend, _broker_pool
    with _backend_lock:
        if isinstance(_backend, AzureServiceBus):
            _backend.close()
        if _broker_pool is not None:
            _broker_pool.close()
            _broker_pool = None
        _backend = None


def peek_dead_letters(queue: str, max_count: int) -> list[DeadLetter]:
    """The oldest ``max_count`` messages of a queue's dead-letter queue, left in place.

    Raises:
        NotFound: the queue is not one of ``QUEUES``.
        UpstreamError: Service Bus (or the local broker's database) failed.
    """
    return backend().peek_dead_letters(queue, max_count)


def resubmit_dead_letters(queue: str, message_ids: Sequence[str]) -> ResubmitOutcome:
    """Send a copy of each named dead letter back to its queue, then remove it from the DLQ.

    The copy's MessageId is derived from the original (see
    ``shared.messaging.resubmitted_message_id``), so duplicate detection does not drop it.

    Raises:
        NotFound: the queue is not one of ``QUEUES``.
        UpstreamError: Service Bus (or the local broker's database) failed.
    """
    return backend().resubmit_dead_letters(queue, message_ids)


def ping() -> None:
    """Peek one dead letter of the first queue: the namespace (or local broker) answers, and
    this identity may read it.

    Raises:
        UpstreamError: Service Bus (or the local broker's database) failed.
    """
    backend().peek_dead_letters(next(iter(QUEUES)), 1)


def _create_backend() -> ServiceBusBackend:
    settings = get_settings()
    if settings.service_bus_namespace:
        from azure.identity import DefaultAzureCredential

        client = ServiceBusClient(settings.service_bus_namespace, DefaultAzureCredential())
        return AzureServiceBus(client)
    if settings.service_bus_connection_string:
        return AzureServiceBus(
            ServiceBusClient.from_connection_string(settings.service_bus_connection_string)
        )
    from shared.adapters import postgres
    from shared.adapters.local_broker import LocalBroker

    global _broker_pool
    log.info("no Service Bus namespace configured; messages go to the local broker")
    _broker_pool = postgres.open_pool("local-broker")
    return LocalBroker(_broker_pool)


def to_service_bus_message(message: OutboundMessage) -> ServiceBusMessage:
    """The SDK message for one outbound message, field by field."""
    return ServiceBusMessage(
        message.body,
        message_id=message.message_id,
        session_id=message.session_id,
        content_type=message.content_type,
        subject=message.subject,
        application_properties=dict(message.application_properties),  # type: ignore[arg-type]
        scheduled_enqueue_time_utc=message.scheduled_enqueue_time,
    )


def from_received(message: ServiceBusReceivedMessage) -> DeadLetter:
    """A dead letter as our own value, from the SDK's received (or peeked) message."""
    properties = {_text(k): _text(v) for k, v in (message.application_properties or {}).items()}
    return DeadLetter(
        message_id=str(message.message_id),
        sequence_number=int(message.sequence_number or 0),
        session_id=message.session_id,
        body=_body_bytes(message.body),
        content_type=message.content_type,
        subject=message.subject,
        application_properties=properties,
        enqueued_time=message.enqueued_time_utc,
        delivery_count=int(message.delivery_count or 0),
        dead_letter_reason=message.dead_letter_reason,
        dead_letter_description=message.dead_letter_error_description,
    )


class AzureServiceBus:
    """A namespace reached through azure-servicebus; one sender link per queue, reused.

    Args:
        client: the SDK client (one per worker).
    """

    def __init__(self, client: ServiceBusClient) -> None:
        self._client = client
        self._senders: dict[str, ServiceBusSender] = {}
        self._locks: dict[str, threading.Lock] = {name: threading.Lock() for name in QUEUES}

    def close(self) -> None:
        """Close the sender links and the client."""
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
        self._client.close()

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        """Send messages to a queue in as few batches as fit.

        Raises:
            NotFound: the queue is not one of ``QUEUES``.
            UpstreamError: Service Bus refused or could not be reached.
        """
        lock = self._lock(queue)
        with lock:
            try:
                sender = self._senders.get(queue)
                if sender is None:
                    sender = self._senders[queue] = self._client.get_queue_sender(queue)
                batch = sender.create_message_batch()
                for message in messages:
                    sdk_message = to_service_bus_message(message)
                    try:
                        batch.add_message(sdk_message)
                    except ValueError:
                        # The batch is full: send it and start the next with this message.
                        sender.send_messages(batch)
                        batch = sender.create_message_batch()
                        batch.add_message(sdk_message)
                if len(batch):
                    sender.send_messages(batch)
            except (ServiceBusError, AzureError) as exc:
                # A failed link is not reused; the next send opens a new one.
                broken = self._senders.pop(queue, None)
                if broken is not None:
                    broken.close()
                raise _upstream("send", queue, exc) from exc

    def peek_dead_letters(self, queue: str, max_count: int) -> list[DeadLetter]:
        """See the module function ``peek_dead_letters``."""
        self._lock(queue)
        try:
            with self._client.get_queue_receiver(
                queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER
            ) as receiver:
                return [from_received(m) for m in receiver.peek_messages(max_count)]
        except (ServiceBusError, AzureError) as exc:
            raise _upstream("peek dead letters", queue, exc) from exc

    # Limitation: a dead letter behind the first RESUBMIT_SCAN_LIMIT of its DLQ is reported
    # as not found; resubmit the ones in front first.
    def resubmit_dead_letters(self, queue: str, message_ids: Sequence[str]) -> ResubmitOutcome:
        """See the module function ``resubmit_dead_letters``."""
        from shared.adapters.local_broker import resubmission

        self._lock(queue)
        wanted = set(message_ids)
        done: set[str] = set()
        try:
            with self._client.get_queue_receiver(
                queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=RECEIVE_WAIT_S
            ) as receiver:
                # Dead letters not asked for stay locked until the end, so that the scan
                # moves on instead of receiving them again; then they are given back.
                kept: list[ServiceBusReceivedMessage] = []
                scanned = 0
                while wanted - done and scanned < RESUBMIT_SCAN_LIMIT:
                    batch = receiver.receive_messages(RECEIVE_BATCH, max_wait_time=RECEIVE_WAIT_S)
                    if not batch:
                        break
                    for received in batch:
                        scanned += 1
                        if received.message_id in wanted:
                            self.send(queue, [resubmission(from_received(received))])
                            receiver.complete_message(received)
                            done.add(str(received.message_id))
                        else:
                            kept.append(received)
                for received in kept:
                    receiver.abandon_message(received)
        except (ServiceBusError, AzureError) as exc:
            raise _upstream("resubmit dead letters", queue, exc) from exc
        ordered = list(dict.fromkeys(message_ids))
        return ResubmitOutcome(
            resubmitted=tuple(i for i in ordered if i in done),
            not_found=tuple(i for i in ordered if i not in done),
        )

    def _lock(self, queue: str) -> threading.Lock:
        lock = self._locks.get(queue)
        if lock is None:
            raise NotFound(f"queue {queue!r} does not exist")
        return lock


def _upstream(operation: str, queue: str, exc: Exception) -> UpstreamError:
    log.error(
        "service bus %s failed on %s: %s",
        operation,
        queue,
        exc,
        extra={"system": PROVIDER, "operation": operation, "queue": queue},
    )
    return UpstreamError(
        f"service bus {operation} on queue {queue} failed",
        provider=PROVIDER,
        retryable=isinstance(exc, ServiceBusError) and bool(exc._retryable),  # no public field
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _body_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, Iterable) and not isinstance(body, Mapping):
        return b"".join(part if isinstance(part, bytes) else str(part).encode() for part in body)
    return str(body).encode()
