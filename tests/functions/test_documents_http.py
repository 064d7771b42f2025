"""The advisor's review endpoints: JSON in and out, masked tax ids, problem answers."""

from __future__ import annotations

import base64
import json
import random
import uuid

import azure.functions as func
import pytest

from functions import documents as endpoints
from shared.adapters import blob
from shared.config import DOCUMENTS_CONTAINER, get_settings
from shared.services import documents
from tests.documents.labelled import MAKERS, render


@pytest.fixture(autouse=True)
def field_key(services, monkeypatch):
    monkeypatch.setattr(
        get_settings(), "documents_field_key", base64.urlsafe_b64encode(b"h" * 32).decode()
    )


def intake(client_id: uuid.UUID, doc_class: str, seed: int) -> tuple[uuid.UUID, dict[str, str]]:
    spec, truth = MAKERS[doc_class](random.Random(seed))
    data = render(spec, layout="columns", font="Times-Roman", rotation=0, pages=1)
    name = f"{client_id}/{doc_class}-{seed}.pdf"
    blob.upload(DOCUMENTS_CONTAINER, name, data, content_type="application/pdf")
    outcome = documents.intake_blob(name)
    assert outcome.document_id is not None
    return outcome.document_id, truth


def request(method: str, client_id: object, tail: str, body: object = None, **route: str):
    return func.HttpRequest(
        method=method,
        url=f"/api/clients/{client_id}/documents/{tail}",
        body=json.dumps(body).encode() if body is not None else b"",
        route_params={"client_id": str(client_id), **route},
        headers={"x-advisor-id": "advisor-1"},
    )


def test_a_document_answers_with_its_fields_and_the_tax_id_masked(services, client_id):
    document_id, truth = intake(client_id, "1099-nec", 1)

    response = endpoints.get_document(
        request("GET", client_id, str(document_id), document_id=str(document_id))
    )

    body = json.loads(response.get_body())
    assert response.status_code == 200
    assert body["doc_class"] == "1099-nec"
    fields = {f["name"]: f for f in body["fields"]}
    assert fields["payer_tin"]["value"] == "****" + truth["payer_tin"][-4:]
    assert truth["payer_tin"] not in response.get_body().decode()
    amount = fields["nonemployee_compensation"]
    assert amount["value"] == truth["nonemployee_compensation"]
    assert amount["amount_minor"] == int(truth["nonemployee_compensation"].replace(".", ""))


def test_an_advisor_corrects_the_class_through_the_endpoint(services, client_id):
    document_id, _ = intake(client_id, "other", 2)
    waiting = endpoints.review_list(request("GET", client_id, "review"))
    assert [d["id"] for d in json.loads(waiting.get_body())["documents"]] == [str(document_id)]

    response = endpoints.review_document(
        request(
            "POST",
            client_id,
            f"{document_id}/review",
            {"doc_class": "engagement_letter"},
            document_id=str(document_id),
        )
    )

    body = json.loads(response.get_body())
    assert response.status_code == 200
    assert (body["doc_class"], body["status"], body["reviewed_by"]) == (
        "engagement_letter",
        "reviewed",
        "advisor-1",
    )


def test_a_bad_review_answers_400_naming_the_problem(services, client_id):
    document_id, _ = intake(client_id, "w2", 3)
    response = endpoints.review_document(
        request(
            "POST",
            client_id,
            f"{document_id}/review",
            {"fields": {"wages": "ten"}},
            document_id=str(document_id),
        )
    )
    assert response.status_code == 400
    assert json.loads(response.get_body())["detail"].startswith(
        "fields.wages: 'ten' is not a decimal amount"
    )


def test_an_unknown_document_answers_404(services, client_id):
    missing = uuid.uuid4()
    response = endpoints.get_document(
        request("GET", client_id, str(missing), document_id=str(missing))
    )
    assert response.status_code == 404
