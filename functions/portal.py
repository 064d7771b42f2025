"""The portal JSON API under ``/api/v1/``: every operation is declared once with its query,
body and response models, and the same declaration drives the HTTP functions, the checks
(identity, rate limit, sizes, client scope) and the OpenAPI document."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import html
import io
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import azure.durable_functions as df
import azure.functions as func
import psycopg
import pydantic
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from functions._durable import is_active, start_engagement_once
from functions._http import json_response, problem
from shared.adapters import postgres
from shared.config import get_settings
from shared.domain import portal as m
from shared.errors import (
    AdvisorError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthenticated,
    UpstreamError,
    ValidationError,
)
from shared.services import engagements, identity
from shared.services import portal as views
from shared.services import portal_documents as records

log = logging.getLogger(__name__)
T = TypeVar("T")

portal_bp = df.Blueprint()

API_PREFIX = "v1"
API_TITLE = "AdvisorOS portal API"
API_VERSION = "1.0.0"
# Leading characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets: the caller, its transaction, and the checked inputs."""

    principal: identity.Principal
    conn: psycopg.Connection
    client_id: uuid.UUID | None
    query: Any
    body: Any
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class WorkflowCall:
    """What a workflow handler gets: the caller, the checked inputs and the Durable client.

    It opens its transactions itself (`transaction`), so a workflow is started only after
    the rows it reads have committed.
    """

    principal: identity.Principal
    client_id: uuid.UUID
    body: Any
    params: dict[str, str]
    durable: df.DurableOrchestrationClient
    staff_only: bool
    summary: str

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A transaction acting for the caller, scoped to the route's client, with the same
        checks as every other operation's (another client's id is NotFound, then the role)."""
        with _acting(self.principal, self.params["client_id"]) as conn:
            _check_role(self.principal, self.staff_only, self.summary)
            yield conn

    async def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work`` in one `transaction`, on a worker thread: the event loop that serves the
        other asynchronous functions goes on while the database answers."""

        def inside() -> T:
            with self.transaction() as conn:
                return work(conn)

        return await asyncio.to_thread(inside)


Handler = Callable[[Call], BaseModel]
WorkflowHandler = Callable[[WorkflowCall], Awaitable[BaseModel]]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    route: str
    name: str
    summary: str
    handler: Handler | WorkflowHandler
    response: type[BaseModel]
    query: type[BaseModel]
    body: type[BaseModel] | None
    staff_only: bool
    status: int
    csv: Callable[[Any], tuple[list[str], Iterable[list[Any]]]] | None
    # A workflow operation runs on the event loop with the Durable client (WorkflowCall).
    workflow: bool


OPERATIONS: list[Operation] = []


def operation(
    method: str,
    route: str,
    *,
    response: type[BaseModel],
    query: type[BaseModel] = m.NoQuery,
    body: type[BaseModel] | None = None,
    staff_only: bool = False,
    status: int = 200,
    csv_rows: Callable[[Any], tuple[list[str], Iterable[list[Any]]]] | None = None,
    workflow: bool = False,
) -> Callable[[Any], Any]:
    """Declare one operation of the API; see the module docstring. A ``workflow`` handler
    is a coroutine taking a `WorkflowCall`; every other one takes a `Call`."""

    def decorate(handler: Any) -> Any:
        OPERATIONS.append(
            Operation(
                method=method,
                route=f"{API_PREFIX}/{route}",
                name=handler.__name__,
                summary=(handler.__doc__ or handler.__name__).strip().splitlines()[0],
                handler=handler,
                response=response,
                query=query,
                body=body,
                staff_only=staff_only,
                status=status,
                csv=csv_rows,
                workflow=workflow,
            )
        )
        return handler

    return decorate


def _client(call: Call) -> uuid.UUID:
    assert call.client_id is not None
    return call.client_id


def _actor(call: Call | WorkflowCall) -> str:
    return f"user:{call.principal.user_id}"


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


# -- Clients -------------------------------------------------------------------------------


@operation("GET", "clients", response=m.ClientList, query=m.PageQuery)
def list_clients(call: Call) -> BaseModel:
    """The clients the caller may see, by name."""
    return views.list_clients(call.conn, call.query.limit, call.query.after)


