"""SCIM 2.0 endpoints under ``/api/scim/v2/``: the identity provider provisions the firm's
users and groups here, authenticated by a bearer secret (``SCIM_BEARER_TOKENS``)."""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.config import get_settings
from shared.errors import AdvisorError, Conflict, NotFound, UpstreamError, ValidationError
from shared.services import scim

scim_bp = func.Blueprint()  # type: ignore[no-untyped-call]

SCIM_ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM_MEDIA_TYPE = "application/scim+json"


def _answer(body: dict[str, Any] | None, status: int = 200) -> func.HttpResponse:
    if body is None:
        return func.HttpResponse(status_code=status)
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype=SCIM_MEDIA_TYPE)


def _error(status: int, detail: str, scim_type: str | None = None) -> func.HttpResponse:
    body: dict[str, Any] = {
        "schemas": [SCIM_ERROR_SCHEMA],
        "status": str(status),
        "detail": detail,
    }
    if scim_type:
        body["scimType"] = scim_type
    return _answer(body, status)


def _firm(req: func.HttpRequest) -> uuid.UUID | func.HttpResponse:
    settings = get_settings()
    if not settings.scim_bearer_tokens or not settings.scim_firm_id:
        return _error(503, "SCIM is not configured (SCIM_BEARER_TOKENS, SCIM_FIRM_ID)")
    scheme, _, token = (req.headers.get("authorization") or "").partition(" ")
    given = token.strip().encode()
    if scheme.lower() != "bearer" or not any(
        hmac.compare_digest(given, secret.encode()) for secret in settings.scim_bearer_tokens
    ):
        return _error(401, "a valid SCIM bearer token is required")
    return uuid.UUID(settings.scim_firm_id)


def _body(req: func.HttpRequest) -> dict[str, Any]:
    if len(req.get_body()) > get_settings().portal_max_body_bytes:
        raise ValidationError("the body is too large")
    try:
        data = json.loads(req.get_body() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object")
    return data


def _serve(
    req: func.HttpRequest, handle: Callable[[uuid.UUID], func.HttpResponse]
) -> func.HttpResponse:
    firm = _firm(req)
    if isinstance(firm, func.HttpResponse):
        return firm
    try:
        return handle(firm)
    except ValidationError as exc:
        return _error(400, str(exc), "invalidValue")
    except NotFound as exc:
        return _error(404, str(exc))
    except Conflict as exc:
        return _error(409, str(exc), "uniqueness")
    except UpstreamError:
        return _error(503, "a dependency is unavailable; try again")
    except AdvisorError as exc:
        return _error(400, str(exc))


@scim_bp.route(route="scim/v2/Users", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def scim_users(req: func.HttpRequest) -> func.HttpResponse:
    """List users (``filter=userName eq "..."``) or create one."""

    def handle(firm: uuid.UUID) -> func.HttpResponse:
        if req.method.upper() == "POST":
            return _answer(scim.create_user(firm, _body(req)), 201)
        return _answer(scim.list_users(firm, req.params.get("filter")))

    return _serve(req, handle)


@scim_bp.route(
    route="scim/v2/Users/{user_id}",
    methods=["GET", "PATCH", "DELETE"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
def scim_user(req: func.HttpRequest) -> func.HttpResponse:
    """Get, patch (``active`` and names) or delete one user."""
    user_id = req.route_params.get("user_id", "")

    def handle(firm: uuid.UUID) -> func.HttpResponse:
        method = req.method.upper()
        if method == "PATCH":
            return _answer(scim.patch_user(firm, user_id, _body(req)))
        if method == "DELETE":
            scim.delete_user(firm, user_id)
            return _answer(None, 204)
        return _answer(scim.get_user(firm, user_id))

    return _serve(req, handle)


@scim_bp.route(
    route="scim/v2/Groups", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS
)
def scim_groups(req: func.HttpRequest) -> func.HttpResponse:
    """List groups (``filter=displayName eq "..."``) or create one."""

    def handle(firm: uuid.UUID) -> func.HttpResponse:
        if req.method.upper() == "POST":
            return _answer(scim.create_group(firm, _body(req)), 201)
        return _answer(scim.list_groups(firm, req.params.get("filter")))

    return _serve(req, handle)


@scim_bp.route(
    route="scim/v2/Groups/{group_id}",
    methods=["GET", "PATCH", "DELETE"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
def scim_group(req: func.HttpRequest) -> func.HttpResponse:
    """Get, patch members of, or delete one group."""
    group_id = req.route_params.get("group_id", "")

    def handle(firm: uuid.UUID) -> func.HttpResponse:
        method = req.method.upper()
        if method == "PATCH":
            return _answer(scim.patch_group(firm, group_id, _body(req)))
        if method == "DELETE":
            scim.delete_group(firm, group_id)
            return _answer(None, 204)
        return _answer(scim.get_group(firm, group_id))

    return _serve(req, handle)
