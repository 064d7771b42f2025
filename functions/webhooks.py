"""Webhook intake: the Stripe and QuickBooks endpoints, the outbox relay timer, and the admin
call that replays recorded events.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import azure.functions as func

from functions._http import from_error, json_response, problem
from shared import telemetry
from shared.config import get_settings
from shared.errors import AdvisorError, ConfigError, ValidationError
from shared.messaging import MessageSender, OutboundMessage
from shared.services import outbox, webhooks

log = logging.getLogger(__name__)

intake_bp = func.Blueprint()  # type: ignore[no-untyped-call]

Accept = Callable[..., webhooks.Receipt]


def _sender() -> MessageSender:
    """The worker's Service Bus sender (real namespace, or the local broker)."""
    from shared.adapters.servicebus import get_sender

    return get_sender()


class _SenderOnFirstSend:
    """Resolves the sender only when there is something to send, so that a sender that
    cannot be built fails a hand-off (which the relay repeats), never a delivery."""

    def send(self, queue: str, messages: Sequence[OutboundMessage]) -> None:
        with telemetry.producer_span(queue, len(messages)):
            _sender().send(queue, messages)

    def enqueues_in_transaction(self) -> bool:
        """True with the local broker, whose queues live in the app's database."""
        try:
            sender = _sender()
        except Exception:  # noqa: BLE001 - then the outbox path's hand-off reports it
            return False
        enqueues = getattr(sender, "enqueues_in_transaction", None)
        return enqueues is not None and bool(enqueues())

    def enqueue_sql(self, messages: Sequence[tuple[str, OutboundMessage]]) -> str:
        return cast(outbox.TransactionalSender, _sender()).enqueue_sql(messages)


@intake_bp.route(route="webhooks/stripe", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def stripe_webhook(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Record a Stripe event once and queue it; the signature is the authentication."""
    return _intake(req, context, webhooks.STRIPE, webhooks.accept_stripe)


@intake_bp.route(
    route="webhooks/quickbooks", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS
)
def quickbooks_webhook(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Record a QuickBooks notification once and queue its entity changes."""
    return _intake(req, context, webhooks.QUICKBOOKS, webhooks.accept_quickbooks)


@intake_bp.timer_trigger(
    arg_name="timer", schedule=get_settings().outbox_relay_schedule, use_monitor=False
)
def outbox_relay(timer: func.TimerRequest) -> None:
    """Send the outbox rows that were not handed to Service Bus when they were written."""
    outbox.relay(_SenderOnFirstSend())


@intake_bp.route(route="ops/webhooks/replay", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def replay_webhooks(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Send recorded events again: ``{"event_ids": [...]}`` or ``{"received_from": iso,
    "received_to": iso}``, either with an optional ``"source"``."""
    try:
        body = _json_object(req.get_body())
        outcome = webhooks.replay(
            _SenderOnFirstSend(),
            traceparent=_traceparent(req, context),
            event_ids=_ids(body.get("event_ids")),
            source=_optional_text(body, "source"),
            received_from=_instant(body, "received_from"),
            received_to=_instant(body, "received_to"),
        )
    except AdvisorError as exc:
        return from_error(exc)
    return json_response(
        {
            "replayed": outcome.replayed,
            "messages": outcome.messages,
            "sent": outcome.sent,
            "not_found": list(outcome.not_found),
        }
    )


def _intake(
    req: func.HttpRequest, context: func.Context, source: str, accept: Accept
) -> func.HttpResponse:
    # Refuse an announced oversized body before touching it.
    limit = get_settings().webhook_max_bytes
    declared = req.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        return _too_large(limit)
    body = req.get_body()
    if len(body) > limit:
        return _too_large(limit)

    headers = _lower(req.headers)
    with telemetry.request_span(
        f"POST /api/webhooks/{source}", _traceparent(req, context), {"webhook.source": source}
    ) as traceparent:
        return _accept(body, headers, source, accept, traceparent)


def _accept(
    body: bytes, headers: dict[str, str], source: str, accept: Accept, traceparent: str
) -> func.HttpResponse:
    try:
        receipt = accept(body, headers, _SenderOnFirstSend(), traceparent=traceparent)
    except ConfigError as exc:
        log.error("%s webhook refused: %s", source, exc, extra={"source": source})
        return problem(503, "Service unavailable", "webhook verification is not configured")
    except ValidationError as exc:
        log.warning("%s webhook refused: %s", source, exc, extra={"source": source})
        return from_error(exc)
    except AdvisorError as exc:
        return from_error(exc)
    telemetry.record_webhook(source, duplicate=receipt.duplicate)
    return json_response({"received": True, "duplicate": receipt.duplicate})


def _traceparent(req: func.HttpRequest, context: func.Context) -> str:
    return telemetry.traceparent(
        context.trace_context.trace_parent, req.headers.get("traceparent")
    )


def _too_large(limit: int) -> func.HttpResponse:
    return problem(413, "Payload too large", f"the body is over {limit} bytes")


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return body


def _ids(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValidationError("field 'event_ids' must be a list of event ids")
    return list(value)


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"field {name!r} must be text")
    return value


def _instant(body: dict[str, Any], name: str) -> datetime | None:
    text = _optional_text(body, name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"field {name!r}: {text!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise ValidationError(f"field {name!r}: {text!r} needs a UTC offset (such as Z)")
    return moment
