"""Document triggers: files dropped in ``documents/<client id>/``, and the advisor's review
list and review of a document's class and fields."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from functions._http import from_error, json_response, route_uuid
from shared.config import DOCUMENTS_CONTAINER
from shared.errors import AdvisorError, ValidationError
from shared.services import documents

log = logging.getLogger(__name__)

documents_bp = func.Blueprint()  # type: ignore[no-untyped-call]


@documents_bp.blob_trigger(
    arg_name="blob",
    path=f"{DOCUMENTS_CONTAINER}/{{client_id}}/{{name}}",
    connection="AzureWebJobsStorage",
)
def document_dropped(blob: func.InputStream) -> None:
    """Hash, check, classify and store a client document, or quarantine it."""
    name = (blob.name or "").removeprefix(f"{DOCUMENTS_CONTAINER}/")
    # The host hands over the bytes and their version: no second download.
    etag = (getattr(blob, "blob_properties", None) or {}).get("ETag")
    if etag:
        outcome = documents.intake_bytes(name, blob.read(), str(etag))
    else:
        outcome = documents.intake_blob(name)
    log.info(
        "document %s: %s",
        name,
        outcome.status,
        extra={"document_id": str(outcome.document_id or "")},
    )


@documents_bp.route(route="clients/{client_id}/documents/review", methods=["GET"])
def review_list(req: func.HttpRequest) -> func.HttpResponse:
    """The client's documents waiting for an advisor's review, oldest first."""
    try:
        client_id = route_uuid(req, "client_id")
        return json_response({"documents": documents.review_list(client_id)})
    except AdvisorError as exc:
        return from_error(exc)


@documents_bp.route(route="clients/{client_id}/documents/{document_id}", methods=["GET"])
def get_document(req: func.HttpRequest) -> func.HttpResponse:
    """One document with its class and fields; tax ids and account numbers masked."""
    try:
        client_id = route_uuid(req, "client_id")
        document_id = route_uuid(req, "document_id")
        return json_response(documents.get_document(client_id, document_id))
    except AdvisorError as exc:
        return from_error(exc)


@documents_bp.route(route="clients/{client_id}/documents/{document_id}/review", methods=["POST"])
def review_document(req: func.HttpRequest) -> func.HttpResponse:
    """Confirm or correct a document's class and fields (audited with before and after)."""
    try:
        client_id = route_uuid(req, "client_id")
        document_id = route_uuid(req, "document_id")
        try:
            body = json.loads(req.get_body() or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ValidationError("the body is not valid JSON") from None
        actor = req.headers.get("x-advisor-id") or "advisor"
        return json_response(documents.review(client_id, document_id, body, actor=actor))
    except AdvisorError as exc:
        return from_error(exc)
