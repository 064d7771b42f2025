"""The app the devhost tests serve: one small function per behaviour under test.

Every invocation is recorded in ``CALLS`` (function name -> list of what it saw).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from collections import defaultdict
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.storage.blob import BlobClient
from fixture_blueprint import bp

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bp)

CALLS: dict[str, list[dict[str, Any]]] = defaultdict(list)
_LOCK = threading.Lock()
RELEASE = threading.Event()
HANG_RELEASE = threading.Event()
STORAGE_SETTING = "AzureWebJobsStorage"


def record(function: str, **seen: Any) -> int:
    """Note one call; returns how many calls ``function`` has had with the same ``key``."""
    with _LOCK:
        CALLS[function].append(seen)
        return sum(1 for c in CALLS[function] if c.get("key") == seen.get("key"))


def note_process(kind: str) -> None:
    """Append ``<kind> <pid>`` to the file ``FX_PROCESS_LOG`` names, when it is set: which
    process ran what, across the host's processes."""
    path = os.environ.get("FX_PROCESS_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{kind} {os.getpid()}\n")


# -- HTTP -------------------------------------------------------------------------------


@app.route(route="pid", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def process_id(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(str(os.getpid()))


@app.route(route="hello/{name?}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    payload = {
        "method": req.method,
        "name": req.route_params.get("name"),
        "q": req.params.get("q"),
        "body": req.get_body().decode(),
        "url": req.url,
        "header": req.headers.get("x-test"),
    }
    return func.HttpResponse(json.dumps(payload), mimetype="application/json")


@app.route(route="items/{id:int}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item_by_id(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"item {req.route_params['id']}")


@app.route(route="items/special", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item_special(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("special item")


@app.route(route="echo", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    response = func.HttpResponse(
        req.get_body(),
        status_code=201,
        headers={"X-Echo-Length": str(len(req.get_body()))},
        mimetype="application/octet-stream",
    )
    response.headers.add("Set-Cookie", "a=1")
    response.headers.add("Set-Cookie", "b=2")
    return response


@app.route(route="secured", methods=["GET"])
def secured(req: func.HttpRequest) -> str:
    return "function level ok"


@app.route(route="admin/thing", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_thing(req: func.HttpRequest) -> str:
    return "admin level ok"


@app.route(route="boom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the fixture fails on purpose")


@app.route(route="slow", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def slow(req: func.HttpRequest) -> func.HttpResponse:
    released = RELEASE.wait(timeout=20)
    return func.HttpResponse("released" if released else "timed out")


@app.route(route="release", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def release(req: func.HttpRequest) -> func.HttpResponse:
    RELEASE.set()
    return func.HttpResponse("ok")


@app.route(route="async/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def async_hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"async hello {req.route_params['name']}")


@app.route(route="ctx", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return func.HttpResponse(f"{context.function_name} {context.invocation_id}")


# -- blobs ------------------------------------------------------------------------------


def _seen(blob: func.InputStream) -> dict[str, Any]:
    data = blob.read()
    return {
        "key": f"{blob.name}",
        "name": blob.name,
        "length": blob.length,
        "uri": blob.uri,
        "sha256": hashlib.sha256(data).hexdigest(),
        "content": data[:64],
        "etag": (blob.blob_properties or {}).get("ETag"),
        "is_input_stream": isinstance(blob, func.InputStream),
    }


@app.blob_trigger(arg_name="blob", path="fx-once/{name}", connection="AzureWebJobsStorage")
def blob_once(blob: func.InputStream) -> None:
    record("blob_once", **_seen(blob))


@app.blob_trigger(arg_name="blob", path="fx-flaky/{name}", connection="AzureWebJobsStorage")
def blob_flaky(blob: func.InputStream, context: func.Context) -> None:
    seen = _seen(blob)
    if record("blob_flaky", retry=context.retry_context.retry_count, **seen) < 3:
        raise RuntimeError("flaky: fails on the first two attempts")


@app.blob_trigger(arg_name="blob", path="fx-poison/{name}", connection="AzureWebJobsStorage")
async def blob_poison(blob: func.InputStream) -> None:
    record("blob_poison", **_seen(blob))
    raise ValueError("this blob can never be processed")


@app.blob_trigger(arg_name="blob", path="fx-vanish/{name}", connection="AzureWebJobsStorage")
def blob_vanish(blob: func.InputStream) -> None:
    record("blob_vanish", **_seen(blob))
    container, _, name = str(blob.name).partition("/")
    BlobClient.from_connection_string(os.environ[STORAGE_SETTING], container, name).delete_blob()
    raise RuntimeError("moved the blob away, then failed")


@app.blob_trigger(arg_name="blob", path="fx-hang/{name}", connection="AzureWebJobsStorage")
async def blob_hang(blob: func.InputStream) -> None:
    record("blob_hang", **_seen(blob))
    while not HANG_RELEASE.is_set():
        await asyncio.sleep(0.01)


@app.blob_trigger(
    arg_name="blob", path="fx-params/{client_id}/{name}", connection="AzureWebJobsStorage"
)
def blob_params(blob: func.InputStream) -> None:
    record("blob_params", **_seen(blob))


# -- timers -----------------------------------------------------------------------------


@app.timer_trigger(schedule="%FX_TICK_SCHEDULE%", arg_name="timer", run_on_startup=False)
def tick(timer: func.TimerRequest) -> None:
    note_process("tick")
    record("tick", past_due=timer.past_due, status=dict(timer.schedule_status), kind=type(timer))


@app.timer_trigger(
    schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=True, use_monitor=False
)
def startup_tick(timer: func.TimerRequest) -> None:
    record("startup_tick", past_due=timer.past_due)


# -- Service Bus (the local broker: FxServiceBus is not set) -----------------------------


def _message(msg: func.ServiceBusMessage) -> dict[str, Any]:
    return {
        "key": msg.message_id,
        "type": type(msg),
        "body": msg.get_body(),
        "message_id": msg.message_id,
        "session_id": msg.session_id,
        "delivery_count": msg.delivery_count,
        "content_type": msg.content_type,
        "subject": msg.subject,
        "label": msg.label,
        "application_properties": msg.application_properties,
        "user_properties": msg.user_properties,
        "enqueued_time_utc": msg.enqueued_time_utc,
        "expires_at_utc": msg.expires_at_utc,
        "locked_until": msg.locked_until,
        "lock_token": msg.lock_token,
        "sequence_number": msg.sequence_number,
    }


@app.service_bus_queue_trigger(arg_name="msg", queue_name="fx-orders", connection="FxServiceBus")
def bus_orders(msg: func.ServiceBusMessage, context: func.Context) -> None:
    note_process("bus")
    record("bus_orders", retry=context.retry_context.retry_count, **_message(msg))


@app.service_bus_queue_trigger(
    arg_name="msg", queue_name="%FX_FAILING_QUEUE%", connection="FxServiceBus"
)
async def bus_failing(msg: func.ServiceBusMessage) -> None:
    record("bus_failing", **_message(msg))
    raise RuntimeError(f"cannot handle {msg.message_id}")


@app.service_bus_queue_trigger(
    arg_name="msg", queue_name="fx-sessions", connection="FxServiceBus", is_sessions_enabled=True
)
def bus_sessions(msg: func.ServiceBusMessage) -> None:
    record("bus_sessions", event="start", session=msg.session_id, body=msg.get_body().decode())
    time.sleep(1.5 if msg.get_body().endswith(b":slow") else 0.01)
    record("bus_sessions", event="end", session=msg.session_id, body=msg.get_body().decode())


@app.service_bus_queue_trigger(
    arg_name="msgs",
    queue_name="fx-batches",
    connection="FxServiceBus",
    is_sessions_enabled=True,
    cardinality=func.Cardinality.MANY,
)
def bus_batches(msgs: list[func.ServiceBusMessage]) -> None:
    # As billing does: the messages before a poison one take effect (``applied``, once per
    # message id), then the call fails with the poison message's error.
    record("bus_batches", bodies=[m.get_body().decode() for m in msgs], messages=msgs)
    for msg in msgs:
        body = msg.get_body().decode()
        if body.endswith(":poison"):
            raise ValueError(f"cannot apply {body}")
        with _LOCK:
            if not any(c["body"] == body for c in CALLS["applied"]):
                CALLS["applied"].append({"body": body})


@app.service_bus_queue_trigger(arg_name="msg", queue_name="fx-slow", connection="FxServiceBus")
def bus_slow(msg: func.ServiceBusMessage) -> None:
    record("bus_slow", **_message(msg))
    time.sleep(float(msg.get_body()))


# -- not served yet ---------------------------------------------------------------------


@app.service_bus_topic_trigger(
    arg_name="msg", topic_name="orders", subscription_name="audit", connection="FxServiceBus"
)
def on_order(msg: func.ServiceBusMessage) -> None:
    record("on_order")


@app.route(route="orchestrators/{name}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
async def start_orchestration(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> Any:
    return await client.start_new(req.route_params["name"])


@app.orchestration_trigger(context_name="context")
def fx_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    result = yield context.call_activity("fx_activity", "x")
    return result


@app.activity_trigger(input_name="payload")
def fx_activity(payload: str) -> str:
    return payload.upper()
