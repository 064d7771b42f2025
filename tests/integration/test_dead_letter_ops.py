"""The dead-letter ops endpoints, called as the host calls them, over the local broker."""

from __future__ import annotations

import json
import uuid

import azure.functions as func
import pytest

from functions import ops
from shared.adapters import servicebus
from shared.adapters.local_broker import MAX_DELIVERY_COUNT_EXCEEDED, LocalBroker
from shared.config import get_settings
from shared.messaging import (
    ORIGINAL_MESSAGE_ID_PROPERTY,
    STRIPE_EVENTS_QUEUE,
    OutboundMessage,
)


@pytest.fixture
def broker(services) -> LocalBroker:
    get_settings.cache_clear()
    servicebus.reset()
    local = servicebus.backend()
    assert isinstance(local, LocalBroker)
    return local


def dead_letter(broker: LocalBroker, session: str, body: bytes = b'{"id": 1}') -> str:
    """Send one message to stripe-events and fail it until it is dead-lettered."""
    message_id = f"evt_{uuid.uuid4().hex[:12]}"
    broker.send(STRIPE_EVENTS_QUEUE, [OutboundMessage(message_id, body, session_id=session)])
    outcome = ""
    while outcome != "dead-lettered":
        got = broker.receive(STRIPE_EVENTS_QUEUE, session_id=session)
        assert got is not None and got.message_id == message_id
        outcome = broker.abandon(STRIPE_EVENTS_QUEUE, got.lock_token, "KeyError: 'customer'")
    return message_id


def get(queue: str, query: str = "") -> tuple[int, dict]:
    params = dict(p.split("=", 1) for p in query.split("&") if p)
    request = func.HttpRequest(
        "GET",
        f"/api/ops/queues/{queue}/dead-letters",
        body=b"",
        route_params={"queue": queue},
        params=params,
    )
    response = ops.peek_dead_letters(request)
    return response.status_code, json.loads(response.get_body())


def post(queue: str, body: object) -> tuple[int, dict]:
    request = func.HttpRequest(
        "POST",
        f"/api/ops/queues/{queue}/dead-letters/resubmit",
        body=json.dumps(body).encode(),
        route_params={"queue": queue},
    )
    response = ops.resubmit_dead_letters(request)
    return response.status_code, json.loads(response.get_body())


def test_peek_lists_dead_letters_with_reason_and_description(broker):
    session = f"cus_{uuid.uuid4().hex[:8]}"
    message_id = dead_letter(broker, session)
    status, body = get(STRIPE_EVENTS_QUEUE, "max=100")
    assert status == 200
    [mine] = [d for d in body["dead_letters"] if d["message_id"] == message_id]
    assert mine["session_id"] == session
    assert mine["body"] == '{"id": 1}'
    assert mine["delivery_count"] == 10
    assert mine["dead_letter_reason"] == MAX_DELIVERY_COUNT_EXCEEDED
    assert mine["dead_letter_description"].endswith("Last error: KeyError: 'customer'")


def test_resubmit_puts_a_copy_back_in_the_queue_and_reports_unknown_ids(broker):
    session = f"cus_{uuid.uuid4().hex[:8]}"
    message_id = dead_letter(broker, session)
    status, body = post(STRIPE_EVENTS_QUEUE, {"message_ids": [message_id, "evt_nope"]})
    assert status == 200
    assert body == {"resubmitted": [message_id], "not_found": ["evt_nope"]}
    copy = broker.receive(STRIPE_EVENTS_QUEUE, session_id=session)
    assert copy is not None
    assert copy.application_properties[ORIGINAL_MESSAGE_ID_PROPERTY] == message_id
    assert message_id not in [
        d["message_id"] for d in get(STRIPE_EVENTS_QUEUE, "max=100")[1]["dead_letters"]
    ]
    broker.complete(STRIPE_EVENTS_QUEUE, copy.lock_token)


def test_unknown_queue_is_a_404_problem(broker):
    status, body = get("orders")
    assert status == 404
    from shared.messaging import QUEUES

    # Every queue of the table is named, whichever capabilities added theirs.
    assert {"stripe-events", "quickbooks-events"} <= set(QUEUES)
    assert body["detail"] == f"queue 'orders' does not exist; queues: {', '.join(sorted(QUEUES))}"
    assert post("orders", {"message_ids": ["x"]})[0] == 404


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "message_ids must be a non-empty list of message ids"),
        ({"message_ids": []}, "message_ids must be a non-empty list of message ids"),
        ({"message_ids": [1]}, "message_ids must be a non-empty list of message ids"),
        ({"message_ids": ["x"] * 101}, "at most 100 message ids at a time, not 101"),
    ],
)
def test_bad_resubmit_bodies_are_400_naming_the_field(broker, body, detail):
    status, problem = post(STRIPE_EVENTS_QUEUE, body)
    assert (status, problem["detail"]) == (400, detail)


def test_bad_max_is_400(broker):
    assert get(STRIPE_EVENTS_QUEUE, "max=0") == (
        400,
        {
            "type": "about:blank",
            "title": "Invalid request",
            "status": 400,
            "detail": "max must be between 1 and 100, not 0",
        },
    )
    assert (
        get(STRIPE_EVENTS_QUEUE, "max=ten")[1]["detail"] == "max must be a whole number, not 'ten'"
    )


def test_depth_counts_each_queue_and_records_the_gauge(broker: LocalBroker) -> None:
    from shared.messaging import QUEUES
    from shared.services import dead_letters
    from tests.telemetry_support import points, providers

    providers()
    before = dead_letters.measure()
    dead_letter(broker, f"cus_{uuid.uuid4().hex[:8]}")
    dead_letter(broker, f"cus_{uuid.uuid4().hex[:8]}")

    after = dead_letters.measure()

    assert set(after) == set(QUEUES)
    assert after[STRIPE_EVENTS_QUEUE] - before[STRIPE_EVENTS_QUEUE] == 2
    assert after["quickbooks-events"] == before["quickbooks-events"]
    recorded = {a["queue"]: v for a, v in points("advisoros.servicebus.dead_letters")}
    assert recorded[STRIPE_EVENTS_QUEUE] == after[STRIPE_EVENTS_QUEUE]