@operation("POST", "clients", response=m.Client, body=m.ClientCreate, staff_only=True, status=201)
def create_client(call: Call) -> BaseModel:
    """Create a client with the starter chart of accounts (firm staff)."""
    return views.create_client(call.conn, call.principal.firm_id, call.body, _actor(call))


@operation("GET", "clients/{client_id}", response=m.Client)
def get_client(call: Call) -> BaseModel:
    """One client."""
    return views.get_client(call.conn, _client(call))


@operation("PATCH", "clients/{client_id}", response=m.Client, body=m.ClientUpdate, staff_only=True)
def update_client(call: Call) -> BaseModel:
    """Rename a client (firm staff)."""
    return views.rename_client(call.conn, _client(call), call.body, _actor(call))


@operation("POST", "clients/{client_id}/archive", response=m.Client, staff_only=True)
def archive_client(call: Call) -> BaseModel:
    """Archive a client (firm staff); its books stay readable."""
    return views.archive_client(call.conn, _client(call), _actor(call))


# -- Ledger --------------------------------------------------------------------------------


def _ledger_csv(page: m.LedgerPage) -> tuple[list[str], Iterable[list[Any]]]:
    header = [
        "booked_on",
        "entry_id",
        "reference",
        "memo",
        "account_code",
        "account_name",
        "currency",
        "amount",
    ]
    rows = (
        [
            ln.booked_on,
            ln.entry_id,
            ln.reference,
            ln.memo,
            ln.account_code,
            ln.account_name,
            ln.currency,
            ln.amount,
        ]
        for ln in page.lines
    )
    return header, rows


def _balances_csv(report: m.TrialBalance | m.Statement) -> tuple[list[str], Iterable[list[Any]]]:
    rows = ([ln.code, ln.name, ln.type, ln.currency, ln.balance] for ln in report.lines)
    return ["code", "name", "type", "currency", "balance"], rows


def _bank_csv(page: m.BankTransactionPage) -> tuple[list[str], Iterable[list[Any]]]:
    rows = (
        [
            t.id,
            t.booked_on,
            t.description,
            t.currency,
            t.amount,
            t.bank_account_code,
            t.category_code,
        ]
        for t in page.transactions
    )
    return [
        "id",
        "booked_on",
        "description",
        "currency",
        "amount",
        "bank_account",
        "category",
    ], rows


@operation("GET", "clients/{client_id}/accounts", response=m.AccountList)
def chart_of_accounts(call: Call) -> BaseModel:
    """The client's chart of accounts."""
    return views.chart_of_accounts(call.conn, _client(call))


@operation(
    "GET",
    "clients/{client_id}/general-ledger",
    response=m.LedgerPage,
    query=m.LedgerPageQuery,
    csv_rows=_ledger_csv,
)
def general_ledger(call: Call) -> BaseModel:
    """Journal lines by date, a keyset page at a time (``after`` is the last page's ``next``)."""
    return views.general_ledger(call.conn, _client(call), call.query)


@operation(
    "GET",
    "clients/{client_id}/trial-balance",
    response=m.TrialBalance,
    query=m.AsOfQuery,
    csv_rows=_balances_csv,
)
def trial_balance(call: Call) -> BaseModel:
    """Every account's balance per currency at a date."""
    return views.trial_balance(call.conn, _client(call), call.query.as_of or _today())


@operation(
    "GET",
    "clients/{client_id}/profit-and-loss",
    response=m.Statement,
    query=m.PeriodQuery,
    csv_rows=_balances_csv,
)
def profit_and_loss(call: Call) -> BaseModel:
    """Income and expense for a period (``from`` and ``to``, inclusive)."""
    return views.profit_and_loss(
        call.conn, _client(call), call.query.date_from, call.query.date_to
    )


@operation(
    "GET",
    "clients/{client_id}/balance-sheet",
    response=m.Statement,
    query=m.AsOfQuery,
    csv_rows=_balances_csv,
)
def balance_sheet(call: Call) -> BaseModel:
    """Assets, liabilities and equity at a date."""
    return views.balance_sheet(call.conn, _client(call), call.query.as_of or _today())


@operation(
    "GET",
    "clients/{client_id}/bank-transactions",
    response=m.BankTransactionPage,
    query=m.PagedFormatQuery,
    csv_rows=_bank_csv,
)
def bank_transactions(call: Call) -> BaseModel:
    """Bank transactions with their category, by date."""
    return views.bank_transactions(call.conn, _client(call), call.query.limit, call.query.after)


