"""An app of orchestrations that exercise each Durable feature the devhost serves."""

from __future__ import annotations

import json
import os
import threading
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

# Every activity run, in order: tests count them to prove at-least-once, not twice.
RUNS: list[tuple[str, Any]] = []
_LOCK = threading.Lock()
# Attempts so far per key, for the flaky activity.
ATTEMPTS: dict[str, int] = {}
# Flipped by a test to make an orchestrator ask for something else on replay.
CHANGED = {"value": False}


def _ran(name: str, value: Any) -> None:
    with _LOCK:
        RUNS.append((name, value))
    marker = os.environ.get("DURABLE_FIXTURE_RUN_LOG")
    if marker:
        with open(marker, "a", encoding="utf-8") as log:
            log.write(json.dumps([name, value]) + "\n")


@app.route(route="start/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_json() if req.get_body() else None
    instance_id = await client.start_new(req.route_params["name"], req.params.get("id"), body)
    return client.create_check_status_response(req, instance_id)


@app.activity_trigger(input_name="value")
def shout(value: str) -> str:
    _ran("shout", value)
    return value.upper()


@app.activity_trigger(input_name="value")
def slow_shout(value: str) -> str:
    import time

    _ran("slow_shout", value)
    time.sleep(float(os.environ.get("DURABLE_FIXTURE_SLOW_S", "0.3")))
    return value.upper()


@app.activity_trigger(input_name="payload")
def flaky(payload: dict[str, Any]) -> str:
    key = str(payload["key"])
    with _LOCK:
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        attempt = ATTEMPTS[key]
    _ran("flaky", attempt)
    if attempt < int(payload["succeed_on"]):
        raise RuntimeError(f"attempt {attempt} of {key} failed")
    return f"{key} ok on attempt {attempt}"


@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext) -> Any:
    words = context.get_input() or ["a", "b", "c"]
    out = []
    for index, word in enumerate(words):
        context.set_custom_status({"step": index, "waiting_for": "shout"})
        out.append((yield context.call_activity("shout", word)))
    context.set_custom_status({"step": "done"})
    return out


@app.orchestration_trigger(context_name="context")
def slow_chain(context: df.DurableOrchestrationContext) -> Any:
    words = context.get_input()
    out = []
    for word in words:
        out.append((yield context.call_activity("slow_shout", word)))
    return out


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext) -> Any:
    spec = context.get_input()
    options = df.RetryOptions(
        first_retry_interval_in_milliseconds=50, max_number_of_attempts=int(spec["max"])
    )
    try:
        first = yield context.call_activity_with_retry("flaky", options, spec)
    except Exception as exc:  # noqa: BLE001 - the test reads the message
        return {"failed": str(exc)}
    after = yield context.call_activity("shout", "after")
    return {"result": first, "after": after}


@app.orchestration_trigger(context_name="context")
def fan(context: df.DurableOrchestrationContext) -> Any:
    count = int(context.get_input())
    results = yield context.task_all(
        [context.call_activity("shout", f"w{i}") for i in range(count)]
    )
    return results


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext) -> Any:
    seconds = float(context.get_input())
    deadline = context.current_utc_datetime + timedelta(seconds=seconds)
    timer = context.create_timer(deadline)
    event = context.wait_for_external_event("approve")
    context.set_custom_status({"waiting_for": "approve"})
    winner = yield context.task_any([event, timer])
    if winner == event:
        timer.cancel()
        return {"approved": event.result}
    return {"approved": "timeout"}


@app.orchestration_trigger(context_name="context")
def two_events(context: df.DurableOrchestrationContext) -> Any:
    first = yield context.call_activity("shout", "first")
    second = yield context.wait_for_external_event("go")
    return [first, second]


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext) -> Any:
    child = yield context.call_sub_orchestrator("chain", ["x", "y"], f"{context.instance_id}-c")
    return {"child": child}


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext) -> Any:
    count = int(context.get_input())
    if count >= 3:
        return count
    yield context.call_activity("shout", f"n{count}")
    context.continue_as_new(count + 1)
    return None


@app.orchestration_trigger(context_name="context")
def changing(context: df.DurableOrchestrationContext) -> Any:
    first = yield context.call_activity("flaky" if CHANGED["value"] else "shout", "one")
    second = yield context.wait_for_external_event("go")
    return [first, second]


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext) -> Any:
    yield context.call_activity("shout", "before")
    raise ValueError("the books do not balance")
