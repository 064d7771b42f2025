"""The portal API's request, query and response shapes; the OpenAPI document is generated
from them, so what is declared here is what is checked and what is published."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from shared.domain.documents import DocClass

Amount = Field(description="decimal string in the currency's own scale, debits positive")
MinorUnits = Field(description="the same amount in integer minor units")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# -- Queries -------------------------------------------------------------------------------


class PageQuery(_Strict):
    limit: int = Field(default=100, ge=1, description="rows per page (at most the page limit)")
    after: str | None = Field(default=None, max_length=200, description="cursor of the last page")


class LedgerPageQuery(PageQuery):
    date_from: dt.date | None = Field(default=None, alias="from")
    date_to: dt.date | None = Field(default=None, alias="to")
    format: Literal["json", "csv"] = "json"


class AsOfQuery(_Strict):
    as_of: dt.date | None = Field(default=None, description="inclusive; default today")
    format: Literal["json", "csv"] = "json"


class PeriodQuery(_Strict):
    date_from: dt.date = Field(alias="from")
    date_to: dt.date = Field(alias="to")
    format: Literal["json", "csv"] = "json"


class FormatQuery(_Strict):
    format: Literal["json", "csv"] = "json"


class PagedFormatQuery(PageQuery):
    format: Literal["json", "csv"] = "json"


class NoQuery(_Strict):
    pass


# -- Bodies --------------------------------------------------------------------------------


class ClientCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    base_currency: str = Field(default="USD", pattern="^[A-Z]{3}$")


class ClientUpdate(_Strict):
    name: str = Field(min_length=1, max_length=200)


class CategoryChange(_Strict):
    account_code: str = Field(min_length=1, max_length=50, description="the new category")


class MoneyValue(_Strict):
    amount: str = Field(max_length=40, description='a decimal string such as "1234.50"')
    currency: str = Field(default="USD", pattern="^[A-Z]{3}$")


class DocumentReview(_Strict):
    """Confirm a document as it is (an empty body) or correct its class and fields."""

    doc_class: DocClass | None = None
    fields: dict[str, str | MoneyValue | None] = Field(
        default_factory=dict,
        max_length=50,
        description="field name to its corrected value; null removes the field",
    )


class UploadRequest(_Strict):
    file_name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._()-]*$",
        description="the file's own name; the blob gets a new name that ends with it",
    )
    content_type: Literal["application/pdf", "image/jpeg", "image/png", "image/tiff"]


EngagementTypeKey = Literal[
    "individual_tax_return", "monthly_bookkeeping_close", "advisory_project"
]


class EngagementStart(_Strict):
    """Open an engagement of the client and start its workflow; the type and period identify
    it, so the same pair again answers the engagement already started."""

    engagement_type: EngagementTypeKey
    period: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._/-]*$",
        description="the period it covers, such as 2026 or 2026-11",
    )


class ReviewDecision(_Strict):
    """An advisor's decision on the review step the engagement waits for."""

    step: str = Field(
        min_length=1,
        max_length=64,
        description="the review step decided, as the engagement's workflow names it",
    )
    decision: Literal["approve", "reject"]
    comment: str = Field(
        default="",
        max_length=2000,
        validate_default=True,
        description="what to fix; required to reject",
    )
    documents: list[DocClass] = Field(
        default_factory=list,
        max_length=20,
        description="on a rejection, the document classes to ask the client for again",
    )

    @field_validator("comment")
    @classmethod
    def _rejection_says_why(cls, comment: str, info: ValidationInfo) -> str:
        if info.data.get("decision") == "reject" and not comment:
            raise PydanticCustomError(
                "comment_required", "a rejection needs a comment saying what to fix"
            )
        return comment


# -- Responses -----------------------------------------------------------------------------


class Client(BaseModel):
    id: uuid.UUID
    name: str
    base_currency: str
    created_at: dt.datetime
    archived_at: dt.datetime | None


class ClientList(BaseModel):
    clients: list[Client]
    next: str | None = None


class Account(BaseModel):
    id: int
    code: str
    name: str
    type: str


class AccountList(BaseModel):
    accounts: list[Account]


class LedgerLine(BaseModel):
    line_id: int
    entry_id: int
    booked_on: dt.date
    reference: str | None
    memo: str
    source: str
    account_code: str
    account_name: str
    currency: str
    amount: str = Amount
    amount_minor: int = MinorUnits


class LedgerPage(BaseModel):
    lines: list[LedgerLine]
    next: str | None = Field(description="cursor of the next page; null on the last")


class BalanceLine(BaseModel):
    code: str
    name: str
    type: str
    currency: str
    balance: str = Amount
    balance_minor: int = MinorUnits


class TrialBalance(BaseModel):
    as_of: dt.date
    lines: list[BalanceLine]


class Statement(BaseModel):
    """Profit and loss for a period, or the balance sheet at a date."""

    date_from: dt.date | None
    date_to: dt.date
    lines: list[BalanceLine]
    totals: dict[str, dict[str, str]] = Field(
        description="per section (income, expense, net, assets, ...), per currency"
    )


class BankTransaction(BaseModel):
    id: int
    booked_on: dt.date
    description: str
    currency: str
    amount: str = Amount
    amount_minor: int = MinorUnits
    bank_account_code: str
    category_code: str | None
    category_name: str | None
    import_id: int


