"""Documents and engagements through the portal: pages, masked fields, the review queue and
an advisor's review, upload and download links against Azurite, engagements and their
workflow as the rows record it."""

from __future__ import annotations

import base64
import hashlib
import random
import uuid

import psycopg
import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient

from shared.adapters import blob
from shared.config import DOCUMENTS_CONTAINER, get_settings
from shared.services import documents, engagements
from tests.documents.labelled import MAKERS, render
from tests.portal.conftest import make_user, send

pytestmark = pytest.mark.usefixtures("portal")

FIELD_KEY = base64.urlsafe_b64encode(b"p" * 32).decode()


@pytest.fixture(autouse=True)
def field_key(portal: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "documents_field_key", FIELD_KEY)


def take_in(client: uuid.UUID, kind: str, seed: int) -> tuple[uuid.UUID, bytes, dict[str, str]]:
    """Drop a generated form in the client's folder and run intake on it, as the trigger
    would; returns the document id, the bytes and the values printed on the form."""
    spec, truth = MAKERS[kind](random.Random(seed))
    data = render(spec, layout="lines", font="Helvetica", rotation=0, pages=1)
    name = f"{client}/{kind}-{seed}.pdf"
    blob.upload(DOCUMENTS_CONTAINER, name, data, content_type="application/pdf")
    outcome = documents.intake_blob(name)
    assert outcome.document_id is not None, outcome
    return outcome.document_id, data, truth


