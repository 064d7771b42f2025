"""The engagement orchestrator replayed from built histories, without any host: which
actions it asks for, and what its custom status says, at each step."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devhost.durable import (
    A_ACTIVITY,
    A_ACTIVITY_RETRY,
    A_TIMER,
    A_WAIT_EVENT,
    EVENT_RAISED,
    EXECUTION_STARTED,
    ORCHESTRATOR_COMPLETED,
    ORCHESTRATOR_STARTED,
    TASK_COMPLETED,
    TIMER_FIRED,
    event,
    flatten,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)
ENGAGEMENT = "0b6c7a9e-8d55-4b2e-9a11-4f0a3c1d2e3f"
PLAN = {
    "type": {
        "required_documents": ["w2", "1099"],
        "max_reminders": 1,
        "review_steps": ["preparer_review", "partner_review"],
    },
    "reminder_interval_s": 60,
    "dunning_interval_s": 600,
}


class History:
    """Builds a history episode by episode, as the task hub records it."""

    def __init__(self) -> None:
        self.clock = T0
        self.events = [
            event(ORCHESTRATOR_STARTED, self.clock),
            event(
                EXECUTION_STARTED,
                self.clock,
                Name="engagement_v1",
                Input=json.dumps({"engagement_id": ENGAGEMENT}),
                Version="",
            ),
        ]

    def episode(self, *new: dict[str, Any]) -> History:
        self.clock += timedelta(seconds=1)
        self.events += [
            event(ORCHESTRATOR_COMPLETED, self.clock),
            event(ORCHESTRATOR_STARTED, self.clock),
            *new,
        ]
        return self

    def completed(self, task_id: int, result: Any) -> History:
        return self.episode(
            event(TASK_COMPLETED, self.clock, TaskScheduledId=task_id, Result=json.dumps(result))
        )

    def raised(self, name: str, value: Any) -> History:
        return self.episode(event(EVENT_RAISED, self.clock, Name=name, Input=json.dumps(value)))

    def fired(self, timer_id: int) -> History:
        return self.episode(event(TIMER_FIRED, self.clock, TimerId=timer_id))


@pytest.fixture(scope="module")
def replay(services: dict[str, str]) -> Any:
    from functions import engagements

    handle = engagements.engagement_v1._function.get_user_function()

    def run(history: History) -> dict[str, Any]:
        payload = {
            "history": history.events,
            "instanceId": "i",
            "isReplaying": False,
            "parentInstanceId": None,
            "input": json.dumps({"engagement_id": ENGAGEMENT}),
            "upperSchemaVersion": 2,
        }
        state: dict[str, Any] = json.loads(handle(json.dumps(payload)))
        state["leaves"] = [a for a in flatten(state["actions"])]
        return state

    return run


def _requested(history: History) -> History:
    """Plan loaded and the first request sent: task 0 and 1 done."""
    return history.completed(0, PLAN).completed(1, True)


def test_first_episode_only_opens_the_engagement(replay):
    state = replay(History())
    assert [(a["actionType"], a.get("functionName")) for a in state["leaves"]] == [
        (A_ACTIVITY, "engagement_open")
    ]
    assert json.loads(state["leaves"][0]["input"]) == ENGAGEMENT


def test_waits_for_the_first_document_or_a_reminder_and_says_so(replay):
    state = replay(_requested(History()))
    last = state["leaves"][-2:]
    assert last[0]["actionType"] == A_WAIT_EVENT
    assert last[0]["externalEventName"] == "document_classified_1"
    assert last[1]["actionType"] == A_TIMER
    assert state["customStatus"] == {
        "step": "collecting_documents",
        "waiting_for": "documents: 1099, w2",
        "reminders": 0,
    }


def test_document_arriving_before_its_wait_is_counted(replay):
    history = History().completed(0, PLAN)
    # Both documents arrive while the request notification is still running.
    history.raised("document_classified_1", {"doc_class": "w2"})
    history.raised("document_classified_2", {"doc_class": "1099"})
    history.completed(1, True)
    state = replay(history)
    assert state["customStatus"]["step"] == "review:preparer_review"
    assert state["customStatus"]["event"] == "review_1"


def test_reminders_then_escalation_after_max_reminders(replay):
    # Timer 2 fires: reminder (task 3); timer 4 fires: escalation (task 5).
    history = _requested(History()).fired(2).completed(3, True).fired(4)
    state = replay(history)
    notify = state["leaves"][-1]
    assert notify["functionName"] == "engagement_notify"
    assert json.loads(notify["input"])["kind"] == "escalation"
    first = [a for a in state["leaves"] if a.get("functionName") == "engagement_notify"][1]
    assert json.loads(first["input"])["kind"] == "reminder"


def test_rejection_asks_again_for_the_named_documents(replay):
    history = _requested(History())
    history.raised("document_classified_1", {"doc_class": "w2"})
    history.raised("document_classified_2", {"doc_class": "1099"})
    history.raised(
        "review_1",
        {"decision": "reject", "comment": "blurred", "documents": ["w2", "not-a-class"]},
    )
    state = replay(history)
    rejected = state["leaves"][-1]
    assert json.loads(rejected["input"])["kind"] == "rejected"
    assert json.loads(rejected["input"])["body"] == {"comment": "blurred", "documents": ["w2"]}


def test_approvals_lead_to_the_invoice_with_retries(replay):
    history = _requested(History())
    history.raised("document_classified_1", {"doc_class": "w2"})
    history.raised("document_classified_2", {"doc_class": "1099"})
    history.raised("review_1", {"decision": "approve"})
    history.raised("review_2", {"decision": "approve"})
    state = replay(history)
    invoice = state["leaves"][-1]
    assert invoice["actionType"] == A_ACTIVITY_RETRY
    assert invoice["functionName"] == "engagement_invoice"
    assert invoice["retryOptions"] == {
        "firstRetryIntervalInMilliseconds": 5000,
        "maxNumberOfAttempts": 5,
    }
    assert state["customStatus"] == {"step": "invoicing", "waiting_for": "Stripe"}


def test_document_arriving_after_a_reminder_still_counts(replay):
    history = _requested(History()).fired(2).completed(3, True)
    history.raised("document_classified_1", {"doc_class": "w2"})
    history.raised("document_classified_2", {"doc_class": "1099"})
    state = replay(history)
    assert state["customStatus"]["step"] == "review:preparer_review"


def test_payment_after_a_dunning_reminder_is_taken(replay):
    history = _requested(History())
    history.raised("document_classified_1", {"doc_class": "w2"})
    history.raised("document_classified_2", {"doc_class": "1099"})
    history.raised("review_1", {"decision": "approve"})
    history.raised("review_2", {"decision": "approve"})
    # Tasks 2 and 3 were the reminder timers; 4 is the invoice, 5 the first dunning timer
    # and 6 its reminder.
    history.completed(4, "in_123").fired(5).completed(6, True)
    history.raised("invoice_paid", {"stripe_invoice_id": "in_123"})
    state = replay(history)
    assert state["customStatus"] == {
        "step": "delivering",
        "waiting_for": "the deliverable to be recorded",
    }
