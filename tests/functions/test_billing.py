"""The Service Bus trigger of billing, called with the message the Functions host would build."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage

from functions.billing import billing_bp
from shared.messaging import STRIPE_EVENTS_QUEUE
from shared.services import billing, ledger
from tests.services import stripe_events as se

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _function() -> tuple[Callable[[list[ServiceBusMessage]], None], dict[str, Any]]:
    app = func.FunctionApp()
    app.register_functions(billing_bp)
    (found,) = [
        f for f in app.get_functions() if f.get_function_name() == "stripe_events_received"
    ]
    return found.get_user_function(), json.loads(found.get_function_json())


def message(event: dict[str, Any] | bytes, *, message_id: str | None = None) -> ServiceBusMessage:
    """The message intake sends: body as Stripe sent it, ids and properties as agreed."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    parsed = event if isinstance(event, dict) else {}
    return ServiceBusMessage(
        body=body,
        message_id=message_id or str(parsed.get("id")),
        session_id=str(parsed.get("data", {}).get("object", {}).get("customer") or "acct"),
        subject=str(parsed.get("type", "")),
        content_type="application/json",
        delivery_count=1,
        application_properties={
            "source": "stripe",
            "event_type": str(parsed.get("type", "")),
            "traceparent": TRACEPARENT,
        },
        user_properties={},
    )


@pytest.fixture()
def account(firm: uuid.UUID) -> str:
    stripe_account = f"acct_{uuid.uuid4().hex[:16]}"
    billing.link_stripe_account(firm, stripe_account)
    return stripe_account


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "functions.billing"]


def test_trigger_is_the_sessionful_stripe_events_queue_in_batches() -> None:
    _, definition = _function()
    (binding,) = definition["bindings"]
    assert binding["type"] == "serviceBusTrigger"
    assert binding["queueName"] == STRIPE_EVENTS_QUEUE
    assert binding["connection"] == "ServiceBusConnection"
    assert binding["isSessionsEnabled"] is True
    assert binding["cardinality"].lower() == "many"


def test_message_is_applied_once_with_one_log_line_each(
    services: dict[str, str], account: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler, _ = _function()
    event = {**se.load("srm__charge.succeeded.json"), "account": account}
    caplog.set_level(logging.INFO, logger="functions.billing")

    handler([message(event)])
    handler([message(event)])

    first, second = _records(caplog)
    assert (first.event_id, first.event_type, first.outcome) == (  # type: ignore[attr-defined]
        "evt_000000000000000000000000",
        "charge.succeeded",
        "applied",
    )
    assert second.outcome == "duplicate"  # type: ignore[attr-defined]
    # The consumer's span continues the trace the webhook started.
    assert first.trace_id == TRACE_ID  # type: ignore[attr-defined]
    totals = {
        (line.code, line.currency): line.balance_minor
        for line in ledger.trial_balance(uuid.UUID(first.client_id))  # type: ignore[attr-defined]
    }
    assert totals == {("1200", "USD"): 2000, ("4000", "USD"): -2000}


def test_body_that_is_not_json_is_rejected_for_dead_lettering(
    services: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    handler, _ = _function()
    caplog.set_level(logging.INFO, logger="functions.billing")

    with pytest.raises(
        billing.InvalidEvent, match=r"^event evt_broken: field \(body\) is not JSON$"
    ):
        handler([message(b"{not json", message_id="evt_broken")])

    (record,) = _records(caplog)
    assert record.levelno == logging.ERROR
    assert record.outcome == "rejected"  # type: ignore[attr-defined]


def test_event_of_an_unlinked_account_is_rejected_with_what_to_do(
    services: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    handler, _ = _function()
    event = {**se.load("srm__invoice.paid.json"), "account": "acct_unlinked0001"}
    caplog.set_level(logging.INFO, logger="functions.billing")

    with pytest.raises(billing.UnlinkedAccount, match="acct_unlinked0001 is not linked to a firm"):
        handler([message(event)])

    (record,) = _records(caplog)
    assert record.levelno == logging.ERROR
    assert "link it" in record.getMessage()


def test_a_rejected_event_is_stepped_over_and_the_rest_of_its_batch_is_applied_once(
    services: dict[str, str], account: str, caplog: pytest.LogCaptureFixture
) -> None:
    """On the Functions host a failed batch comes back whole: the events around a rejected
    one must be applied the first time, and be duplicates every time after."""
    handler, _ = _function()
    paid = {**se.load("srm__invoice.paid.json"), "account": account, "id": "evt_paid"}
    charge = {**se.load("srm__charge.succeeded.json"), "account": account, "id": "evt_charge"}
    unlinked = {**se.load("srm__charge.succeeded.json"), "account": "acct_unlinked0002"}
    unlinked["id"] = "evt_unlinked"
    batch = [
        message(b"{not json", message_id="evt_broken"),
        message(paid),
        message(unlinked),
        message(charge),
    ]
    caplog.set_level(logging.INFO, logger="functions.billing")

    # The first rejection in batch order is what the batch fails with.
    with pytest.raises(billing.InvalidEvent, match=r"^event evt_broken: field \(body\)"):
        handler(batch)

    outcomes = [(r.event_id, r.outcome) for r in _records(caplog)]  # type: ignore[attr-defined]
    assert outcomes == [
        ("evt_paid", "applied"),
        ("evt_charge", "applied"),
        ("evt_broken", "rejected"),
        ("evt_unlinked", "rejected"),
    ]
    client = uuid.UUID(_records(caplog)[0].client_id)  # type: ignore[attr-defined]
    expected = {("1100", "USD"): 2000, ("1200", "USD"): 2000, ("4000", "USD"): -4000}
    totals = {(t.code, t.currency): t.balance_minor for t in ledger.trial_balance(client)}
    assert totals == expected

    caplog.clear()
    with pytest.raises(billing.InvalidEvent):
        handler(batch)

    again = [(r.event_id, r.outcome) for r in _records(caplog)]  # type: ignore[attr-defined]
    assert again[:2] == [("evt_paid", "duplicate"), ("evt_charge", "duplicate")]
    totals = {(t.code, t.currency): t.balance_minor for t in ledger.trial_balance(client)}
    assert totals == expected