def test_a_client_user_pages_through_its_documents_and_sees_tax_ids_masked(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    w2, _, truth = take_in(client_id, "w2", 21)
    other, _, _ = take_in(client_id, "other", 12)
    user = make_user(firm, "client_user", client_id)

    first = send("GET", f"v1/clients/{client_id}/documents", user.token, params={"limit": "1"})
    cursor = first.json()["next"]
    second = send(
        "GET",
        f"v1/clients/{client_id}/documents",
        user.token,
        params={"limit": "1", "after": cursor},
    )
    one = send("GET", f"v1/clients/{client_id}/documents/{w2}", user.token)

    assert [d["id"] for d in first.json()["documents"]] == [str(other)]
    assert [d["id"] for d in second.json()["documents"]] == [str(w2)]
    assert second.json()["next"] is None
    ein = next(f for f in one.json()["fields"] if f["name"] == "employer_ein")
    digits = "".join(ch for ch in truth["employer_ein"] if ch.isdigit())
    assert ein == {**ein, "kind": "sensitive", "value": "****" + digits[-4:]}
    assert digits.encode() not in one.body and truth["employer_ein"].encode() not in one.body
    assert one.json()["file_name"] == "w2-21.pdf"


def test_an_advisor_works_the_review_queue_and_the_review_is_audited(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    waiting, _, _ = take_in(client_id, "other", 12)
    advisor = make_user(firm, "advisor")
    queue = f"v1/clients/{client_id}/document-reviews"

    before = send("GET", queue, advisor.token)
    reviewed = send(
        "POST",
        f"v1/clients/{client_id}/documents/{waiting}/review",
        advisor.token,
        body={"doc_class": "receipt", "fields": {"total": {"amount": "12.50"}, "vendor": "Roma"}},
    )
    after = send("GET", queue, advisor.token)
    trail = send("GET", f"v1/clients/{client_id}/audit-log", advisor.token).json()["entries"]

    assert [d["id"] for d in before.json()["documents"]] == [str(waiting)]
    assert reviewed.status == 200
    assert (reviewed.json()["doc_class"], reviewed.json()["status"]) == ("receipt", "reviewed")
    total = next(f for f in reviewed.json()["fields"] if f["name"] == "total")
    assert (total["amount_minor"], total["currency"]) == (1250, "USD")
    assert after.json()["documents"] == []
    assert (trail[0]["action"], trail[0]["actor"]) == ("document.reviewed", f"user:{advisor.id}")
    assert trail[0]["details"]["after"]["fields"] == {"total": "12.50", "vendor": "Roma"}


def test_a_bad_correction_is_a_400_naming_the_field_and_changes_nothing(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    waiting, _, _ = take_in(client_id, "other", 12)
    advisor = make_user(firm, "advisor")

    answer = send(
        "POST",
        f"v1/clients/{client_id}/documents/{waiting}/review",
        advisor.token,
        body={"fields": {"total": {"amount": "twelve"}}},
    )
    still = send("GET", f"v1/clients/{client_id}/documents/{waiting}", advisor.token)

    assert answer.status == 400
    assert answer.json()["detail"] == (
        "fields.total: 'twelve' is not a decimal amount such as \"1234.50\""
    )
    assert still.json()["status"] == "needs_review"


def test_a_client_user_is_refused_the_advisor_routes_and_nothing_changes(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    waiting, _, _ = take_in(client_id, "other", 12)
    user = make_user(firm, "client_user", client_id)

    queue = send("GET", f"v1/clients/{client_id}/document-reviews", user.token)
    review = send(
        "POST",
        f"v1/clients/{client_id}/documents/{waiting}/review",
        user.token,
        body={"doc_class": "receipt"},
    )
    still = send("GET", f"v1/clients/{client_id}/documents/{waiting}", user.token)

    assert (queue.status, review.status) == (403, 403)
    assert review.json()["detail"] == (
        "only firm staff may confirm or correct a document's class and fields."
    )
    assert (still.json()["doc_class"], still.json()["status"]) == ("other", "needs_review")


def test_an_upload_link_creates_one_new_blob_in_the_clients_folder_and_nothing_else(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    user = make_user(firm, "client_user", client_id)

    answer = send(
        "POST",
        f"v1/clients/{client_id}/document-uploads",
        user.token,
        body={"file_name": "w2 2026.pdf", "content_type": "application/pdf"},
    )
    link = answer.json()
    uploader = BlobClient.from_blob_url(link["url"])
    uploader.upload_blob(b"%PDF-1.4 scan", content_type="application/pdf")

    assert answer.status == 201
    assert link["blob_name"].startswith(f"documents/{client_id}/")
    assert link["blob_name"].endswith("-w2 2026.pdf")
    assert link["max_bytes"] == get_settings().documents_max_bytes
    assert "application/pdf" in link["content_types"]
    stored = link["blob_name"].removeprefix("documents/")
    assert blob.read(DOCUMENTS_CONTAINER, stored) == b"%PDF-1.4 scan"
    # Write and create only: the link reads nothing, not even the blob it wrote.
    with pytest.raises(HttpResponseError) as refused:
        uploader.download_blob().readall()
    assert refused.value.status_code == 403


def test_a_download_link_reads_the_documents_bytes_and_cannot_write(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    document, data, _ = take_in(client_id, "w2", 22)
    user = make_user(firm, "client_user", client_id)

    answer = send("GET", f"v1/clients/{client_id}/documents/{document}/download-link", user.token)
    reader = BlobClient.from_blob_url(answer.json()["url"])

    assert (
        hashlib.sha256(reader.download_blob().readall()).digest() == hashlib.sha256(data).digest()
    )
    with pytest.raises(HttpResponseError) as refused:
        reader.upload_blob(b"replaced", overwrite=True)
    assert refused.value.status_code == 403
    advisor = make_user(firm, "advisor")
    trail = send("GET", f"v1/clients/{client_id}/audit-log", advisor.token).json()["entries"]
    assert (trail[0]["action"], trail[0]["actor"]) == ("document.download_link", f"user:{user.id}")


def test_engagements_list_and_show_what_their_workflow_still_waits_for(
    services: dict[str, str], firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    opened = engagements.open_engagement(client_id, "individual_tax_return", "2026", "test")
    w2, _, _ = take_in(client_id, "w2", 23)
    user = make_user(firm, "client_user", client_id)

    listed = send("GET", f"v1/clients/{client_id}/engagements", user.token)
    one = send("GET", f"v1/clients/{client_id}/engagements/{opened.id}", user.token)

    assert [e["id"] for e in listed.json()["engagements"]] == [str(opened.id)]
    workflow = one.json()["workflow"]
    assert workflow["required_documents"] == ["w2", "1099"]
    assert workflow["missing_documents"] == ["1099"]
    assert [d["document_id"] for d in workflow["received_documents"]] == [str(w2)]
    assert workflow["invoiced"] is False
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT status FROM engagements WHERE id = %s", (opened.id,)).fetchone()
    assert row == (one.json()["status"],) == ("open",)
