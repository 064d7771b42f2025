"""The Document Intelligence adapter against a fake of its REST API on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.adapters import docintel
from shared.config import get_settings
from shared.errors import UpstreamError
from tests.adapters.fake_docintel import FakeDocIntel, running

W2_RESULT = {
    "documents": [
        {
            "docType": "tax.us.w2",
            "confidence": 0.97,
            "fields": {
                "TaxYear": {
                    "type": "string",
                    "valueString": "2025",
                    "confidence": 0.99,
                    "boundingRegions": [{"pageNumber": 1, "polygon": []}],
                },
                "Employer": {
                    "type": "object",
                    "valueObject": {
                        "IdNumber": {
                            "type": "string",
                            "valueString": "12-3456789",
                            "confidence": 0.95,
                        },
                    },
                },
                "WagesTipsAndOtherCompensation": {
                    "type": "number",
                    "valueNumber": 52000.1,
                    "confidence": 0.98,
                    "boundingRegions": [{"pageNumber": 1, "polygon": []}],
                },
                "FederalIncomeTaxWithheld": {
                    "type": "number",
                    "valueNumber": 6240,
                    "confidence": 0.97,
                },
            },
        }
    ]
}
INVOICE_RESULT = {
    "documents": [
        {
            "docType": "invoice",
            "confidence": 1.0,
            "fields": {
                "VendorName": {"type": "string", "valueString": "Northwind", "confidence": 0.9},
                "InvoiceId": {"type": "string", "valueString": "INV-7", "confidence": 0.9},
                "InvoiceDate": {"type": "date", "valueDate": "2025-03-01", "confidence": 0.9},
                "InvoiceTotal": {
                    "type": "currency",
                    "valueCurrency": {"amount": 1234.5, "currencyCode": "EUR"},
                    "confidence": 0.9,
                },
            },
        }
    ]
}


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDocIntel]:
    with running(FakeDocIntel()) as served:
        settings = get_settings()
        monkeypatch.setattr(settings, "docintel_endpoint", served.endpoint)
        monkeypatch.setattr(settings, "docintel_key", "fake-key")
        monkeypatch.setattr(settings, "docintel_classifier_id", None)
        monkeypatch.setattr(settings, "docintel_timeout_s", 30.0)
        monkeypatch.setattr(docintel, "BACKOFF_FIRST_S", 0.01)
        docintel.reset_client()
        yield served
        docintel.reset_client()


def test_a_w2_is_read_by_the_unified_tax_model_after_polling(services, fake):
    fake.results["prebuilt-tax.us"] = W2_RESULT
    fake.running_polls = 2

    result = docintel.classify(b"%PDF-1.7 fake", "application/pdf")

    assert (result.doc_class, result.confidence, result.classifier) == ("w2", 0.97, "docintel")
    assert result.model_id == "prebuilt-tax.us.w2"
    fields = {f.name: f for f in result.fields}
    assert (fields["wages"].amount_minor, fields["wages"].currency) == (5200010, "USD")
    assert fields["wages"].page == 1
    assert fields["federal_tax_withheld"].amount_minor == 624000
    assert fields["employer_ein"].kind == "sensitive"
    assert fields["tax_year"].value == "2025"
    assert fake.keys_seen == {"fake-key"}
    assert fake.polls >= 3


def test_a_custom_classifier_picks_the_class_and_the_prebuilt_model_reads_it(
    services, fake, monkeypatch
):
    monkeypatch.setattr(get_settings(), "docintel_classifier_id", "advisoros-docs")
    fake.results["advisoros-docs"] = {"documents": [{"docType": "invoice", "confidence": 0.91}]}
    fake.results["prebuilt-invoice"] = INVOICE_RESULT

    result = docintel.classify(b"%PDF-1.7 fake", "application/pdf")

    assert fake.submissions == ["advisoros-docs", "prebuilt-invoice"]
    assert result.doc_class == "invoice"
    total = next(f for f in result.fields if f.name == "total")
    assert (total.amount_minor, total.currency, total.value) == (123450, "EUR", "1234.50")
    assert next(f for f in result.fields if f.name == "invoice_date").value == "2025-03-01"


def test_429_is_retried_after_its_retry_after(services, fake):
    fake.results["prebuilt-tax.us"] = W2_RESULT
    fake.faults = [(429, {"Retry-After": "0"}), (503, {})]

    result = docintel.classify(b"%PDF-1.7 fake", "application/pdf")

    assert result.doc_class == "w2"
    assert fake.submissions == ["prebuilt-tax.us"] * 3


def test_a_failed_analysis_is_not_retried_and_names_the_service_error(services, fake):
    fake.failures["prebuilt-tax.us"] = {
        "code": "InvalidContent",
        "message": "The file is corrupted.",
    }

    with pytest.raises(UpstreamError) as raised:
        docintel.classify(b"%PDF-1.7 fake", "application/pdf")

    assert not raised.value.retryable
    assert "The file is corrupted." in str(raised.value)
    assert fake.submissions == ["prebuilt-tax.us"]


def test_an_analysis_past_the_deadline_fails_retryable(services, fake, monkeypatch):
    monkeypatch.setattr(get_settings(), "docintel_timeout_s", 0.3)
    fake.never_finish = True

    with pytest.raises(UpstreamError, match=r"did not finish within 0.3 s \(DOCINTEL_TIMEOUT_S\)"):
        docintel.classify(b"%PDF-1.7 fake", "application/pdf")


def test_the_breaker_opens_after_repeated_failures(services, fake):
    fake.faults = [(500, {})] * 20

    for _ in range(2):
        with pytest.raises(UpstreamError):
            docintel.classify(b"%PDF-1.7 fake", "application/pdf")
    submitted = len(fake.submissions)

    with pytest.raises(UpstreamError, match=r"calls are paused \(circuit open\)"):
        docintel.classify(b"%PDF-1.7 fake", "application/pdf")
    assert len(fake.submissions) == submitted
    assert submitted == docintel.DOCINTEL_BREAKER_FAILURES


def test_the_pipeline_stores_what_the_service_read(services, fake, client_id, monkeypatch):
    import base64

    import psycopg

    from shared.adapters import blob
    from shared.config import DOCUMENTS_CONTAINER
    from shared.services import documents
    from tests.services.test_documents import w2_pdf

    monkeypatch.setattr(
        get_settings(), "documents_field_key", base64.urlsafe_b64encode(b"d" * 32).decode()
    )
    fake.results["prebuilt-tax.us"] = W2_RESULT
    name = f"{client_id}/w2.pdf"
    blob.upload(DOCUMENTS_CONTAINER, name, w2_pdf(30)[0], content_type="application/pdf")

    outcome = documents.intake_blob(name)

    with psycopg.connect(services["DATABASE_URL"]) as conn:
        stored = conn.execute(
            "SELECT doc_class, classifier, classifier_version, model_id, confidence"
            " FROM documents WHERE id = %s",
            (outcome.document_id,),
        ).fetchone()
        wages = conn.execute(
            "SELECT amount_minor FROM document_fields WHERE document_id = %s AND name = 'wages'",
            (outcome.document_id,),
        ).fetchone()
    assert stored is not None
    assert stored[:4] == ("w2", "docintel", "2024-11-30/prebuilt-tax.us", "prebuilt-tax.us.w2")
    assert wages == (5200010,)
