"""Engagement workflows: the Durable orchestration of a client engagement, its activities,
its HTTP endpoints, and the relay that raises document and payment events in it."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from functions._durable import is_active, start_engagement_once
from functions._http import from_error, json_response, parse_uuid, problem, route_uuid
from shared.config import get_settings
from shared.errors import AdvisorError, ValidationError
from shared.services import engagements, month_end

log = logging.getLogger(__name__)

engagements_bp = df.Blueprint()

REVIEW_DECISIONS = ("approve", "reject")
ACTOR = "engagements"
# Attempts of the Stripe invoice call, and the wait between them.
INVOICE_ATTEMPTS = 5
INVOICE_RETRY_MS = 5_000
# Engagement events the relay reads and raises at once.
RELAY_BATCH = 100


@engagements_bp.orchestration_trigger(context_name="context")
def engagement_v1(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    """Open → request documents → wait (reminders, escalation) → reviews (a rejection goes
    back to the request) → invoice → wait for payment (dunning) → deliver → close.

    Custom status always names the step and what it waits for.
    """
    engagement_id = str(context.get_input()["engagement_id"])
    plan = yield context.call_activity("engagement_open", engagement_id)
    kind = plan["type"]
    missing = set(kind["required_documents"])
    request_round = 0
    documents_seen = 0
    reviews_seen = 0
    while True:
        # Ask for what is missing, then wait for each document, reminding on a cadence.
        request_round += 1
        yield context.call_activity(
            "engagement_notify",
            {
                "engagement_id": engagement_id,
                "kind": "documents_requested",
                "key": f"request:{request_round}",
                "body": {"documents": sorted(missing)},
            },
        )
        reminders = 0
        # One wait per document, kept across reminders: a second wait for the same name
        # would leave the first to take the event (the SDK completes the oldest).
        arrived = None
        while missing:
            _status(
                context,
                "collecting_documents",
                f"documents: {', '.join(sorted(missing))}",
                reminders=reminders,
            )
            if arrived is None:
                arrived = context.wait_for_external_event(
                    engagements.document_event_name(documents_seen + 1)
                )
            due = context.current_utc_datetime + timedelta(seconds=plan["reminder_interval_s"])
            reminder = context.create_timer(due)
            winner = yield context.task_any([arrived, reminder])
            if winner == arrived:
                reminder.cancel()
                documents_seen += 1
                missing.discard(str(arrived.result.get("doc_class")))
                arrived = None
                continue
            reminders += 1
            kind_of = "escalation" if reminders > kind["max_reminders"] else "reminder"
            yield context.call_activity(
                "engagement_notify",
                {
                    "engagement_id": engagement_id,
                    "kind": kind_of,
                    "key": f"request:{request_round}:reminder:{reminders}",
                    "body": {"documents": sorted(missing), "reminder": reminders},
                },
            )

        # Each review step in order; a rejection names what to redo and starts over.
        rejected = None
        for step in kind["review_steps"]:
            reviews_seen += 1
            name = engagements.review_event_name(reviews_seen)
            _status(context, f"review:{step}", "review event: approve or reject", event=name)
            decision = yield context.wait_for_external_event(name)
            if decision.get("decision") == "reject":
                rejected = decision
                break
        if rejected is None:
            break
        missing = set(rejected.get("documents") or []) & set(kind["required_documents"])
        yield context.call_activity(
            "engagement_notify",
            {
                "engagement_id": engagement_id,
                "kind": "rejected",
                "key": f"request:{request_round}:rejected",
                "body": {"comment": rejected.get("comment", ""), "documents": sorted(missing)},
            },
        )

    _status(context, "invoicing", "Stripe")
    retry = df.RetryOptions(INVOICE_RETRY_MS, INVOICE_ATTEMPTS)
    invoice_id = yield context.call_activity_with_retry("engagement_invoice", retry, engagement_id)
    dunning = 0
    paid = context.wait_for_external_event(engagements.INVOICE_PAID_EVENT)
    while True:
        _status(context, "awaiting_payment", f"invoice.paid for {invoice_id}", dunning=dunning)
        due = context.current_utc_datetime + timedelta(seconds=plan["dunning_interval_s"])
        timer = context.create_timer(due)
        winner = yield context.task_any([paid, timer])
        if winner == paid:
            timer.cancel()
            break
        dunning += 1
        yield context.call_activity(
            "engagement_notify",
            {
                "engagement_id": engagement_id,
                "kind": "payment_reminder",
                "key": f"dunning:{dunning}",
                "body": {"stripe_invoice_id": invoice_id},
            },
        )

    _status(context, "delivering", "the deliverable to be recorded")
    yield context.call_activity(
        "engagement_finish", {"engagement_id": engagement_id, "status": "delivered"}
    )
    yield context.call_activity(
        "engagement_finish", {"engagement_id": engagement_id, "status": "closed"}
    )
    _status(context, "closed", "nothing")
    return {
        "engagement_id": engagement_id,
        "stripe_invoice_id": invoice_id,
        "requests": request_round,
    }


def _status(
    context: df.DurableOrchestrationContext, step: str, waiting_for: str, **extra: Any
) -> None:
    context.set_custom_status({"step": step, "waiting_for": waiting_for, **extra})


@engagements_bp.activity_trigger(input_name="engagement_id")
def engagement_open(engagement_id: str) -> dict[str, Any]:
    """The engagement's plan (type, intervals); the row was opened by the HTTP start."""
    return engagements.plan(uuid.UUID(engagement_id))


