"""Dead-letter tools for ops: look at what a queue gave up on, and send chosen messages back."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from shared import telemetry
from shared.adapters import servicebus
from shared.errors import NotFound, ValidationError
from shared.messaging import QUEUES, DeadLetter, ResubmitOutcome

log = logging.getLogger(__name__)

PEEK_MAX_COUNT = 100
DEPTH_MAX_COUNT = 1000
DEPTH_SCHEDULE = "0 */5 * * * *"
RESUBMIT_MAX_IDS = 100


def peek(queue: str, max_count: int) -> list[DeadLetter]:
    """The oldest dead letters of ``queue``, left where they are.

    Args:
        queue: one of ``shared.messaging.QUEUES``.
        max_count: how many at most, 1 to 100.

    Raises:
        NotFound: no such queue.
        ValidationError: ``max_count`` is out of range.
        UpstreamError: Service Bus (or the local broker) failed.
    """
    _known(queue)
    if not 1 <= max_count <= PEEK_MAX_COUNT:
        raise ValidationError(f"max must be between 1 and {PEEK_MAX_COUNT}, not {max_count}")
    return servicebus.peek_dead_letters(queue, max_count)


def measure() -> dict[str, int]:
    """Count each queue's dead letters and record them as the dead-letter depth metric.

    Returns:
        The depth per queue; a queue with more than 1,000 dead letters reads as 1,000.

    Raises:
        UpstreamError: Service Bus (or the local broker) failed.
    """
    depths = {}
    for queue in QUEUES:
        depths[queue] = len(servicebus.peek_dead_letters(queue, DEPTH_MAX_COUNT))
        telemetry.record_dead_letters(queue, depths[queue])
    return depths


def resubmit(queue: str, message_ids: Sequence[str]) -> ResubmitOutcome:
    """Send the named dead letters of ``queue`` back to it and remove them from the DLQ.

    Args:
        queue: one of ``shared.messaging.QUEUES``.
        message_ids: MessageIds of dead letters, 1 to 100 of them.

    Raises:
        NotFound: no such queue.
        ValidationError: the ids are missing, empty or too many.
        UpstreamError: Service Bus (or the local broker) failed.
    """
    _known(queue)
    if not message_ids or any(not isinstance(i, str) or not i for i in message_ids):
        raise ValidationError("message_ids must be a non-empty list of message ids")
    if len(message_ids) > RESUBMIT_MAX_IDS:
        raise ValidationError(
            f"at most {RESUBMIT_MAX_IDS} message ids at a time, not {len(message_ids)}"
        )
    outcome = servicebus.resubmit_dead_letters(queue, message_ids)
    log.info(
        "dead letters resubmitted",
        extra={
            "queue": queue,
            "resubmitted": len(outcome.resubmitted),
            "not_found": len(outcome.not_found),
        },
    )
    return outcome


def _known(queue: str) -> None:
    if queue not in QUEUES:
        raise NotFound(f"queue {queue!r} does not exist; queues: {', '.join(sorted(QUEUES))}")