@operation(
    "PUT",
    "clients/{client_id}/bank-transactions/{transaction_id}/category",
    response=m.Recategorised,
    body=m.CategoryChange,
    staff_only=True,
)
def recategorise(call: Call) -> BaseModel:
    """Change a bank transaction's category: posts a reclassification entry, audited."""
    txn = _route_int(call.params, "transaction_id", "bank transaction")
    return views.recategorise(call.conn, _client(call), txn, call.body, _actor(call))


@operation("GET", "clients/{client_id}/ledger-imports", response=m.ImportList)
def imports(call: Call) -> BaseModel:
    """The client's imported files, newest first."""
    return views.imports(call.conn, _client(call))


@operation("GET", "clients/{client_id}/ledger-imports/{import_id}", response=m.ImportReport)
def import_report(call: Call) -> BaseModel:
    """One import and its report."""
    import_id = _route_int(call.params, "import_id", "import")
    return views.import_report(call.conn, _client(call), import_id)


# -- Billing, audit, insights --------------------------------------------------------------


@operation("GET", "clients/{client_id}/invoices", response=m.InvoiceList)
def invoices(call: Call) -> BaseModel:
    """Invoices the firm billed the client through Stripe."""
    return views.invoices(call.conn, _client(call))


@operation("GET", "clients/{client_id}/payments", response=m.PaymentList)
def payments(call: Call) -> BaseModel:
    """Payments (Stripe charges) of the client."""
    return views.payments(call.conn, _client(call))


@operation("GET", "clients/{client_id}/audit-log", response=m.AuditPage, query=m.PageQuery)
def audit_log(call: Call) -> BaseModel:
    """The client's audit log, newest first."""
    return views.audit_log(call.conn, _client(call), call.query.limit, call.query.after)


@operation("GET", "clients/{client_id}/audit-log/verification", response=m.AuditVerification)
def verify_audit_log(call: Call) -> BaseModel:
    """Check the client's audit hash chain; any edited or removed row is listed."""
    return views.verify_audit(call.conn, _client(call))


@operation("GET", "clients/{client_id}/insights", response=m.Insights)
def insights(call: Call) -> BaseModel:
    """Revenue by month, receivables ageing, expense breakdown and cash runway."""
    return views.insights(call.conn, _client(call), _today())


# -- Documents and engagements ------------------------------------------------------------


@operation("GET", "clients/{client_id}/documents", response=m.DocumentPage, query=m.PageQuery)
def list_documents(call: Call) -> BaseModel:
    """The client's documents, newest first, a keyset page at a time."""
    return records.list_documents(call.conn, _client(call), call.query.limit, call.query.after)


@operation("GET", "clients/{client_id}/documents/{document_id}", response=m.Document)
def get_document(call: Call) -> BaseModel:
    """One document with its class and fields; tax ids and account numbers masked."""
    return records.get_document(call.conn, _client(call), call.params["document_id"])


@operation("GET", "clients/{client_id}/document-reviews", response=m.DocumentList, staff_only=True)
def review_queue(call: Call) -> BaseModel:
    """See the client's documents waiting for review, oldest first."""
    return records.review_queue(call.conn, _client(call))


@operation(
    "POST",
    "clients/{client_id}/documents/{document_id}/review",
    response=m.Document,
    body=m.DocumentReview,
    staff_only=True,
)
def review_document(call: Call) -> BaseModel:
    """Confirm or correct a document's class and fields.

    Audited with the class and fields before and after; firm staff only.
    """
    return records.review(
        call.conn, _client(call), call.params["document_id"], call.body, _actor(call)
    )


@operation(
    "POST",
    "clients/{client_id}/document-uploads",
    response=m.UploadLink,
    body=m.UploadRequest,
    status=201,
)
def upload_link(call: Call) -> BaseModel:
    """A short-lived link to upload one new document to the client's folder."""
    return records.upload_link(call.conn, _client(call), call.body, _actor(call))


@operation(
    "GET", "clients/{client_id}/documents/{document_id}/download-link", response=m.DownloadLink
)
def download_link(call: Call) -> BaseModel:
    """A short-lived, read-only link to a document's file; audited."""
    return records.download_link(
        call.conn, _client(call), call.params["document_id"], _actor(call)
    )


