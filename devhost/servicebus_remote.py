"""Service Bus triggers on a real namespace, through azure-servicebus's asyncio client.

Kept small on purpose: one receiver per delivery (a session receiver holds its session
until the message is settled), no prefetch, and Service Bus's own redelivery.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import OperationTimeoutError

from shared.adapters.local_broker import ReceivedMessage
from shared.adapters.servicebus import from_received
from shared.messaging import QueueSpec

# The longest one receive call waits for a message (or a free session) before it gives up.
MIN_WAIT_S = 1.0


class _RemoteDelivery:
    def __init__(
        self, receiver: ServiceBusReceiver, raw: ServiceBusReceivedMessage, queue: str
    ) -> None:
        self._receiver = receiver
        self._raw = raw
        self.message = _received(raw, queue)

    async def renew(self) -> bool:
        if self._receiver.session is not None:
            await self._receiver.session.renew_lock()
        else:
            await self._receiver.renew_message_lock(self._raw)
        return True

    async def complete(self) -> str:
        try:
            await self._receiver.complete_message(self._raw)
        finally:
            await self._receiver.close()
        return "completed"

    async def abandon(self, error: str, redeliver_after_s: float) -> str:
        # Service Bus redelivers at once and dead-letters at its own maximum delivery count.
        try:
            await self._receiver.abandon_message(self._raw)
        finally:
            await self._receiver.close()
        return "abandoned"


# Limitation: this path has been exercised only up to the connection (no namespace is
# reachable from the test machines); prefetch, batches and sessionIdleTimeout are not
# honoured, and a failed message is redelivered at once, without DEVHOST_BUS_RETRY_BACKOFF_S.
class RemoteSource:
    """A queue of a real namespace.

    Args:
        connection: a connection string, or a namespace host name reached with
            ``DefaultAzureCredential``.
        queue: the queue.
        wait_s: how long one receive waits for a message.
    """

    def __init__(self, connection: str, queue: QueueSpec, wait_s: float) -> None:
        self._queue = queue
        self._wait_s = max(wait_s, MIN_WAIT_S)
        self._credential: Any = None
        if "endpoint=" in connection.lower():
            self._client = ServiceBusClient.from_connection_string(connection)
        else:
            from azure.identity.aio import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
            self._client = ServiceBusClient(connection, self._credential)

    async def receive(self) -> _RemoteDelivery | None:
        """The next message, locked, or None when none came within the wait."""
        options: dict[str, Any] = {"max_wait_time": self._wait_s}
        if self._queue.requires_session:
            options["session_id"] = NEXT_AVAILABLE_SESSION
        receiver = self._client.get_queue_receiver(self._queue.name, **options)
        try:
            await receiver.__aenter__()
            batch = await receiver.receive_messages(1, max_wait_time=self._wait_s)
        except OperationTimeoutError:
            # No session became free within the wait.
            await receiver.close()
            return None
        except BaseException:
            await receiver.close()
            raise
        if not batch:
            await receiver.close()
            return None
        return _RemoteDelivery(receiver, batch[0], self._queue.name)

    async def close(self) -> None:
        """Close the client (and the credential, if one was made)."""
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()


def _received(raw: ServiceBusReceivedMessage, queue: str) -> ReceivedMessage:
    dead = from_received(raw)
    now = datetime.now(UTC)
    return ReceivedMessage(
        queue=queue,
        sequence_number=dead.sequence_number,
        message_id=dead.message_id,
        session_id=dead.session_id,
        body=dead.body,
        content_type=dead.content_type,
        subject=dead.subject,
        application_properties=dead.application_properties,
        enqueued_time=dead.enqueued_time or now,
        scheduled_enqueue_time=raw.scheduled_enqueue_time_utc,
        expires_at=raw.expires_at_utc or now,
        delivery_count=dead.delivery_count,
        lock_token=str(raw.lock_token),
        locked_until=raw.locked_until_utc or now,
    )
