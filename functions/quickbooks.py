"""QuickBooks Online: the push consumer, the account map and reconciliation endpoints, and
the OAuth connect, callback and disconnect endpoints.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import azure.functions as func

from functions._http import from_error, json_response, parse_uuid, route_uuid
from shared.adapters.servicebus import get_sender
from shared.config import QBO_CDC_SCHEDULE
from shared.errors import AdvisorError, NotFound, ValidationError
from shared.messaging import QUICKBOOKS_EVENTS_QUEUE, QUICKBOOKS_SYNC_QUEUE, SERVICE_BUS_CONNECTION
from shared.services import quickbooks_connections as connections
from shared.services import quickbooks_pull, quickbooks_sync

log = logging.getLogger(__name__)

quickbooks_bp = func.Blueprint()  # type: ignore[no-untyped-call]


@quickbooks_bp.service_bus_queue_trigger(
    arg_name="msg",
    queue_name=QUICKBOOKS_SYNC_QUEUE,
    connection=SERVICE_BUS_CONNECTION,
    is_sessions_enabled=True,
)
def quickbooks_push(msg: func.ServiceBusMessage) -> None:
    """Push a client's pending records to its realm.

    A realm that needs reconnecting is logged and the message completed: retrying cannot
    help until an advisor connects again. Anything else failing is retried by Service Bus;
    what was already answered stays recorded, so a retry sends only the rest.
    """
    try:
        body = json.loads(msg.get_body())
        client_id = uuid.UUID(str(body["client_id"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        log.error("quickbooks push message %s is malformed; dropped", msg.message_id)
        return
    try:
        outcome = quickbooks_sync.push_client(client_id)
    except (connections.NeedsReconnect, NotFound) as exc:
        # Not connected, or no longer: retrying cannot help until an advisor connects.
        log.error("quickbooks push skipped: %s", exc, extra={"client_id": str(client_id)})
        return
    log.info(
        "quickbooks push done: %s synced, %s failed, %s blocked, %s waiting",
        outcome.synced,
        outcome.failed,
        outcome.blocked,
        outcome.waiting,
        extra={"client_id": str(client_id), "outcome": "pushed"},
    )


@quickbooks_bp.service_bus_queue_trigger(
    arg_name="msg",
    queue_name=QUICKBOOKS_EVENTS_QUEUE,
    connection=SERVICE_BUS_CONNECTION,
    is_sessions_enabled=True,
)
def quickbooks_change(msg: func.ServiceBusMessage) -> None:
    """Bring one QuickBooks entity change into the local mirror.

    A malformed message raises and is dead-lettered after its retries, with the error's text;
    a realm that needs reconnecting is logged and the message completed (CDC catches up once
    it is connected again).
    """
    try:
        body = json.loads(msg.get_body())
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(f"quickbooks change {msg.message_id}: body is not JSON") from None
    if not isinstance(body, dict):
        raise ValidationError(f"quickbooks change {msg.message_id}: body is not an object")
    try:
        outcome = quickbooks_pull.apply_change(body)
    except connections.NeedsReconnect as exc:
        log.error("quickbooks change skipped: %s", exc, extra={"event_id": msg.message_id})
        return
    log.info(
        "quickbooks change %s: %s",
        msg.message_id,
        outcome.status,
        extra={"event_id": msg.message_id, "outcome": outcome.status},
    )


@quickbooks_bp.timer_trigger(arg_name="timer", schedule=QBO_CDC_SCHEDULE)
def quickbooks_cdc(timer: func.TimerRequest) -> None:
    """Change Data Capture per connected realm, from its cursor, to heal missed webhooks."""
    for realm_id in quickbooks_pull.active_realms():
        try:
            applied = quickbooks_pull.run_cdc(realm_id)
        except AdvisorError as exc:
            log.warning(
                "quickbooks CDC for realm %s failed: %s",
                realm_id,
                exc,
                extra={"realm_id": realm_id},
            )
            continue
        log.info(
            "quickbooks CDC for realm %s: %s change(s)",
            realm_id,
            applied,
            extra={"realm_id": realm_id},
        )


@quickbooks_bp.route(route="clients/{client_id}/quickbooks/sync", methods=["POST"])
def request_push(req: func.HttpRequest) -> func.HttpResponse:
    """Queue a push of the client's records to QuickBooks (202)."""
    try:
        client_id = route_uuid(req, "client_id")
        realm_id = quickbooks_sync.request_push(client_id, get_sender())
    except AdvisorError as exc:
        return from_error(exc)
    return json_response({"queued": True, "realm_id": realm_id}, status=202)