@operation("GET", "clients/{client_id}/engagements", response=m.EngagementList)
def list_engagements(call: Call) -> BaseModel:
    """The client's engagements, newest first."""
    return records.list_engagements(call.conn, _client(call))


@operation("GET", "clients/{client_id}/engagements/{engagement_id}", response=m.Engagement)
def get_engagement(call: Call) -> BaseModel:
    """One engagement with its workflow: documents required, received and missing."""
    return records.get_engagement(call.conn, _client(call), call.params["engagement_id"])


@operation(
    "POST",
    "clients/{client_id}/engagements",
    response=m.EngagementStarted,
    body=m.EngagementStart,
    staff_only=True,
    status=202,
    workflow=True,
)
async def start_engagement(call: WorkflowCall) -> BaseModel:
    """Open an engagement and start its workflow (firm staff).

    The type and period identify the engagement and its workflow instance: the same pair
    again answers the engagement already started, with ``created`` false.
    """
    engagement = await call.run(
        lambda conn: engagements.open_engagement_in(
            conn, call.client_id, call.body.engagement_type, call.body.period, _actor(call)
        )
    )
    # After the commit: the workflow's first step reads the row.
    created = await start_engagement_once(call.durable, engagement)
    summary = await call.run(
        lambda conn: records.engagement_summary(conn, call.client_id, engagement.id)
    )
    return m.EngagementStarted(
        **summary.model_dump(),
        instance_id=engagement.instance_id,
        created=created,
    )


@operation(
    "POST",
    "clients/{client_id}/engagements/{engagement_id}/review",
    response=m.ReviewAccepted,
    body=m.ReviewDecision,
    staff_only=True,
    status=202,
    workflow=True,
)
async def review_engagement(call: WorkflowCall) -> BaseModel:
    """Approve or reject the review step the engagement waits for (firm staff).

    A rejection says why in ``comment``. The decision is audited in the transaction that
    sends it to the workflow, once per review; a step other than the one waited for, or
    one decided already, is a conflict.
    """
    decision: m.ReviewDecision = call.body
    engagement = await call.run(
        lambda conn: records.engagement_of(conn, call.client_id, call.params["engagement_id"])
    )
    status = await call.durable.get_status(engagement.instance_id)
    waiting = engagements.waiting_review(status.custom_status) if is_active(status) else None
    if waiting is None:
        raise Conflict(f"engagement {engagement.id} is not waiting for a review")
    step, event = waiting
    if step != decision.step:
        raise Conflict(
            f"engagement {engagement.id} is waiting for review step {step!r},"
            f" not {decision.step!r}"
        )
    payload = decision.model_dump(exclude={"step"})
    loop = asyncio.get_running_loop()

    def decide(conn: psycopg.Connection) -> None:
        if not engagements.record_review(conn, engagement, step, event, payload, _actor(call)):
            raise Conflict(f"review step {step!r} of engagement {engagement.id} is decided")
        # Sent before the commit: a refused send leaves no audit row of a decision that
        # was never made. The event name is the step's own, so a repeat is never taken
        # for a later step's decision. The send runs on the loop; this thread waits.
        sent = call.durable.raise_event(engagement.instance_id, event, payload)
        asyncio.run_coroutine_threadsafe(sent, loop).result()

    await call.run(decide)
    return m.ReviewAccepted(engagement_id=engagement.id, step=step, decision=decision.decision)


# -- Dispatch ------------------------------------------------------------------------------


