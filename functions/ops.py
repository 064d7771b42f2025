"""Operations endpoints: readiness and liveness, the dead-letter tools, and the admin calls
that set up firms, clients, charts and Stripe accounts until the portal API takes them over.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import azure.functions as func

from functions._http import from_error, json_response, parse_uuid, route_uuid
from shared.errors import AdvisorError, ValidationError
from shared.messaging import DeadLetter
from shared.services import billing, clients, dead_letters, health

ops_bp = func.Blueprint()  # type: ignore[no-untyped-call]


@ops_bp.route(route="ready", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def readiness(req: func.HttpRequest) -> func.HttpResponse:
    """Report whether the database, storage and Service Bus are reachable: 200, or 503
    naming each one that is down."""
    result = health.ready()
    if result["down"]:
        result["detail"] = "not ready: " + ", ".join(result["down"]) + " unreachable"
        return json_response(result, status=503)
    return json_response(result)


@ops_bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health_check(req: func.HttpRequest) -> func.HttpResponse:
    """Answer 200 while the worker serves requests, touching no dependency (liveness).

    Whether the database, storage and bus answer is ``/api/ready``'s question: a process
    that is alive but cut off is not restarted by a failing dependency.
    """
    return json_response({"status": "alive"})


@ops_bp.route(route="health/live", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def liveness(req: func.HttpRequest) -> func.HttpResponse:
    """The same liveness answer as ``/api/health``, under the name probes often use."""
    return json_response({"status": "alive"})


@ops_bp.route(route="ops/clients", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def create_client(req: func.HttpRequest) -> func.HttpResponse:
    """Create a client (and its firm when no ``firm_id`` is given) with the starter chart."""
    try:
        body = _json_body(req)
        name = _text(body, "name")
        firm_id = body.get("firm_id")
        firm = (
            parse_uuid(firm_id, "firm_id")
            if firm_id
            else clients.create_firm(str(body.get("firm_name") or f"{name} firm"))
        )
        client_id = clients.create_client(
            firm, name, base_currency=str(body.get("base_currency") or "USD")
        )
        return json_response({"client_id": str(client_id), "firm_id": str(firm)}, status=201)
    except AdvisorError as exc:
        return from_error(exc)


@ops_bp.route(
    route="ops/clients/{client_id}/accounts", methods=["POST"], auth_level=func.AuthLevel.ADMIN
)
def add_account(req: func.HttpRequest) -> func.HttpResponse:
    """Add an account (``code``, ``name``, ``type``) to a client's chart."""
    try:
        client_id = route_uuid(req, "client_id")
        body = _json_body(req)
        account_id = clients.add_account(
            client_id, _text(body, "code"), _text(body, "name"), _text(body, "type"), actor="ops"
        )
        return json_response({"account_id": account_id}, status=201)
    except AdvisorError as exc:
        return from_error(exc)


@ops_bp.route(route="ops/stripe-accounts", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def link_stripe_account(req: func.HttpRequest) -> func.HttpResponse:
    """Link a Stripe account (``stripe_account_id``) to a firm (``firm_id``): 201 with the
    books client its events post to, 200 when it was linked already, 409 for another firm."""
    try:
        body = _json_body(req)
        firm_id = parse_uuid(_text(body, "firm_id"), "firm_id")
        account = _text(body, "stripe_account_id")
        if not account.startswith("acct_"):
            raise ValidationError(f"field 'stripe_account_id' must be acct_..., not {account!r}")
        link = billing.ensure_stripe_account_link(
            firm_id, account, base_currency=str(body.get("base_currency") or "USD")
        )
        return json_response(
            {
                "stripe_account_id": account,
                "firm_id": str(firm_id),
                "books_client_id": str(link.books_client_id),
                "created": link.created,
            },
            status=201 if link.created else 200,
        )
    except AdvisorError as exc:
        return from_error(exc)


@ops_bp.route(
    route="ops/queues/{queue}/dead-letters", methods=["GET"], auth_level=func.AuthLevel.ADMIN
)
def peek_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """List the oldest dead letters of a queue (``?max=``, default 50), leaving them there."""
    try:
        raw = req.params.get("max") or "50"
        if not (raw.isascii() and raw.isdigit()):
            raise ValidationError(f"max must be a whole number, not {raw!r}")
        found = dead_letters.peek(req.route_params.get("queue", ""), int(raw[:9]))
        return json_response({"dead_letters": [_dead_letter_json(d) for d in found]})
    except AdvisorError as exc:
        return from_error(exc)


@ops_bp.route(
    route="ops/queues/{queue}/dead-letters/resubmit",
    methods=["POST"],
    auth_level=func.AuthLevel.ADMIN,
)
def resubmit_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """Send dead letters (``{"message_ids": [...]}``) back to their queue."""
    try:
        ids = _json_body(req).get("message_ids")
        if not isinstance(ids, list):
            raise ValidationError("message_ids must be a non-empty list of message ids")
        outcome = dead_letters.resubmit(req.route_params.get("queue", ""), ids)
        return json_response(
            {"resubmitted": list(outcome.resubmitted), "not_found": list(outcome.not_found)}
        )
    except AdvisorError as exc:
        return from_error(exc)


@ops_bp.timer_trigger(arg_name="timer", schedule=dead_letters.DEPTH_SCHEDULE, use_monitor=False)
def dead_letter_depth(timer: func.TimerRequest) -> None:
    """Record each queue's dead-letter depth as a metric, every five minutes."""
    dead_letters.measure()


def _dead_letter_json(dead: DeadLetter) -> dict[str, Any]:
    try:
        body: dict[str, str] = {"body": dead.body.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"body_base64": base64.b64encode(dead.body).decode()}
    return {
        "message_id": dead.message_id,
        "sequence_number": dead.sequence_number,
        "session_id": dead.session_id,
        "subject": dead.subject,
        "content_type": dead.content_type,
        "application_properties": dict(dead.application_properties),
        "enqueued_time": dead.enqueued_time.isoformat() if dead.enqueued_time else None,
        "delivery_count": dead.delivery_count,
        "dead_letter_reason": dead.dead_letter_reason,
        "dead_letter_description": dead.dead_letter_description,
        **body,
    }


def _json_body(req: func.HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(req.get_body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"field {name!r} is required and must be text")
    return value
