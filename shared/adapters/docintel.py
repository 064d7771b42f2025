"""Azure AI Document Intelligence through azure-ai-documentintelligence: a custom classifier
(when DOCINTEL_CLASSIFIER_ID is set) picks the class, the matching prebuilt model reads the
key fields. Every call goes through the connector layer: the whole analysis (submit and
polling) has a deadline, 429 (after its Retry-After) and 5xx are retried with jittered
backoff, and a circuit breaker stops calling a service that keeps failing.

Returns our own ``Classification``; no SDK object leaves this module.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import pybreaker
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from shared.config import (
    DOCINTEL_BREAKER_FAILURES,
    DOCINTEL_BREAKER_RESET_S,
    DOCINTEL_MAX_ATTEMPTS,
    get_settings,
)
from shared.domain.documents import Classification, ExtractedField
from shared.domain.money import normalise_currency, to_minor
from shared.errors import UpstreamError, ValidationError

log = logging.getLogger(__name__)

PROVIDER = "docintel"
CLASSIFIER = "docintel"
API_VERSION = "2024-11-30"

# Our class -> the prebuilt model that reads its fields.
PREBUILT_MODELS = {
    "w2": "prebuilt-tax.us.w2",
    "1099-nec": "prebuilt-tax.us.1099NEC",
    "1099-int": "prebuilt-tax.us.1099INT",
    "1099-div": "prebuilt-tax.us.1099DIV",
    "1099-misc": "prebuilt-tax.us.1099MISC",
    "1098": "prebuilt-tax.us.1098",
    "invoice": "prebuilt-invoice",
    "receipt": "prebuilt-receipt",
    "bank_statement": "prebuilt-bankStatement.us",
    "credit_card_statement": "prebuilt-bankStatement.us",
    "pay_stub": "prebuilt-payStub.us",
}
# Without a custom classifier, the unified US tax model tells the forms apart.
UNIFIED_TAX_MODEL = "prebuilt-tax.us"
_TAX_DOC_TYPES = {
    "tax.us.w2": "w2",
    "tax.us.1099NEC": "1099-nec",
    "tax.us.1099INT": "1099-int",
    "tax.us.1099DIV": "1099-div",
    "tax.us.1099MISC": "1099-misc",
    "tax.us.1098": "1098",
}

# Our field name -> the path of the prebuilt model's field ("Employer.IdNumber"), and kind.
# Limitation: the paths follow Microsoft's published field lists for these models; a
# field a model renames in a later API version is simply not read.
FIELD_MAPS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "w2": (
        ("tax_year", "TaxYear", "text"),
        ("employer_ein", "Employer.IdNumber", "sensitive"),
        ("wages", "WagesTipsAndOtherCompensation", "money"),
        ("federal_tax_withheld", "FederalIncomeTaxWithheld", "money"),
    ),
    "1099-nec": (
        ("tax_year", "TaxYear", "text"),
        ("payer_tin", "Payer.TIN", "sensitive"),
        ("nonemployee_compensation", "Box1", "money"),
    ),
    "1099-int": (
        ("tax_year", "TaxYear", "text"),
        ("payer_tin", "Payer.TIN", "sensitive"),
        ("interest_income", "Box1", "money"),
    ),
    "1099-div": (
        ("tax_year", "TaxYear", "text"),
        ("payer_tin", "Payer.TIN", "sensitive"),
        ("ordinary_dividends", "Box1a", "money"),
    ),
    "1099-misc": (
        ("tax_year", "TaxYear", "text"),
        ("payer_tin", "Payer.TIN", "sensitive"),
        ("rents", "Box1", "money"),
        ("royalties", "Box2", "money"),
        ("other_income", "Box3", "money"),
    ),
    "1098": (
        ("tax_year", "TaxYear", "text"),
        ("recipient_tin", "Lender.TIN", "sensitive"),
        ("mortgage_interest", "Box1", "money"),
    ),
    "invoice": (
        ("vendor", "VendorName", "text"),
        ("invoice_number", "InvoiceId", "text"),
        ("invoice_date", "InvoiceDate", "date"),
        ("total", "InvoiceTotal", "money"),
    ),
    "receipt": (
        ("vendor", "MerchantName", "text"),
        ("date", "TransactionDate", "date"),
        ("total", "Total", "money"),
    ),
    "bank_statement": (
        ("period_start", "StatementStartDate", "date"),
        ("period_end", "StatementEndDate", "date"),
        ("account_number", "Accounts.0.AccountNumber", "sensitive"),
        ("opening_balance", "Accounts.0.BeginningBalance", "money"),
        ("closing_balance", "Accounts.0.EndingBalance", "money"),
    ),
    "pay_stub": (
        ("period_start", "PayPeriodStartDate", "date"),
        ("period_end", "PayPeriodEndDate", "date"),
        ("gross_pay", "CurrentPeriodGrossPay", "money"),
        ("net_pay", "CurrentPeriodNetPay", "money"),
    ),
}
FIELD_MAPS["credit_card_statement"] = FIELD_MAPS["bank_statement"]

_client: Any = None
_client_lock = threading.Lock()
breaker = pybreaker.CircuitBreaker(
    fail_max=DOCINTEL_BREAKER_FAILURES,
    reset_timeout=DOCINTEL_BREAKER_RESET_S,
    exclude=[lambda exc: isinstance(exc, UpstreamError) and not exc.retryable],
)

T = TypeVar("T")

# First retry delay without a Retry-After, in seconds; jittered, doubling up to 30 s.
BACKOFF_FIRST_S = 0.5


def classify(data: bytes, media_type: str) -> Classification:
    """Classify a document and read its key fields with Document Intelligence.

    Raises:
        UpstreamError: the service failed, timed out, or the breaker is open (retryable),
            or it could not analyse the document (not retryable).
    """
    settings = get_settings()
    classifier_id = settings.docintel_classifier_id
    if classifier_id:
        result = _call("classify", lambda: _classify(classifier_id, data))
        doc_class, confidence = _classified_as(result)
    else:
        result = _call("analyze", lambda: _analyze(UNIFIED_TAX_MODEL, data))
        doc_class, confidence = _tax_form_of(result)
    model_id = PREBUILT_MODELS.get(doc_class)
    fields: tuple[ExtractedField, ...] = ()
    if model_id is not None:
        analysed = (
            result
            if model_id.startswith("prebuilt-tax") and not classifier_id
            else _call("analyze", lambda: _analyze(model_id, data))
        )
        fields = tuple(read_fields(doc_class, analysed))
    return Classification(
        doc_class,
        confidence,
        CLASSIFIER,
        f"{API_VERSION}/{classifier_id or UNIFIED_TAX_MODEL}",
        fields,
        model_id,
    )


def _service() -> Any:
    from azure.ai.documentintelligence import DocumentIntelligenceClient

    global _client
    with _client_lock:
        if _client is None:
            settings = get_settings()
            credential: Any
            if settings.docintel_key:
                credential = AzureKeyCredential(settings.docintel_key)
            else:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            # The SDK's own retries are off: ours below count attempts and log them.
            _client = DocumentIntelligenceClient(
                settings.docintel_endpoint or "",
                credential,
                retry_total=0,
                api_version=API_VERSION,
            )
        return _client


def reset_client() -> None:
    """Forget the client and close the breaker (tests, or after a settings change)."""
    global _client
    with _client_lock:
        _client = None
    breaker.close()


def _wait(poller: Any, operation: str) -> dict[str, Any]:
    timeout_s = get_settings().docintel_timeout_s
    poller.wait(timeout=timeout_s)
    if not poller.done():
        raise UpstreamError(
            f"document {operation} did not finish within {timeout_s} s (DOCINTEL_TIMEOUT_S)",
            provider=PROVIDER,
            retryable=True,
        )
    return dict(poller.result().as_dict())


def _analyze(model_id: str, data: bytes) -> dict[str, Any]:
    return _wait(_service().begin_analyze_document(model_id, io.BytesIO(data)), "analysis")


def _classify(classifier_id: str, data: bytes) -> dict[str, Any]:
    return _wait(
        _service().begin_classify_document(classifier_id, io.BytesIO(data)), "classification"
    )


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamError) and exc.retryable


def _retry_after(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    backoff = wait_random_exponential(multiplier=BACKOFF_FIRST_S, max=30)(state)
    after = getattr(exc, "retry_after_s", None)
    return max(float(after), 0.0) if after is not None else backoff


def _call(operation: str, fn: Callable[[], T]) -> T:
    attempts = {"n": 0}

    @retry(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(DOCINTEL_MAX_ATTEMPTS),
        wait=_retry_after,
        reraise=True,
    )
    def attempt() -> T:
        attempts["n"] += 1
        try:
            result: T = breaker.call(_translated, operation, fn, attempts["n"])
            return result
        except pybreaker.CircuitBreakerError:
            raise UpstreamError(
                "Document Intelligence is failing; calls are paused (circuit open)",
                provider=PROVIDER,
                retryable=False,
            ) from None

    return attempt()


def _translated(operation: str, fn: Callable[[], T], attempt: int) -> T:
    try:
        return fn()
    except HttpResponseError as exc:
        status = exc.status_code
        error = _upstream_from(exc, operation, status)
    except ServiceRequestError as exc:
        error = UpstreamError(f"document {operation}: {exc}", provider=PROVIDER, retryable=True)
    except AzureError as exc:
        # A failed long-running operation ends here with the service's error message.
        error = UpstreamError(f"document {operation} failed: {exc.message}", provider=PROVIDER)
    log.warning(
        "docintel %s failed (attempt %d): %s",
        operation,
        attempt,
        error,
        extra={"system": PROVIDER, "operation": operation, "attempt": attempt},
    )
    raise error


def _upstream_from(exc: HttpResponseError, operation: str, status: int | None) -> UpstreamError:
    headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
    retryable = status == 429 or (status is not None and status >= 500)
    error = UpstreamError(
        f"document {operation} answered {status}: {exc.message}",
        provider=PROVIDER,
        status=status,
        request_id=headers.get("apim-request-id") or headers.get("x-ms-request-id"),
        retryable=retryable,
    )
    after = headers.get("Retry-After")
    if after is not None and after.strip().isdigit():
        error.retry_after_s = int(after)  # type: ignore[attr-defined]
    return error


def _classified_as(result: Mapping[str, Any]) -> tuple[str, float]:
    documents = result.get("documents") or []
    if not documents:
        return "other", 0.0
    best = max(documents, key=lambda d: d.get("confidence") or 0)
    doc_type = str(best.get("docType") or "other")
    return (
        doc_type if doc_type in PREBUILT_MODELS or doc_type in ("engagement_letter",) else "other",
        float(best.get("confidence") or 0),
    )


def _tax_form_of(result: Mapping[str, Any]) -> tuple[str, float]:
    for document in result.get("documents") or []:
        doc_type = str(document.get("docType") or "")
        for prefix, doc_class in _TAX_DOC_TYPES.items():
            if doc_type.startswith(prefix):
                return doc_class, float(document.get("confidence") or 0)
    return "other", 0.0


def read_fields(doc_class: str, result: Mapping[str, Any]) -> list[ExtractedField]:
    """Our key fields from a prebuilt model's result (its first document)."""
    documents = result.get("documents") or []
    if not documents:
        return []
    found = []
    for name, path, kind in FIELD_MAPS.get(doc_class, ()):
        field = _at(documents[0].get("fields") or {}, path)
        if field is None:
            continue
        extracted = _field(name, kind, field)
        if extracted is not None:
            found.append(extracted)
    return found


