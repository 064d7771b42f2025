"""The benchmark's app: a six-activity chain and a fan-out, over one small activity."""

from __future__ import annotations

import hashlib
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
CHAIN_LENGTH = 6


def digest(value: str) -> str:
    """The activity's work: small and CPU-only, so the figures show the engine's cost."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@app.activity_trigger(input_name="value")
def bench_step(value: str) -> str:
    return digest(value)


@app.orchestration_trigger(context_name="context")
def bench_chain(context: df.DurableOrchestrationContext) -> Any:
    value = str(context.get_input())
    for _ in range(CHAIN_LENGTH):
        value = yield context.call_activity("bench_step", value)
    return value


@app.orchestration_trigger(context_name="context")
def bench_fan(context: df.DurableOrchestrationContext) -> Any:
    count = int(context.get_input())
    results = yield context.task_all(
        [context.call_activity("bench_step", str(i)) for i in range(count)]
    )
    return len(results)