class BankTransactionPage(BaseModel):
    transactions: list[BankTransaction]
    next: str | None


class Recategorised(BaseModel):
    transaction: BankTransaction
    reclassification_entry_id: int | None = Field(
        description="the entry posted; null when the category was already this account"
    )


class ImportSummary(BaseModel):
    id: int
    blob_name: str
    format: str | None
    status: str
    reason: str | None
    rows_read: int
    imported: int
    duplicates: int
    error_count: int
    started_at: dt.datetime
    finished_at: dt.datetime


class ImportList(BaseModel):
    imports: list[ImportSummary]


class ImportReport(BaseModel):
    import_: ImportSummary = Field(alias="import")
    report: dict[str, Any]

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class Invoice(BaseModel):
    id: str
    number: str | None
    status: str
    currency: str
    total: str
    total_minor: int
    amount_due_minor: int
    amount_paid_minor: int
    updated_at: dt.datetime


class InvoiceList(BaseModel):
    invoices: list[Invoice]


class Payment(BaseModel):
    id: str
    status: str
    invoice: str | None
    currency: str
    amount: str
    amount_minor: int
    amount_refunded_minor: int
    updated_at: dt.datetime


class PaymentList(BaseModel):
    payments: list[Payment]


class AuditEntry(BaseModel):
    id: int
    seq: int
    occurred_at: dt.datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next: str | None


class ChainBreak(BaseModel):
    id: int
    seq: int
    problem: str


class AuditVerification(BaseModel):
    intact: bool
    rows_checked: int
    breaks: list[ChainBreak]


class MonthAmount(BaseModel):
    month: str = Field(description="YYYY-MM")
    currency: str
    amount: str
    amount_minor: int


class AgeingBucket(BaseModel):
    bucket: Literal["current", "1-30", "31-60", "61-90", "90+"]
    currency: str
    amount: str
    amount_minor: int
    invoices: int


class ExpenseLine(BaseModel):
    code: str
    name: str
    currency: str
    amount: str
    amount_minor: int


class Runway(BaseModel):
    currency: str
    cash: str
    cash_minor: int
    monthly_burn_minor: int = Field(description="average net cash outflow of the last 3 months")
    months: str | None = Field(description="cash / burn, one decimal; null when not burning")


class Insights(BaseModel):
    revenue_by_month: list[MonthAmount]
    receivables_ageing: list[AgeingBucket]
    expense_breakdown: list[ExpenseLine]
    cash_runway: list[Runway]


class DocumentField(BaseModel):
    name: str
    kind: Literal["text", "date", "money", "sensitive"]
    value: str | None = Field(description="tax ids and account numbers as ****1234, always")
    amount_minor: int | None = None
    currency: str | None = None
    confidence: float
    page: int | None
    source: Literal["classifier", "review"]


class DocumentSummary(BaseModel):
    id: uuid.UUID
    file_name: str
    media_type: str
    size_bytes: int
    page_count: int
    doc_class: str
    confidence: float
    status: Literal["classified", "needs_review", "reviewed"]
    created_at: dt.datetime


class DocumentPage(BaseModel):
    documents: list[DocumentSummary]
    next: str | None = Field(description="cursor of the next page; null on the last")


class Document(DocumentSummary):
    classifier: str
    classifier_version: str
    reviewed_by: str | None
    reviewed_at: dt.datetime | None
    fields: list[DocumentField]


class DocumentList(BaseModel):
    documents: list[Document]


class UploadLink(BaseModel):
    url: str = Field(description="PUT the file here with x-ms-blob-type: BlockBlob")
    blob_name: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str] = Field(description="headers the upload must send")
    content_types: list[str] = Field(description="the types intake accepts")
    max_bytes: int = Field(description="larger files are quarantined by intake, not imported")
    expires_at: dt.datetime


class DownloadLink(BaseModel):
    url: str = Field(description="GET the file here; read only")
    expires_at: dt.datetime


class EngagementSummary(BaseModel):
    id: uuid.UUID
    engagement_type: str
    period: str
    status: Literal["open", "delivered", "closed", "cancelled"]
    fee_minor: int
    currency: str
    created_at: dt.datetime
    closed_at: dt.datetime | None


class EngagementList(BaseModel):
    engagements: list[EngagementSummary]


class ReceivedDocument(BaseModel):
    document_id: str
    doc_class: str
    received_at: dt.datetime


class WorkflowStatus(BaseModel):
    """What the engagement's rows record of its workflow."""

    required_documents: list[str]
    missing_documents: list[str] = Field(description="required classes not yet received")
    received_documents: list[ReceivedDocument]
    invoiced: bool
    deliverable: str | None


class Engagement(EngagementSummary):
    workflow: WorkflowStatus


class EngagementStarted(EngagementSummary):
    instance_id: str = Field(description="the workflow's instance, derived from the engagement")
    created: bool = Field(description="false when this engagement had been started before")


class ReviewAccepted(BaseModel):
    engagement_id: uuid.UUID
    step: str
    decision: Literal["approve", "reject"]


class Problem(BaseModel):
    """An RFC 9457 problem."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None
