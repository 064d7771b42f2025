"""The portal's documents and engagements views, on the request's transaction (row-level
security applies): lists, one record with its fields or workflow, an advisor's review,
and short-lived links to upload or download a document's file."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg

from shared.adapters import blob
from shared.config import (
    DOCUMENT_DOWNLOAD_LINK_TTL_S,
    DOCUMENT_UPLOAD_LINK_TTL_S,
    DOCUMENTS_CONTAINER,
    get_settings,
)
from shared.domain import portal as m
from shared.domain.engagements import engagement_type, requirement_met_by
from shared.errors import NotFound, ValidationError
from shared.services import audit, documents, engagements
from shared.services.portal import decode_cursor, encode_cursor

UPLOAD_CONTENT_TYPES = ("application/pdf", "image/jpeg", "image/png", "image/tiff")

_SUMMARY_COLUMNS = (
    "id, blob_name, media_type, size_bytes, page_count, doc_class, confidence, status, created_at"
)


def _summary(row: tuple[Any, ...]) -> m.DocumentSummary:
    return m.DocumentSummary(
        id=row[0],
        file_name=row[1].rpartition("/")[2],
        media_type=row[2],
        size_bytes=row[3],
        page_count=row[4],
        doc_class=row[5],
        confidence=float(row[6]),
        status=row[7],
        created_at=row[8],
    )


def _document(view: dict[str, Any]) -> m.Document:
    return m.Document(
        **_summary(tuple(view[c.strip()] for c in _SUMMARY_COLUMNS.split(","))).model_dump(),
        classifier=view["classifier"],
        classifier_version=view["classifier_version"],
        reviewed_by=view["reviewed_by"],
        reviewed_at=view["reviewed_at"],
        fields=[m.DocumentField(**f) for f in view["fields"]],
    )


def _document_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"document {raw!r} not found") from None


def list_documents(
    conn: psycopg.Connection, client_id: uuid.UUID, limit: int, after: str | None
) -> m.DocumentPage:
    """The client's documents, newest first, a keyset page at a time."""
    if after:
        stamp, serial = decode_cursor(after, 2)
        try:
            key = (dt.datetime.fromisoformat(stamp), uuid.UUID(serial))
        except ValueError:
            raise ValidationError(
                "query parameter 'after': not a cursor this API issued"
            ) from None
    else:
        key = (dt.datetime.max.replace(tzinfo=dt.UTC), uuid.UUID(int=(1 << 128) - 1))
    rows = conn.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM documents"
        " WHERE client_id = %s AND (created_at, id) < (%s, %s)"
        " ORDER BY created_at DESC, id DESC LIMIT %s",
        (client_id, key[0], key[1], limit + 1),
    ).fetchall()
    page = [_summary(r) for r in rows[:limit]]
    last = page[-1] if len(rows) > limit else None
    return m.DocumentPage(
        documents=page,
        next=encode_cursor(last.created_at.isoformat(), last.id) if last else None,
    )


def get_document(conn: psycopg.Connection, client_id: uuid.UUID, raw_id: str) -> m.Document:
    """One document with its fields; tax ids and account numbers stay masked for every
    role, as in every other answer and audit row.

    Raises:
        NotFound: no such document, or not one the caller may see.
    """
    return _document(documents.load(conn, client_id, _document_id(raw_id)))


def review_queue(conn: psycopg.Connection, client_id: uuid.UUID) -> m.DocumentList:
    """The client's documents waiting for review, oldest first, with their fields."""
    rows = conn.execute(
        "SELECT id FROM documents WHERE client_id = %s AND status = 'needs_review'"
        " ORDER BY created_at, id",
        (client_id,),
    ).fetchall()
    return m.DocumentList(
        documents=[_document(documents.load(conn, client_id, r[0])) for r in rows]
    )


def review(
    conn: psycopg.Connection,
    client_id: uuid.UUID,
    raw_id: str,
    change: m.DocumentReview,
    actor: str,
) -> m.Document:
    """Confirm or correct a document (``documents.review_in``, audited with before and
    after), in the request's transaction.

    Raises:
        NotFound: no such document, or not one the caller may see.
        ValidationError: a field value that does not fit its kind.
    """
    body = change.model_dump(exclude_none=True, exclude_unset=True)
    if "fields" in change.model_fields_set:
        body["fields"] = {
            name: value.model_dump() if isinstance(value, m.MoneyValue) else value
            for name, value in change.fields.items()
        }
    return _document(documents.review_in(conn, client_id, _document_id(raw_id), body, actor=actor))


def upload_link(
    conn: psycopg.Connection, client_id: uuid.UUID, request: m.UploadRequest, actor: str
) -> m.UploadLink:
    """A link that may create one new blob in the client's document folder, nothing else.

    The blob's name is new (a random prefix before the file's own name), so a link can
    neither overwrite an earlier document nor name another client's folder.
    """
    name = f"{client_id}/{uuid.uuid4().hex}-{request.file_name}"
    # Limitation: a SAS cannot limit a blob's type or size, so a holder of the link may
    # write any bytes up to storage's own limit; intake quarantines other types and files
    # over DOCUMENTS_MAX_BYTES, and the answer states both limits.
    url, expires = blob.sas_url(
        DOCUMENTS_CONTAINER, name, access="write", expires_s=DOCUMENT_UPLOAD_LINK_TTL_S
    )
    audit.record(
        conn,
        actor=actor,
        action="document.upload_link",
        client_id=client_id,
        subject=f"blob/{DOCUMENTS_CONTAINER}/{name}",
        details={"content_type": request.content_type, "expires_at": expires.isoformat()},
    )
    return m.UploadLink(
        url=url,
        blob_name=f"{DOCUMENTS_CONTAINER}/{name}",
        headers={"x-ms-blob-type": "BlockBlob", "Content-Type": request.content_type},
        content_types=list(UPLOAD_CONTENT_TYPES),
        max_bytes=get_settings().documents_max_bytes,
        expires_at=expires,
    )


