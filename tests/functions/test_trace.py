"""One Stripe event is one trace: the HTTP intake, the hand-off to Service Bus, the billing
consumer and their Postgres work all carry the trace id of the request that brought it.

The handlers are called in-process as the Functions host would call them, with an in-memory
span exporter and metric reader installed as the process's OpenTelemetry providers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.messaging import STRIPE_EVENTS_QUEUE, OutboundMessage
from shared.services import billing, ledger
from tests.services import stripe_events as se
from tests.telemetry_support import points, providers
from tests.webhook_support import (
    TRACEPARENT,
    RecordingSender,
    stripe_header,
    webhook_settings,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.usefixtures("webhook_settings")

TRACE_ID = int(TRACEPARENT.split("-")[1], 16)
HOST_SPAN_ID = int(TRACEPARENT.split("-")[2], 16)


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Finished spans of this module's tests (the SDK provider stays for the process)."""
    exporter = InMemorySpanExporter()
    providers().add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


class _Trace:
    trace_parent = TRACEPARENT
    trace_state = ""
    attributes: dict[str, str] = {}  # noqa: RUF012 - read-only stand-in


class _Context:
    """What the host passes as ``context``: its span for this request, in the caller's trace."""

    invocation_id = "test-invocation"
    function_name = "stripe_webhook"
    trace_context = _Trace()


def _handler(blueprint_name: str, name: str) -> Callable[..., Any]:
    # Imported here: the modules read the settings, which exist once the services run.
    from functions.billing import billing_bp
    from functions.webhooks import intake_bp

    blueprint = {"intake": intake_bp, "billing": billing_bp}[blueprint_name]
    app = func.FunctionApp()
    app.register_functions(blueprint)
    (found,) = [f for f in app.get_functions() if f.get_function_name() == name]
    handler: Callable[..., Any] = found.get_user_function()
    return handler


def _post(body: bytes) -> func.HttpResponse:
    request = func.HttpRequest(
        method="POST",
        url="/api/webhooks/stripe",
        body=body,
        headers={"Stripe-Signature": stripe_header(body), "traceparent": TRACEPARENT},
    )
    response: func.HttpResponse = _handler("intake", "stripe_webhook")(request, _Context())
    return response


def _delivered(message: OutboundMessage) -> ServiceBusMessage:
    """The message as the host hands it to the consumer."""
    return ServiceBusMessage(
        body=message.body,
        message_id=message.message_id,
        session_id=message.session_id,
        subject=message.subject,
        content_type=message.content_type,
        delivery_count=1,
        application_properties=dict(message.application_properties),
        user_properties={},
    )


@pytest.fixture()
def sender(monkeypatch: pytest.MonkeyPatch) -> RecordingSender:
    import functions.webhooks

    recorder = RecordingSender()
    monkeypatch.setattr(functions.webhooks, "_sender", lambda: recorder)
    return recorder


@pytest.fixture()
def books(firm: uuid.UUID) -> tuple[str, uuid.UUID]:
    """A Stripe account linked to the firm, and the books client its events post to."""
    account = f"acct_{uuid.uuid4().hex[:16]}"
    return account, billing.link_stripe_account(firm, account)


@pytest.fixture()
def event(books: tuple[str, uuid.UUID]) -> bytes:
    payload = {
        **se.load("srm__charge.succeeded.json"),
        "id": f"evt_{uuid.uuid4().hex}",
        "account": books[0],
    }
    return json.dumps(payload, indent=2).encode()


def _by_name(found: list[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = [s for s in found if s.name == name]
    return span


def _ancestors(span: ReadableSpan, found: list[ReadableSpan]) -> list[int]:
    by_id = {s.context.span_id: s for s in found}
    chain, parent = [], _parent_id(span)
    while parent is not None:
        chain.append(parent)
        parent = _parent_id(by_id[parent]) if parent in by_id else None
    return chain


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def test_a_stripe_event_is_one_trace_from_request_to_ledger(
    spans: InMemorySpanExporter, sender: RecordingSender, event: bytes
) -> None:
    spans.clear()

    # Intake: verified, recorded, handed to the queue.
    assert _post(event).status_code == 200
    ((queue, message),) = sender.sent
    assert queue == STRIPE_EVENTS_QUEUE

    # The consumer gets the message the host would deliver.
    _handler("billing", "stripe_events_received")([_delivered(message)])

    found = list(spans.get_finished_spans())
    assert {s.context.trace_id for s in found} == {TRACE_ID}
    request = _by_name(found, "POST /api/webhooks/stripe")
    publish = _by_name(found, f"{STRIPE_EVENTS_QUEUE} publish")
    consumer = _by_name(found, "billing.apply_stripe_events")

    # The request continues the host's span; the send and the consumer hang off the request.
    assert _parent_id(request) == HOST_SPAN_ID
    assert request.kind is trace.SpanKind.SERVER
    # The send runs inside the outbox transaction that marks the messages sent.
    assert request.context.span_id in _ancestors(publish, found)
    assert publish.kind is trace.SpanKind.PRODUCER
    assert message.application_properties["traceparent"] == (
        f"00-{TRACE_ID:032x}-{request.context.span_id:016x}-01"
    )
    assert _parent_id(consumer) == request.context.span_id
    assert consumer.kind is trace.SpanKind.CONSUMER

    # Postgres work shows under both the intake and the consumer.
    database = [s for s in found if s.name == "postgres transaction"]
    assert {_parent_id(s) for s in database} >= {request.context.span_id, consumer.context.span_id}
    assert all(s.attributes and s.attributes["db.system.name"] == "postgresql" for s in database)


def test_the_consumer_posted_what_the_traced_event_says(
    spans: InMemorySpanExporter,
    sender: RecordingSender,
    event: bytes,
    books: tuple[str, uuid.UUID],
) -> None:
    assert _post(event).status_code == 200
    ((_, message),) = sender.sent
    _handler("billing", "stripe_events_received")([_delivered(message)])

    consumer = [s for s in spans.get_finished_spans() if s.name == "billing.apply_stripe_events"]
    assert consumer[-1].attributes == {"messaging.batch.message_count": 1}
    # The batch's span links to the span that sent each of its messages.
    sent_by = message.application_properties["traceparent"].split("-")[2]
    assert [f"{link.context.span_id:016x}" for link in consumer[-1].links] == [sent_by]
    balances = {
        (line.code, line.currency): line.balance_minor for line in ledger.trial_balance(books[1])
    }
    assert balances == {("1200", "USD"): 2000, ("4000", "USD"): -2000}


def test_accepted_and_duplicate_events_are_counted(
    spans: InMemorySpanExporter, sender: RecordingSender, event: bytes
) -> None:
    before = _webhook_counts()
    assert _post(event).status_code == 200
    assert _post(event).status_code == 200
    after = _webhook_counts()
    assert after.get("accepted", 0) - before.get("accepted", 0) == 1
    assert after.get("duplicate", 0) - before.get("duplicate", 0) == 1


def _webhook_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for attributes, value in points("advisoros.webhook.events"):
        if attributes.get("source") == "stripe":
            outcome = str(attributes["outcome"])
            counts[outcome] = counts.get(outcome, 0) + int(value)
    return counts