def _route_int(params: dict[str, str], name: str, what: str) -> int:
    raw = params.get(name, "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise NotFound(f"{what} {raw!r} not found")
    return int(raw)


def _route_client(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"client {raw!r} not found") from None


@contextmanager
def _acting(principal: identity.Principal, raw: str | None) -> Iterator[psycopg.Connection]:
    """The caller's transaction, narrowed to the route's client when the route names one.

    Another client's id and an id that does not exist answer the same NotFound: a client
    user may name only its own client, and staff only their firm's clients.
    """
    missing = NotFound(f"client {raw!r} not found")
    client_id = None if raw is None else _route_client(raw)
    if client_id is not None and principal.client_id not in (None, client_id):
        raise missing
    try:
        with postgres.scoped_transaction(
            firm_id=principal.firm_id,
            client_id=principal.client_id,
            user_id=principal.user_id,
            enter_client=client_id,
        ) as conn:
            yield conn
    except postgres.ClientNotVisible:
        raise missing from None


def _parse(model: type[BaseModel], data: object, where: str) -> Any:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _InvalidInput(where, exc) from None


class _InvalidInput(Exception):
    def __init__(self, where: str, exc: pydantic.ValidationError) -> None:
        self.errors = [
            {
                "field": ".".join(str(p) for p in err["loc"]) or where,
                "location": where,
                "message": err["msg"],
            }
            for err in exc.errors()
        ]
        first = self.errors[0]
        label = "query parameter" if where == "query" else "field"
        super().__init__(f"{label} {first['field']!r}: {first['message']}")


def _read_body(req: func.HttpRequest, op: Operation) -> Any:
    if op.body is None:
        return None
    try:
        data = json.loads(req.get_body() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object")
    _refuse_nul(data, "field")
    return _parse(op.body, data, "body")


def _refuse_nul(value: Any, label: str, where: str = "") -> None:
    # Postgres text cannot hold NUL; say which input carries one instead of failing later.
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError(f"{label} {where!r}: contains a NUL character")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(key, label, where)
            _refuse_nul(item, label, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, label, f"{where}.{index}")


def _read_query(req: func.HttpRequest, op: Operation) -> Any:
    params = dict(req.params)
    _refuse_nul(params, "query parameter")
    query = _parse(op.query, params, "query")
    limit = getattr(query, "limit", None)
    cap = get_settings().portal_max_page_size
    if limit is not None and limit > cap:
        raise ValidationError(f"query parameter 'limit': at most {cap} rows a page")
    return query


# Limitation: a GL page costs a worker about 3 ms of CPU (statement round trips, validation,
# JSON, the host), so one process serves about 350 a second; at 50 users asking without
# pause, p99 is over 300 ms on two cores, above the 100 ms target.
def dispatch(req: func.HttpRequest, route: str) -> func.HttpResponse:
    """Serve one request to a portal route: size, identity, rate, inputs, scope, handler.

    A workflow operation needs the Durable client: `dispatch_workflow` serves those.
    """
    try:
        admitted = _admit(req, route)
        if isinstance(admitted, func.HttpResponse):
            return admitted
        if admitted.op.workflow:
            raise AssertionError(f"{admitted.op.name} is served by dispatch_workflow")
        return _serve(admitted)
    except _InvalidInput as exc:
        return problem(400, "Invalid request", str(exc), errors=exc.errors)
    except AdvisorError as exc:
        return _error(exc)


async def dispatch_workflow(
    req: func.HttpRequest, route: str, durable: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """`dispatch` for the routes of workflow operations, with the Durable client."""
    try:
        # The checks and plain operations query the database: on a worker thread, so the
        # event loop keeps serving the other asynchronous functions meanwhile.
        admitted = await asyncio.to_thread(_admit, req, route)
        if isinstance(admitted, func.HttpResponse):
            return admitted
        if not admitted.op.workflow:
            return await asyncio.to_thread(_serve, admitted)
        return await _serve_workflow(admitted, durable)
    except _InvalidInput as exc:
        return problem(400, "Invalid request", str(exc), errors=exc.errors)
    except AdvisorError as exc:
        return _error(exc)


@dataclass(frozen=True, slots=True)
class _Admitted:
    op: Operation
    principal: identity.Principal
    query: Any
    body: Any
    params: dict[str, str]


def _admit(req: func.HttpRequest, route: str) -> _Admitted | func.HttpResponse:
    """The checks before any handler: size, identity, rate, method, query and body."""
    limit = get_settings().portal_max_body_bytes
    if len(req.get_body()) > limit:
        return problem(413, "Payload too large", f"the body is over {limit} bytes")
    principal = identity.authenticate(
        {k.lower(): v for k, v in req.headers.items()},
        rate_per_min=get_settings().portal_rate_limit_per_min,
    )
    op = next((o for o in OPERATIONS if o.route == route and o.method == req.method.upper()), None)
    if op is None:
        response = problem(
            405, "Method not allowed", f"{req.method} is not served on /api/{route}"
        )
        response.headers["Allow"] = ", ".join(o.method for o in OPERATIONS if o.route == route)
        return response
    query = _read_query(req, op)
    media = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if op.body is not None and media != "application/json":
        detail = f"the body must be sent as application/json, not {media or 'no content type'}"
        return problem(415, "Unsupported media type", detail)
    body = _read_body(req, op)
    return _Admitted(op, principal, query, body, dict(req.route_params))


def _check_role(principal: identity.Principal, staff_only: bool, summary: str) -> None:
    if staff_only and not principal.is_staff:
        raise Forbidden(f"only firm staff may {summary[0].lower()}{summary[1:]}")


def _serve(admitted: _Admitted) -> func.HttpResponse:
    op, principal, query, params = admitted.op, admitted.principal, admitted.query, admitted.params
    raw = params.get("client_id")
    with _acting(principal, raw) as conn:
        client_id = None if raw is None else _route_client(raw)
        _check_role(principal, op.staff_only, op.summary)
        handler: Handler = op.handler  # type: ignore[assignment]
        result = handler(Call(principal, conn, client_id, query, admitted.body, params))
    if op.csv is not None and getattr(query, "format", "json") == "csv":
        return _csv_response(op, result)
    return _json(result, op.status)


async def _serve_workflow(
    admitted: _Admitted, durable: df.DurableOrchestrationClient
) -> func.HttpResponse:
    op, params = admitted.op, admitted.params
    client_id = _route_client(params["client_id"])
    call = WorkflowCall(
        admitted.principal, client_id, admitted.body, params, durable, op.staff_only, op.summary
    )
    handler: WorkflowHandler = op.handler  # type: ignore[assignment]
    return _json(await handler(call), op.status)


def _json(result: BaseModel, status: int) -> func.HttpResponse:
    return func.HttpResponse(
        result.model_dump_json(by_alias=True), status_code=status, mimetype="application/json"
    )


def _error(exc: AdvisorError) -> func.HttpResponse:
    if isinstance(exc, Unauthenticated):
        response = problem(401, "Unauthorized", str(exc))
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    if isinstance(exc, Forbidden):
        return problem(403, "Forbidden", str(exc))
    if isinstance(exc, RateLimited):
        response = problem(429, "Too many requests", str(exc))
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    if isinstance(exc, NotFound):
        return problem(404, "Not found", str(exc))
    if isinstance(exc, ValidationError):
        return problem(400, "Invalid request", str(exc))
    if isinstance(exc, Conflict):
        return problem(409, "Conflict", str(exc))
    if isinstance(exc, UpstreamError):
        return problem(503, "Service unavailable", "a dependency is unavailable; try again")
    return problem(500, "Internal error", "the request failed")


def neutralise(cell: object) -> str:
    """A CSV cell that no spreadsheet runs as a formula: text that starts like one gets a
    leading apostrophe; plain numbers (the API's own amounts) stay as they are."""
    text = "" if cell is None else str(cell)
    if text.startswith(FORMULA_LEADS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def _csv_response(op: Operation, result: BaseModel) -> func.HttpResponse:
    assert op.csv is not None
    header, rows = op.csv(result)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([neutralise(cell) for cell in row])
    response = func.HttpResponse(out.getvalue(), status_code=200, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{op.name}.csv"'
    next_cursor = getattr(result, "next", None)
    if next_cursor:
        response.headers["X-Next-Cursor"] = next_cursor
    return response


def _function_name(route: str, workflow: bool) -> str:
    name = "portal_" + re.sub(r"[^a-z0-9]+", "_", route.lower()).strip("_")
    return f"{name}_workflow" if workflow else name


def _register(route: str, methods: list[str]) -> None:
    def serve(req: func.HttpRequest) -> func.HttpResponse:
        return dispatch(req, route)

    serve.__name__ = _function_name(route, workflow=False)
    portal_bp.route(route=route, methods=methods, auth_level=func.AuthLevel.ANONYMOUS)(serve)


def _register_workflow(route: str, methods: list[str]) -> None:
    # Its own function (same route, other methods) with the Durable client binding; the
    # plain operations stay on the thread pool.
    async def serve(
        req: func.HttpRequest, client: df.DurableOrchestrationClient
    ) -> func.HttpResponse:
        return await dispatch_workflow(req, route, client)

    serve.__name__ = _function_name(route, workflow=True)
    registered = portal_bp.durable_client_input(client_name="client")(serve)
    portal_bp.route(route=route, methods=methods, auth_level=func.AuthLevel.ANONYMOUS)(registered)


def _routes(workflow: bool) -> dict[str, list[str]]:
    routes: dict[str, list[str]] = {}
    for op in OPERATIONS:
        if op.workflow == workflow:
            routes.setdefault(op.route, []).append(op.method)
    return routes


for _route, _methods in _routes(workflow=False).items():
    _register(_route, _methods)
for _route, _methods in _routes(workflow=True).items():
    _register_workflow(_route, _methods)


# -- OpenAPI -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every operation, generated from the models."""
    models: set[type[BaseModel]] = {m.Problem}
    for op in OPERATIONS:
        models.add(op.response)
        if op.body is not None:
            models.add(op.body)
    ordered = sorted(models, key=lambda model: model.__name__)
    _, schemas = models_json_schema(
        [(model, "serialization") for model in ordered],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(f"/api/{op.route}", {})[op.method.lower()] = _path_item(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": API_TITLE,
            "version": API_VERSION,
            "description": "Bearer JWTs from the firm's identity provider. Errors are "
            "application/problem+json (RFC 9457).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{"bearer": []}],
    }


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _path_item(op: Operation) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
        for name in re.findall(r"{(\w+)}", op.route)
    ]
    query_schema = op.query.model_json_schema(by_alias=True)
    required = set(query_schema.get("required", []))
    for name, schema in query_schema.get("properties", {}).items():
        parameters.append(
            {"name": name, "in": "query", "required": name in required, "schema": schema}
        )
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{op.response.__name__}"}}
    }
    if op.csv is not None:
        content["text/csv"] = {"schema": {"type": "string"}}
    item: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "parameters": parameters,
        "responses": {
            str(op.status): {"description": "OK", "content": content},
            "400": _problem_response("invalid input; the problem names the field"),
            "401": _problem_response("no valid bearer token"),
            "403": _problem_response("the user may not do this"),
            "404": _problem_response("not found, or not visible to the caller"),
            "413": _problem_response("body too large"),
            "415": _problem_response("the body is not sent as application/json"),
            "429": _problem_response("rate limit reached; see Retry-After"),
        },
    }
    if op.method in ("PATCH", "PUT", "POST") and op.body is not None:
        item["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{op.body.__name__}"}
                }
            },
        }
        item["responses"]["409"] = _problem_response("conflicts with the current state")
    return item