@engagements_bp.activity_trigger(input_name="request")
def engagement_notify(request: dict[str, Any]) -> bool:
    """Record one notification (once per key)."""
    return engagements.record_notification(
        uuid.UUID(request["engagement_id"]), request["kind"], request["key"], request["body"]
    )


@engagements_bp.activity_trigger(input_name="engagement_id")
def engagement_invoice(engagement_id: str) -> str:
    """Invoice the fee through Stripe (idempotent by the engagement)."""
    return engagements.issue_invoice(uuid.UUID(engagement_id))


@engagements_bp.activity_trigger(input_name="request")
def engagement_finish(request: dict[str, Any]) -> str:
    """Deliver (a deliverable recorded) or close the engagement."""
    engagement_id = uuid.UUID(request["engagement_id"])
    status = str(request["status"])
    deliverable = f"deliverables/{engagement_id}.pdf" if status == "delivered" else None
    engagements.set_status(engagement_id, status, ACTOR, deliverable=deliverable)
    return status


def _text(body: dict[str, Any], name: str) -> str:
    """A required text field of a request body.

    Raises:
        ValidationError: the field is missing or not a string.
    """
    value = body.get(name)
    if not isinstance(value, str):
        raise ValidationError(f"{name} is required and must be a string")
    return value


@engagements_bp.route(route="engagements", methods=["POST"])
@engagements_bp.durable_client_input(client_name="client")
async def start_engagement(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Open an engagement and start its orchestration; starting twice answers the same one."""
    try:
        body = _json_body(req)
        if body.get("client_id") is None:
            raise ValidationError("client_id is required")
        client_id = parse_uuid(body["client_id"], "client_id")
        engagement = await asyncio.to_thread(
            engagements.open_engagement,
            client_id,
            _text(body, "engagement_type"),
            _text(body, "period"),
            actor=ACTOR,
        )
    except AdvisorError as exc:
        return from_error(exc)
    created = await start_engagement_once(client, engagement)
    response = client.create_check_status_response(req, engagement.instance_id)
    payload = {**json.loads(response.get_body()), **engagement.to_json()}
    return json_response(payload, 202 if created else 200)


@engagements_bp.route(route="engagements/{engagement_id}", methods=["GET"])
@engagements_bp.durable_client_input(client_name="client")
async def engagement_status(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """The engagement row and its orchestration's status (step and what it waits for)."""
    try:
        engagement = await _engagement(req)
    except AdvisorError as exc:
        return from_error(exc)
    status = await client.get_status(engagement.instance_id)
    runtime = status.runtime_status.value if status.runtime_status else None
    return json_response(
        {
            **engagement.to_json(),
            "runtime_status": runtime,
            "custom_status": status.custom_status,
            "output": status.output,
        }
    )


@engagements_bp.route(route="engagements/{engagement_id}/events/{event}", methods=["POST"])
@engagements_bp.durable_client_input(client_name="client")
async def engagement_event(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Send the engagement an advisor's event: ``review`` with ``{"decision": "approve"}`` or
    ``{"decision": "reject", "comment": ..., "documents": [...]}``."""
    try:
        engagement = await _engagement(req)
        event = req.route_params.get("event")
        if event != engagements.REVIEW_EVENT:
            raise ValidationError(f"event {event!r} cannot be sent here; send 'review'")
        body = _json_body(req)
        if body.get("decision") not in REVIEW_DECISIONS:
            raise ValidationError(
                f"decision must be one of {', '.join(REVIEW_DECISIONS)}, not "
                f"{body.get('decision')!r}"
            )
        if body["decision"] == "reject" and not str(body.get("comment", "")).strip():
            raise ValidationError("a rejection needs a comment saying what to fix")
    except AdvisorError as exc:
        return from_error(exc)
    status = await client.get_status(engagement.instance_id)
    waiting = engagements.waiting_review(status.custom_status) if is_active(status) else None
    if waiting is None:
        return problem(
            409, "Not in review", f"engagement {engagement.id} is not waiting for a review"
        )
    # The review being waited for, by its own event name: a second click finds the next
    # step's name or none, and never lingers to be taken for a later decision.
    await client.raise_event(engagement.instance_id, waiting[1], body)
    return json_response({"accepted": True, **engagement.to_json()}, 202)


@engagements_bp.route(route="engagements/{engagement_id}/cancel", methods=["POST"])
@engagements_bp.durable_client_input(client_name="client")
async def cancel_engagement(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Stop the engagement's orchestration and mark it cancelled."""
    try:
        engagement = await _engagement(req)
    except AdvisorError as exc:
        return from_error(exc)
    if is_active(await client.get_status(engagement.instance_id)):
        await client.terminate(engagement.instance_id, "cancelled by the firm")
    await asyncio.to_thread(engagements.set_status, engagement.id, "cancelled", ACTOR)
    return json_response({**engagement.to_json(), "status": "cancelled"})


@engagements_bp.timer_trigger(
    arg_name="timer", schedule=get_settings().engagement_event_relay_schedule, use_monitor=False
)
@engagements_bp.durable_client_input(client_name="client")
async def engagement_event_relay(
    timer: func.TimerRequest, client: df.DurableOrchestrationClient
) -> None:
    """Raise the document and payment events recorded by other capabilities, a batch at a
    time and the events of a batch concurrently, until none is left."""
    while True:
        pending = await asyncio.to_thread(engagements.pending_events, RELAY_BATCH)
        raised = await asyncio.gather(*(_relay(client, *one) for one in pending))
        await asyncio.to_thread(
            engagements.mark_all_relayed,
            [one[0] for one, ok in zip(pending, raised, strict=True) if ok],
        )
        # A batch with a failure stops here: the next run tries those events again.
        if len(pending) < RELAY_BATCH or not all(raised):
            return


async def _relay(
    client: df.DurableOrchestrationClient,
    event_id: int,
    instance_id: str,
    name: str,
    payload: dict[str, Any],
) -> bool:
    """Raise one event; returns whether it is settled (raised, or dropped as undeliverable)."""
    try:
        status = await client.get_status(instance_id)
        if is_active(status):
            await client.raise_event(instance_id, name, payload)
            return True
    except Exception:  # the SDK client raises bare Exception; the next run retries
        log.warning(
            "engagement event %s for %s not raised; the next relay run tries again",
            event_id,
            instance_id,
            exc_info=True,
            extra={"instance_id": instance_id},
        )
        return False
    log.warning(
        "engagement event %s for %s dropped: the orchestration is %s",
        event_id,
        instance_id,
        status.runtime_status,
        extra={"instance_id": instance_id},
    )
    return True


@engagements_bp.orchestration_trigger(context_name="context")
def month_end_close_v1(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    """Close a bookkeeping client's month: checks per bank account (in parallel), the
    QuickBooks sync request, the close report, then the period lock."""
    request = context.get_input()
    client_id, period = str(request["client_id"]), str(request["period"])
    _status(context, "listing_bank_accounts", "the database")
    accounts = yield context.call_activity("close_bank_accounts", client_id)

    _status(context, "checking_accounts", f"{len(accounts)} bank account checks")
    checks = yield context.task_all(
        [
            context.call_activity(
                "close_check_account", {"client_id": client_id, "account_id": a, "period": period}
            )
            for a in accounts
        ]
    )

    _status(context, "syncing_quickbooks", "the sync request to be queued")
    message_id = yield context.call_activity(
        "close_request_sync", {"client_id": client_id, "period": period}
    )
    _status(context, "writing_report", "Blob storage")
    report = yield context.call_activity(
        "close_write_report", {"client_id": client_id, "period": period, "checks": checks}
    )
    _status(context, "locking_period", "the database")
    locked_through = yield context.call_activity(
        "close_lock_period", {"client_id": client_id, "period": period}
    )
    _status(context, "closed", "nothing")
    return {
        "client_id": client_id,
        "period": period,
        "accounts": checks,
        "quickbooks_sync_message": message_id,
        "report": report,
        "locked_through": locked_through,
    }


@engagements_bp.activity_trigger(input_name="client_id")
def close_bank_accounts(client_id: str) -> list[int]:
    """The client's bank accounts."""
    return month_end.bank_accounts(uuid.UUID(client_id))


@engagements_bp.activity_trigger(input_name="request")
def close_check_account(request: dict[str, Any]) -> dict[str, Any]:
    """One bank account's imports, reconciliation and uncategorised count."""
    return month_end.check_account(
        uuid.UUID(request["client_id"]), int(request["account_id"]), request["period"]
    )


@engagements_bp.activity_trigger(input_name="request")
def close_request_sync(request: dict[str, Any]) -> str:
    """Queue the period's QuickBooks sync."""
    return month_end.request_quickbooks_sync(uuid.UUID(request["client_id"]), request["period"])


@engagements_bp.activity_trigger(input_name="request")
def close_write_report(request: dict[str, Any]) -> list[str]:
    """Write the close report (JSON and CSV) to Blob storage."""
    return month_end.write_report(
        uuid.UUID(request["client_id"]), request["period"], request["checks"]
    )


@engagements_bp.activity_trigger(input_name="request")
def close_lock_period(request: dict[str, Any]) -> str:
    """Lock the period in the database."""
    return month_end.lock_period(uuid.UUID(request["client_id"]), request["period"], ACTOR)


@engagements_bp.route(route="clients/{client_id}/closes/{period}", methods=["POST"])
@engagements_bp.durable_client_input(client_name="client")
async def start_month_end_close(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Start the month-end close of a client's period; starting twice answers the same one."""
    try:
        client_id = route_uuid(req, "client_id")
        period = str(req.route_params.get("period"))
        instance_id = month_end.instance_id_for(client_id, period)
        await asyncio.to_thread(month_end.bank_accounts, client_id)
    except AdvisorError as exc:
        return from_error(exc)
    existing = await client.get_status(instance_id)
    created = existing is None or existing.runtime_status is None
    if created:
        await client.start_new(
            month_end.ORCHESTRATOR, instance_id, {"client_id": str(client_id), "period": period}
        )
    response = client.create_check_status_response(req, instance_id)
    return json_response(json.loads(response.get_body()), 202 if created else 200)


def _json_body(req: func.HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(req.get_body() or b"{}")
    except ValueError as exc:
        raise ValidationError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return body


async def _engagement(req: func.HttpRequest) -> engagements.Engagement:
    """The engagement the route names, read off the event loop (as every database call of
    these async handlers is: a blocking call there would stall every other request).

    Raises:
        NotFound: the id is no UUID, or no engagement has it.
    """
    return await asyncio.to_thread(engagements.get, route_uuid(req, "engagement_id"))
