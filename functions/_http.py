"""Small helpers the HTTP blueprints share: JSON bodies and RFC 9457 problem responses."""

from __future__ import annotations

import json
import uuid
from typing import Any

import azure.functions as func

from shared.errors import Conflict, NotFound, UpstreamError, ValidationError


def json_response(body: Any, status: int = 200) -> func.HttpResponse:
    """Answer with a JSON body."""
    return func.HttpResponse(
        json.dumps(body, default=str), status_code=status, mimetype="application/json"
    )


def problem(status: int, title: str, detail: str, **extra: Any) -> func.HttpResponse:
    """Answer with an ``application/problem+json`` body (RFC 9457)."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return func.HttpResponse(
        json.dumps(body), status_code=status, mimetype="application/problem+json"
    )


def from_error(exc: Exception) -> func.HttpResponse:
    """Map a typed AdvisorOS error to its HTTP answer; anything else is re-raised."""
    if isinstance(exc, NotFound):
        return problem(404, "Not found", str(exc))
    if isinstance(exc, ValidationError):
        return problem(400, "Invalid request", str(exc))
    if isinstance(exc, Conflict):
        return problem(409, "Conflict", str(exc))
    if isinstance(exc, UpstreamError):
        return problem(503, "Service unavailable", "a dependency is unavailable; try again")
    raise exc


def route_uuid(req: func.HttpRequest, name: str) -> uuid.UUID:
    """Read a UUID route parameter (see ``parse_uuid``)."""
    return parse_uuid(req.route_params.get(name, ""), name)


def parse_uuid(value: object, name: str) -> uuid.UUID:
    """Read an id.

    Raises:
        NotFound: the value is not a UUID (an id that cannot exist is simply not found).
    """
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"{name} {value!r} not found") from None


def route_int(req: func.HttpRequest, name: str) -> int:
    """Read a positive integer route parameter (NotFound otherwise)."""
    raw = req.route_params.get(name, "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise NotFound(f"{name} {raw!r} not found")
    return int(raw)
