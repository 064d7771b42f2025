"""Ledger triggers: files dropped in ``ledger-imports/``, the HTTP views of imports, and a
client's trial balance."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from functions._http import from_error, json_response, problem, route_int, route_uuid
from shared.config import LEDGER_IMPORTS_CONTAINER, get_settings
from shared.domain.money import Money
from shared.errors import AdvisorError, ValidationError
from shared.services import clients, ledger, ledger_import

log = logging.getLogger(__name__)

imports_bp = func.Blueprint()  # type: ignore[no-untyped-call]


@imports_bp.blob_trigger(
    arg_name="blob", path=f"{LEDGER_IMPORTS_CONTAINER}/{{name}}", connection="AzureWebJobsStorage"
)
def ledger_file_dropped(blob: func.InputStream) -> None:
    """Import a dropped file whole, or move it to quarantine with a report."""
    name = (blob.name or "").removeprefix(f"{LEDGER_IMPORTS_CONTAINER}/")
    outcome = ledger_import.import_blob(name)
    log.info("ledger file %s: %s", name, outcome.status, extra={"import_id": outcome.import_id})


@imports_bp.route(route="clients/{client_id}/imports", methods=["GET"])
def list_imports(req: func.HttpRequest) -> func.HttpResponse:
    """List a client's imports, newest first."""
    try:
        client_id = route_uuid(req, "client_id")
        return json_response({"imports": ledger_import.list_imports(client_id)})
    except AdvisorError as exc:
        return from_error(exc)


@imports_bp.route(route="clients/{client_id}/imports/{import_id}", methods=["GET"])
def get_import_report(req: func.HttpRequest) -> func.HttpResponse:
    """Return one import's report."""
    try:
        client_id = route_uuid(req, "client_id")
        return json_response(ledger_import.get_report(client_id, route_int(req, "import_id")))
    except AdvisorError as exc:
        return from_error(exc)


@imports_bp.route(route="clients/{client_id}/imports/dry-run", methods=["POST"])
def dry_run_import(req: func.HttpRequest) -> func.HttpResponse:
    """Return the report the request body would produce as an import, writing nothing."""
    body = req.get_body()
    limit = get_settings().ledger_dry_run_max_bytes
    if len(body) > limit:
        return problem(413, "Payload too large", f"the file is over {limit} bytes")
    file_name = req.params.get("name") or "upload"
    try:
        client_id = route_uuid(req, "client_id")
        return json_response(ledger_import.preview(str(client_id), body, file_name))
    except AdvisorError as exc:
        return from_error(exc)


@imports_bp.route(route="clients/{client_id}/mapping-profile", methods=["GET", "PUT"])
def mapping_profile(req: func.HttpRequest) -> func.HttpResponse:
    """Read or replace the client's mapping profile for bank files."""
    try:
        client_id = route_uuid(req, "client_id")
        if req.method == "GET":
            return json_response(clients.get_mapping_profile(client_id))
        try:
            data = json.loads(req.get_body() or b"null")
        except (ValueError, UnicodeDecodeError):
            raise ValidationError("the body is not valid JSON") from None
        return json_response(clients.set_mapping_profile(client_id, data, actor="api"))
    except AdvisorError as exc:
        return from_error(exc)


@imports_bp.route(route="clients/{client_id}/trial-balance", methods=["GET"])
def trial_balance(req: func.HttpRequest) -> func.HttpResponse:
    """Return every account's balance per currency: debits positive, credits negative, as
    decimal strings in the currency's own scale (``"-12.50"``), beside the minor units."""
    try:
        lines = ledger.trial_balance(route_uuid(req, "client_id"))
    except AdvisorError as exc:
        return from_error(exc)
    return json_response(
        {
            "lines": [
                {
                    "code": line.code,
                    "name": line.name,
                    "type": line.type,
                    "currency": line.currency,
                    "balance": str(Money(line.balance_minor, line.currency).to_decimal()),
                    "balance_minor": line.balance_minor,
                }
                for line in lines
            ]
        }
    )