def download_link(
    conn: psycopg.Connection, client_id: uuid.UUID, raw_id: str, actor: str
) -> m.DownloadLink:
    """A read-only link to a document's file, recorded in the audit log.

    Raises:
        NotFound: no such document, or not one the caller may see.
    """
    document_id = _document_id(raw_id)
    row = conn.execute(
        "SELECT blob_name FROM documents WHERE id = %s AND client_id = %s",
        (document_id, client_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"document {document_id} not found")
    url, expires = blob.sas_url(
        DOCUMENTS_CONTAINER, row[0], access="read", expires_s=DOCUMENT_DOWNLOAD_LINK_TTL_S
    )
    audit.record(
        conn,
        actor=actor,
        action="document.download_link",
        client_id=client_id,
        subject=f"document/{document_id}",
        details={"expires_at": expires.isoformat()},
    )
    return m.DownloadLink(url=url, expires_at=expires)


# -- Engagements ---------------------------------------------------------------------------

_ENGAGEMENT_COLUMNS = (
    "id, engagement_type, period, status, fee_minor, currency, created_at, closed_at"
)


def _engagement(row: tuple[Any, ...]) -> m.EngagementSummary:
    return m.EngagementSummary(
        id=row[0],
        engagement_type=row[1],
        period=row[2],
        status=row[3],
        fee_minor=row[4],
        currency=row[5],
        created_at=row[6],
        closed_at=row[7],
    )


def list_engagements(conn: psycopg.Connection, client_id: uuid.UUID) -> m.EngagementList:
    """The client's engagements, newest first."""
    rows = conn.execute(
        f"SELECT {_ENGAGEMENT_COLUMNS} FROM engagements WHERE client_id = %s"
        " ORDER BY created_at DESC, id DESC",
        (client_id,),
    ).fetchall()
    return m.EngagementList(engagements=[_engagement(r) for r in rows])


def _engagement_id(raw_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw_id)
    except ValueError:
        raise NotFound(f"engagement {raw_id!r} not found") from None


def engagement_summary(
    conn: psycopg.Connection, client_id: uuid.UUID, engagement_id: uuid.UUID
) -> m.EngagementSummary:
    """One engagement's row as the list shows it.

    Raises:
        NotFound: no such engagement, or not one the caller may see.
    """
    row = conn.execute(
        f"SELECT {_ENGAGEMENT_COLUMNS} FROM engagements WHERE id = %s AND client_id = %s",
        (engagement_id, client_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"engagement {str(engagement_id)!r} not found")
    return _engagement(row)


def engagement_of(
    conn: psycopg.Connection, client_id: uuid.UUID, raw_id: str
) -> engagements.Engagement:
    """The engagement named by a route, for a workflow step: its row with the instance id.

    Raises:
        NotFound: no such engagement, or not one the caller may see (the same answer).
    """
    engagement_id = _engagement_id(raw_id)
    try:
        found = engagements.get_in(conn, engagement_id)
    except NotFound:
        found = None
    if found is None or found.client_id != client_id:
        raise NotFound(f"engagement {raw_id!r} not found")
    return found


def get_engagement(conn: psycopg.Connection, client_id: uuid.UUID, raw_id: str) -> m.Engagement:
    """One engagement and what its rows record of the workflow: the documents required,
    received and still missing, whether it is invoiced, and its deliverable.

    Limitation: the orchestration's custom status (which review step waits) is not read
    here; the function-key status endpoint shows it, and a review decision for another step
    answers 409 naming the step waited for.

    Raises:
        NotFound: no such engagement, or not one the caller may see.
    """
    missing = NotFound(f"engagement {raw_id!r} not found")
    engagement_id = _engagement_id(raw_id)
    row = conn.execute(
        f"SELECT {_ENGAGEMENT_COLUMNS}, stripe_invoice_id, deliverable FROM engagements"
        " WHERE id = %s AND client_id = %s",
        (engagement_id, client_id),
    ).fetchone()
    if row is None:
        raise missing
    received = [
        m.ReceivedDocument(document_id=r[0], doc_class=r[1], received_at=r[2])
        for r in conn.execute(
            "SELECT document_id, doc_class, received_at FROM engagement_documents"
            " WHERE engagement_id = %s ORDER BY received_at, document_id",
            (engagement_id,),
        ).fetchall()
    ]
    required = list(engagement_type(row[1]).required_documents)
    met = {requirement_met_by(d.doc_class, tuple(required)) for d in received}
    return m.Engagement(
        **_engagement(row).model_dump(),
        workflow=m.WorkflowStatus(
            required_documents=required,
            missing_documents=[need for need in required if need not in met],
            received_documents=received,
            invoiced=row[8] is not None,
            deliverable=row[9],
        ),
    )