@quickbooks_bp.route(route="clients/{client_id}/quickbooks/account-map", methods=["GET", "PUT"])
def account_map(req: func.HttpRequest) -> func.HttpResponse:
    """Read the account map, or set entries of it: ``{"mappings": [{"account": "6200",
    "qbo_account_id": "12", "qbo_account_name": "Rent"}]}``."""
    try:
        client_id = route_uuid(req, "client_id")
        if req.method == "GET":
            return json_response({"accounts": quickbooks_sync.account_map(client_id)})
        body = _json_body(req)
        mappings = body.get("mappings")
        if not isinstance(mappings, list) or not mappings:
            raise ValidationError("field 'mappings' must be a non-empty list")
        result = quickbooks_sync.set_account_map(client_id, mappings, actor="api")
    except AdvisorError as exc:
        return from_error(exc)
    return json_response({"accounts": result})


@quickbooks_bp.route(route="clients/{client_id}/quickbooks/reconciliation", methods=["GET"])
def reconciliation(req: func.HttpRequest) -> func.HttpResponse:
    """Ledger versus QuickBooks per mapped account, and records waiting, failed, blocked."""
    try:
        return json_response(quickbooks_sync.reconciliation(route_uuid(req, "client_id")))
    except AdvisorError as exc:
        return from_error(exc)


@quickbooks_bp.route(route="quickbooks/connect", methods=["GET"])
def connect(req: func.HttpRequest) -> func.HttpResponse:
    """Redirect to Intuit's consent page for ``?client=<id>`` (``&environment=production``
    for a live company; sandbox by default), with a signed state that expires."""
    try:
        client_id = parse_uuid(req.params.get("client", ""), "client")
        environment = req.params.get("environment", "sandbox")
        if environment not in ("sandbox", "production"):
            raise ValidationError("query 'environment' must be sandbox or production")
        url = connections.connect_url(client_id, environment)
    except AdvisorError as exc:
        return from_error(exc)
    return func.HttpResponse(status_code=302, headers={"Location": url})


@quickbooks_bp.route(
    route="quickbooks/callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS
)
def callback(req: func.HttpRequest) -> func.HttpResponse:
    """Intuit's redirect back: check the state, exchange the code, store the connection."""
    try:
        missing = [n for n in ("state", "code", "realmId") if not req.params.get(n)]
        if missing:
            raise ValidationError(f"query {', '.join(missing)} missing from the callback")
        connection = connections.complete_connection(
            req.params["state"], req.params["code"], req.params["realmId"]
        )
    except AdvisorError as exc:
        return from_error(exc)
    return json_response(
        {
            "client_id": str(connection.client_id),
            "realm_id": connection.realm_id,
            "environment": connection.environment,
            "status": connection.status,
        }
    )


@quickbooks_bp.route(route="clients/{client_id}/quickbooks/disconnect", methods=["POST"])
def disconnect(req: func.HttpRequest) -> func.HttpResponse:
    """Revoke the client's QuickBooks tokens and stop syncing."""
    try:
        connections.disconnect(route_uuid(req, "client_id"))
    except AdvisorError as exc:
        return from_error(exc)
    return json_response({"disconnected": True})


def _json_body(req: func.HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(req.get_body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return body
