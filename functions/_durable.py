"""What the blueprints that drive engagement orchestrations share about the Durable client:
whether an instance still runs, and starting one exactly once."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from shared.services import engagements

_ACTIVE = (df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending)


def is_active(status: Any) -> bool:
    """Whether a ``DurableOrchestrationStatus`` is of an instance that still takes events."""
    return status is not None and status.runtime_status in _ACTIVE


async def start_engagement_once(
    client: df.DurableOrchestrationClient, engagement: engagements.Engagement
) -> bool:
    """Start the engagement's orchestration unless its instance exists; True when started."""
    existing = await client.get_status(engagement.instance_id)
    if existing is not None and existing.runtime_status is not None:
        return False
    try:
        await client.start_new(
            engagements.ORCHESTRATOR,
            engagement.instance_id,
            {"engagement_id": str(engagement.id)},
        )
    except Exception:  # the SDK refuses a start with a bare Exception
        # A concurrent start of the same engagement won the race: the instance exists.
        again = await client.get_status(engagement.instance_id)
        if again is None or again.runtime_status is None:
            raise
        return False
    return True
