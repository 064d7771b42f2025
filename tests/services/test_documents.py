"""Document intake, storage, review and the classified event, on real Postgres and Azurite."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid

import psycopg
import pytest
from pypdf import PdfWriter

from shared.adapters import blob
from shared.config import DOCUMENTS_CONTAINER, DOCUMENTS_QUARANTINE_CONTAINER, get_settings
from shared.errors import NotFound, ValidationError
from shared.services import audit, documents
from tests.documents.labelled import MAKERS, render

FIELD_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()


@pytest.fixture(autouse=True)
def field_key(services, monkeypatch):
    monkeypatch.setattr(get_settings(), "documents_field_key", FIELD_KEY)


def w2_pdf(seed: int = 1) -> tuple[bytes, dict[str, str]]:
    import random

    spec, truth = MAKERS["w2"](random.Random(seed))
    return render(spec, layout="lines", font="Helvetica", rotation=0, pages=1), truth


def drop(client_id: uuid.UUID | str, name: str, data: bytes) -> str:
    blob_name = f"{client_id}/{name}"
    blob.upload(DOCUMENTS_CONTAINER, blob_name, data, content_type="application/pdf")
    return blob_name


def rows(services, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        return conn.execute(sql, args).fetchall()


def test_a_w2_is_hashed_classified_and_its_fields_stored(services, client_id):
    data, truth = w2_pdf()
    outcome = documents.intake_blob(drop(client_id, "w2.pdf", data))

    assert outcome.status == "new"
    assert outcome.doc_class == "w2"
    (doc,) = rows(
        services,
        "SELECT sha256, size_bytes, media_type, page_count, classifier, classifier_version,"
        " status FROM documents WHERE id = %s",
        outcome.document_id,
    )
    assert doc == (
        hashlib.sha256(data).hexdigest(),
        len(data),
        "application/pdf",
        1,
        "local",
        "local-rules-1.0",
        "classified",
    )
    fields = {
        r[0]: r[1:]
        for r in rows(
            services,
            "SELECT name, value_text, amount_minor, currency, value_encrypted IS NOT NULL, last4"
            " FROM document_fields WHERE document_id = %s",
            outcome.document_id,
        )
    }
    wages_minor = int(truth["wages"].replace(".", ""))
    assert fields["wages"] == (None, wages_minor, "USD", False, None)
    assert fields["tax_year"][0] == truth["tax_year"]
    # The EIN is only stored sealed, with its last four beside it.
    assert fields["employer_ein"] == (None, None, None, True, truth["employer_ein"][-4:])
    raw = rows(
        services,
        "SELECT value_encrypted FROM document_fields WHERE document_id = %s AND name = %s",
        outcome.document_id,
        "employer_ein",
    )[0][0]
    assert truth["employer_ein"].encode() not in bytes(raw)


def test_every_response_masks_the_tax_id(services, client_id):
    data, truth = w2_pdf(2)
    outcome = documents.intake_blob(drop(client_id, "w2.pdf", data))

    document = documents.get_document(client_id, outcome.document_id)

    ein = next(f for f in document["fields"] if f["name"] == "employer_ein")
    assert ein["value"] == "****" + truth["employer_ein"][-4:]
    assert truth["employer_ein"] not in json.dumps(document, default=str)


def test_the_same_bytes_again_link_to_the_existing_document(services, client_id):
    data, _ = w2_pdf(3)
    first = documents.intake_blob(drop(client_id, "a.pdf", data))
    second = documents.intake_blob(drop(client_id, "copy of a.pdf", data))

    assert second.status == "duplicate"
    assert second.document_id == first.document_id
    assert rows(services, "SELECT count(*) FROM documents WHERE client_id = %s", client_id) == [
        (1,)
    ]
    outcomes = rows(
        services,
        "SELECT outcome, document_id FROM document_intake WHERE client_id = %s ORDER BY id",
        client_id,
    )
    assert outcomes == [("new", first.document_id), ("duplicate", first.document_id)]


def test_the_same_bytes_for_another_client_are_a_new_document(services, firm, client_id):
    from shared.services import clients

    other = clients.create_client(firm, "Other client", base_currency="USD")
    data, _ = w2_pdf(4)
    first = documents.intake_blob(drop(client_id, "a.pdf", data))
    second = documents.intake_blob(drop(other, "a.pdf", data))

    assert second.status == "new"
    assert second.document_id != first.document_id


def test_the_same_blob_version_is_handled_once(services, client_id):
    data, _ = w2_pdf(5)
    name = drop(client_id, "once.pdf", data)

    assert documents.intake_blob(name).status == "new"
    assert documents.intake_blob(name).status == "already_processed"
    assert rows(services, "SELECT count(*) FROM document_intake WHERE blob_name = %s", name) == [
        (1,)
    ]


def encrypted_pdf() -> bytes:
    data, _ = w2_pdf(6)
    writer = PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


BAD_FILES = {
    "empty": (b"", "the file is empty (0 bytes)"),
    "truncated": (lambda: w2_pdf(7)[0][:-200], "truncated PDF: it does not end with an %%EOF"),
    "corrupt": (
        b"%PDF-1.7\n1 0 obj garbage endobj\ntrailer <<>>\n%%EOF\n",
        "corrupt PDF",
    ),
    "password": (encrypted_pdf, "password-protected PDF: it cannot be opened without a password"),
    "unsupported": (b"PK\x03\x04 a zip file", "unsupported file type: the content is not PDF"),
    "bad png": (b"\x89PNG\r\n\x1a\nnot really", "corrupt PNG image"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_goes_to_quarantine_with_its_reason(services, client_id, case):
    payload, reason = BAD_FILES[case]
    data = payload() if callable(payload) else payload
    name = drop(client_id, f"{case}.pdf", data)

    outcome = documents.intake_blob(name)

    assert outcome.status == "quarantined"
    assert outcome.reason is not None and outcome.reason.startswith(reason), outcome.reason
    assert rows(services, "SELECT count(*) FROM documents WHERE client_id = %s", client_id) == [
        (0,)
    ]
    assert rows(
        services, "SELECT count(*) FROM outbox WHERE properties->>'client_id' = %s", str(client_id)
    ) == [(0,)]
    assert blob.read(DOCUMENTS_QUARANTINE_CONTAINER, name) == data
    report = json.loads(blob.read(DOCUMENTS_QUARANTINE_CONTAINER, f"{name}.reason.json"))
    assert report["reason"] == outcome.reason
    assert report["sha256"] == hashlib.sha256(data).hexdigest()
    with pytest.raises(NotFound):
        blob.read(DOCUMENTS_CONTAINER, name)
    (intake,) = rows(
        services, "SELECT outcome, reason FROM document_intake WHERE blob_name = %s", name
    )
    assert intake == ("quarantined", outcome.reason)


def test_files_over_the_size_and_page_limits_go_to_quarantine(services, client_id, monkeypatch):
    import random

    spec, _ = MAKERS["invoice"](random.Random(8))
    data = render(spec, layout="lines", font="Courier", rotation=0, pages=3)
    monkeypatch.setattr(get_settings(), "documents_max_pages", 2)
    pages = documents.intake_blob(drop(client_id, "long.pdf", data))
    monkeypatch.setattr(get_settings(), "documents_max_bytes", 100)
    size = documents.intake_blob(drop(client_id, "big.pdf", data))

    assert pages.reason == "the file has 3 pages, over the limit of 2 (DOCUMENTS_MAX_PAGES)"
    assert size.reason == (
        f"the file is {len(data)} bytes, over the limit of 100 bytes (DOCUMENTS_MAX_BYTES)"
    )


def test_a_file_for_an_unknown_client_goes_to_quarantine(services):
    stranger = uuid.uuid4()
    outcome = documents.intake_blob(drop(stranger, "x.pdf", w2_pdf(9)[0]))

    assert outcome.status == "quarantined"
    assert outcome.reason == f"unknown client {stranger}"


def test_nothing_is_half_written_when_sealing_fails(services, client_id, monkeypatch):
    monkeypatch.setattr(get_settings(), "documents_field_key", None)
    name = drop(client_id, "w2.pdf", w2_pdf(10)[0])

    with pytest.raises(Exception, match="DOCUMENTS_FIELD_KEY is not set"):
        documents.intake_blob(name)

    for table in ("documents", "document_fields", "document_intake"):
        assert rows(services, f"SELECT count(*) FROM {table} WHERE client_id = %s", client_id) == [
            (0,)
        ]
    # The blob stays for the retry once the key is set.
    monkeypatch.setattr(get_settings(), "documents_field_key", FIELD_KEY)
    assert documents.intake_blob(name).status == "new"


def test_classifying_records_a_document_classified_event(services, client_id):
    outcome = documents.intake_blob(drop(client_id, "w2.pdf", w2_pdf(11)[0]))

    (event,) = rows(
        services,
        "SELECT queue, message_id, body FROM outbox WHERE message_id LIKE %s",
        f"document.classified:{outcome.document_id}:%",
    )
    assert event[0] == "document-events"
    assert json.loads(bytes(event[2])) == {
        "type": "document.classified",
        "client_id": str(client_id),
        "document_id": str(outcome.document_id),
        "doc_class": "w2",
        "status": "classified",
        "revision": 0,
    }
    (summary,) = documents.classified_documents(client_id, "w2")
    assert summary.id == outcome.document_id


def low_confidence_doc() -> bytes:
    import random

    spec, _ = MAKERS["other"](random.Random(12))
    return render(spec, layout="lines", font="Helvetica", rotation=0, pages=1)


def test_low_confidence_goes_to_review_and_an_advisor_corrects_it(services, client_id):
    outcome = documents.intake_blob(drop(client_id, "notes.pdf", low_confidence_doc()))
    (waiting,) = documents.review_list(client_id)
    assert waiting["id"] == outcome.document_id
    assert waiting["status"] == "needs_review"

    after = documents.review(
        client_id,
        outcome.document_id,
        {
            "doc_class": "receipt",
            "fields": {"total": {"amount": "12.50", "currency": "USD"}, "vendor": "Cafe Roma"},
        },
        actor="advisor-7",
    )

    assert after["doc_class"] == "receipt" and after["status"] == "reviewed"
    total = next(f for f in after["fields"] if f["name"] == "total")
    assert (total["amount_minor"], total["currency"], total["value"]) == (1250, "USD", "12.50")
    assert documents.review_list(client_id) == []
    (entry,) = rows(
        services,
        "SELECT actor, details FROM audit_log WHERE action = 'document.reviewed'"
        " AND client_id = %s",
        client_id,
    )
    assert entry[0] == "advisor-7"
    assert entry[1]["before"]["doc_class"] == "other"
    assert entry[1]["after"]["fields"] == {"total": "12.50", "vendor": "Cafe Roma"}
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        assert audit.verify(conn, client_id) == []


def test_a_corrected_tax_id_is_sealed_and_masked_in_the_audit_log(services, client_id):
    data, truth = w2_pdf(13)
    outcome = documents.intake_blob(drop(client_id, "w2.pdf", data))

    documents.review(
        client_id, outcome.document_id, {"fields": {"employer_ein": "12-3456789"}}, actor="a"
    )

    (details,) = rows(
        services,
        "SELECT details::text FROM audit_log WHERE action = 'document.reviewed'"
        " AND client_id = %s",
        client_id,
    )
    assert "3456789" not in details[0] and truth["employer_ein"] not in details[0]
    assert "****6789" in details[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"doc_class": "w9"}, "doc_class 'w9' is not a document class; allowed: w2, 1099-nec"),
        ({"fields": {"wages": "12.345"}}, "fields.wages: '12.345' is not an amount in USD"),
        ({"fields": {"wages": "lots"}}, "fields.wages: 'lots' is not a decimal amount"),
        ({"colour": "red"}, "unknown key(s) ['colour']; allowed: doc_class, fields"),
        ([], "the body must be a JSON object"),
    ],
)
def test_a_bad_review_names_what_is_wrong_and_changes_nothing(services, client_id, body, message):
    outcome = documents.intake_blob(drop(client_id, "w2.pdf", w2_pdf(14)[0]))
    before = documents.get_document(client_id, outcome.document_id)

    with pytest.raises(ValidationError) as raised:
        documents.review(client_id, outcome.document_id, body, actor="a")

    assert str(raised.value).startswith(message)
    assert documents.get_document(client_id, outcome.document_id) == before


def test_a_document_of_another_client_is_not_found(services, firm, client_id):
    from shared.services import clients

    other = clients.create_client(firm, "Other", base_currency="USD")
    outcome = documents.intake_blob(drop(client_id, "w2.pdf", w2_pdf(15)[0]))

    with pytest.raises(NotFound):
        documents.get_document(other, outcome.document_id)


def test_row_security_shows_a_client_only_its_own_documents(services, firm, client_id):
    from shared.services import clients

    other = clients.create_client(firm, "Other", base_currency="USD")
    documents.intake_blob(drop(client_id, "w2.pdf", w2_pdf(16)[0]))
    documents.intake_blob(drop(other, "w2.pdf", w2_pdf(17)[0]))
    role = f"portal_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} NOLOGIN NOBYPASSRLS")
        conn.execute(
            f"GRANT SELECT ON documents, document_fields, document_intake, clients TO {role}"
        )
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        conn.execute(f"SET ROLE {role}")
        conn.execute("SELECT set_config('app.client_id', %s, true)", (str(client_id),))
        seen = {
            table: conn.execute(f"SELECT DISTINCT client_id FROM {table}").fetchall()
            for table in ("documents", "document_fields", "document_intake")
        }
        conn.rollback()
        conn.execute(f"SET ROLE {role}")
        nothing = conn.execute("SELECT count(*) FROM documents").fetchone()
    assert seen == {table: [(client_id,)] for table in seen}
    assert nothing == (0,)


def test_classified_forms_reach_the_engagement_waiting_for_them(services, client_id):
    import random

    from shared.services import engagements

    opened = engagements.open_engagement(client_id, "individual_tax_return", "2025", "t")
    spec, _ = MAKERS["1099-int"](random.Random(21))
    form_1099 = render(spec, layout="lines", font="Helvetica", rotation=0, pages=1)
    w2 = documents.intake_blob(drop(client_id, "w2.pdf", w2_pdf(21)[0]))
    interest = documents.intake_blob(drop(client_id, "1099.pdf", form_1099))
    # An unsure guess waits for review: it does not count as the document having arrived.
    documents.intake_blob(drop(client_id, "notes.pdf", low_confidence_doc()))

    events = rows(
        services,
        "SELECT event_name, payload FROM engagement_events WHERE engagement_id = %s ORDER BY id",
        opened.id,
    )
    assert events == [
        (
            "document_classified_1",
            {"document_id": str(w2.document_id), "doc_class": "w2", "document_class": "w2"},
        ),
        (
            "document_classified_2",
            {
                "document_id": str(interest.document_id),
                "doc_class": "1099",
                "document_class": "1099-int",
            },
        ),
    ]


def test_a_rolled_back_intake_tells_no_engagement(services, client_id, monkeypatch):
    from shared.services import engagements

    opened = engagements.open_engagement(client_id, "individual_tax_return", "2024", "t")

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the outbox is unavailable")

    monkeypatch.setattr(documents.outbox, "add", fail)
    with pytest.raises(RuntimeError):
        documents.intake_blob(drop(client_id, "w2.pdf", w2_pdf(22)[0]))
    assert rows(
        services, "SELECT count(*) FROM engagement_events WHERE engagement_id = %s", opened.id
    ) == [(0,)]


def test_each_classification_is_measured_by_its_class(services, client_id):
    from tests.telemetry_support import READER, providers

    def w2_count() -> int:
        data = READER.get_metrics_data()
        return sum(
            point.count
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "advisoros.documents.classification_confidence"
            for point in metric.data.data_points
            if dict(point.attributes or {}) == {"document_type": "w2"}
        )

    providers()
    before = w2_count()
    documents.intake_blob(drop(client_id, "w2.pdf", w2_pdf(31)[0]))
    assert w2_count() == before + 1