def _at(fields: Mapping[str, Any], path: str) -> Mapping[str, Any] | None:
    node: Any = {"valueObject": fields}
    for part in path.split("."):
        if part.isdigit():
            items = node.get("valueArray") or []
            node = items[int(part)] if int(part) < len(items) else None
        else:
            node = (node.get("valueObject") or {}).get(part)
        if node is None:
            return None
    return node if isinstance(node, Mapping) else None


def _field(name: str, kind: str, field: Mapping[str, Any]) -> ExtractedField | None:
    confidence = float(field.get("confidence") or 0)
    regions = field.get("boundingRegions") or []
    page = regions[0].get("pageNumber") if regions else None
    if kind == "money":
        currency_value = field.get("valueCurrency") or {}
        raw = currency_value.get("amount", field.get("valueNumber"))
        if raw is None:
            return None
        try:
            currency = normalise_currency(str(currency_value.get("currencyCode") or "USD"))
            # The service sends JSON numbers; read their decimal text, never a float's.
            amount = Decimal(str(raw)).quantize(Decimal(1).scaleb(-2))
            minor = to_minor(amount, currency)
        except (ValidationError, ArithmeticError):
            return None
        return ExtractedField(name, "money", str(amount), confidence, page, minor, currency)
    if kind == "date":
        value = field.get("valueDate")
        return ExtractedField(name, "date", str(value), confidence, page) if value else None
    text = field.get("valueString") or field.get("content")
    if text is None:
        return None
    return ExtractedField(name, kind, str(text), confidence, page)  # type: ignore[arg-type]