def _path_schema(name: str) -> dict[str, Any]:
    if name in ("client_id", "document_id", "engagement_id"):
        return {"type": "string", "format": "uuid"}
    return {"type": "string", "pattern": "^[0-9]{1,18}$"}


@portal_bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi_json(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3.1 document of the portal API."""
    return json_response(openapi_document())


@portal_bp.route(route="docs", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def api_reference(req: func.HttpRequest) -> func.HttpResponse:
    """A plain HTML reference of the API, generated from the same document."""
    doc = openapi_document()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(API_TITLE)}</title></head><body>",
        f"<h1>{html.escape(API_TITLE)} {html.escape(API_VERSION)}</h1>",
        f"<p>{html.escape(doc['info']['description'])} The machine-readable document is "
        "<a href='/api/openapi.json'>/api/openapi.json</a>.</p>",
    ]
    for path, methods in doc["paths"].items():
        for method, item in methods.items():
            params = ", ".join(
                f"{p['name']} ({p['in']}{', required' if p['required'] else ''})"
                for p in item["parameters"]
            )
            parts.append(
                f"<h2 id='{html.escape(item['operationId'])}'>{method.upper()} "
                f"{html.escape(path)}</h2><p>{html.escape(item['summary'])}</p>"
                f"<p>Parameters: {html.escape(params or 'none')}</p>"
            )
    parts.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        parts.append(
            f"<h3 id='schema-{html.escape(name)}'>{html.escape(name)}</h3>"
            f"<pre>{html.escape(json.dumps(schema, indent=2))}</pre>"
        )
    parts.append("</body></html>")
    return func.HttpResponse("".join(parts), status_code=200, mimetype="text/html")
