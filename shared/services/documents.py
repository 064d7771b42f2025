"""Client documents: intake of a blob from ``documents/<client id>/<name>`` (hash, checks,
quarantine), its classification and key fields, the review list and an advisor's review,
and the ``document.classified`` event for the engagement that waits on it.

A document is written whole in one transaction with its fields, its intake record, its audit
row and its outbox event; a bad file leaves only its quarantine copy and intake record.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, cast

import psycopg

from shared import telemetry
from shared.adapters import blob, postgres
from shared.config import DOCUMENTS_CONTAINER, DOCUMENTS_QUARANTINE_CONTAINER, get_settings
from shared.documents import sealing
from shared.documents.inspect import Inspected, Unreadable, inspect
from shared.documents.local import classify_text, parse_date
from shared.documents.text import page_texts
from shared.domain.documents import (
    DOC_CLASSES,
    SENSITIVE_FIELDS,
    Classification,
    ExtractedField,
    FieldKind,
    mask,
)
from shared.domain.money import exponent, normalise_currency, to_minor
from shared.errors import NotFound, ValidationError
from shared.messaging import DOCUMENT_EVENTS_QUEUE, OutboundMessage
from shared.services import audit, engagements, outbox

log = logging.getLogger(__name__)

ACTOR = "document-intake"
EVENT_CLASSIFIED = "document.classified"


@dataclass(frozen=True, slots=True)
class IntakeOutcome:
    """What intake did with one blob: ``new``, ``duplicate``, ``quarantined`` or
    ``already_processed`` (this blob version was handled before)."""

    status: str
    document_id: uuid.UUID | None = None
    doc_class: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentSummary:
    """A classified document as the engagement code sees it."""

    id: uuid.UUID
    client_id: uuid.UUID
    doc_class: str
    status: str
    confidence: float
    blob_name: str


class _AlreadyDone(Exception):
    """This blob version has an intake record already (a concurrent or repeated run)."""


def intake_blob(blob_name: str) -> IntakeOutcome:
    """Take in the blob ``documents/<blob_name>``, reading it from storage; see
    ``intake_bytes``, which the blob trigger calls with the bytes it was handed.

    Raises:
        UpstreamError: storage or the database failed; the caller should retry.
    """
    buffer = io.BytesIO()
    try:
        info = blob.download(DOCUMENTS_CONTAINER, blob_name, buffer)
    except NotFound:
        log.warning("document blob gone before intake: %s", blob_name, extra={"blob": blob_name})
        return IntakeOutcome("already_processed")
    return intake_bytes(blob_name, buffer.getvalue(), info.etag)


def intake_bytes(blob_name: str, data: bytes, version: str) -> IntakeOutcome:
    """Take in one version of the blob ``documents/<blob_name>``: record it, classify it and
    store its fields, or link it to the client's document with the same bytes, or
    quarantine it.

    Safe to call again for the same blob version: the second call changes nothing.

    Args:
        blob_name: the path inside the container, ``<client id>/<file name>``.
        data: the blob's exact bytes.
        version: the blob version's ETag.

    Raises:
        UpstreamError: storage or the database failed; the caller should retry.
    """
    sha256 = hashlib.sha256(data).hexdigest()
    version = version.strip('"')
    record: dict[str, Any] = {
        "blob_name": blob_name,
        "blob_version": version,
        "sha256": sha256,
        "size_bytes": len(data),
    }
    settings = get_settings()
    try:
        client_id = _client_id_of(blob_name)
        done, client_known, duplicate = _look_up(
            blob_name, record["blob_version"], client_id, sha256
        )
        if done:
            return IntakeOutcome("already_processed")
        if not client_known:
            raise Unreadable(f"unknown client {client_id}")
        if duplicate is not None:
            return _link_duplicate(client_id, duplicate, record)
        checked = inspect(
            data, max_bytes=settings.documents_max_bytes, max_pages=settings.documents_max_pages
        )
    except Unreadable as exc:
        return _quarantine(blob_name, data, record, str(exc))
    classification = classify(data, checked)
    return _store(client_id, record, checked, classification)


def classify(data: bytes, checked: Inspected) -> Classification:
    """Classify a checked file: by Document Intelligence when its endpoint is set, else by
    the local classifier."""
    settings = get_settings()
    if settings.docintel_endpoint:
        from shared.adapters import docintel

        return docintel.classify(data, checked.media_type)
    return classify_text(page_texts(data, checked.media_type, checked.reader))


def _client_id_of(blob_name: str) -> uuid.UUID:
    client_part, sep, file_name = blob_name.partition("/")
    if not sep or not file_name:
        raise Unreadable(
            f"blob {blob_name!r} is not in a client folder; drop files at "
            f"{DOCUMENTS_CONTAINER}/<client id>/<file name>"
        )
    try:
        return uuid.UUID(client_part)
    except ValueError:
        raise Unreadable(f"unknown client {client_part!r}: not a client id") from None


def _look_up(
    blob_name: str, version: str, client_id: uuid.UUID, sha256: str
) -> tuple[bool, bool, tuple[uuid.UUID, str] | None]:
    """Whether this blob version was handled, whether the client exists, and the client's
    document with the same bytes, in one round trip."""
    with postgres.transaction() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM document_intake"
            "               WHERE blob_name = %(name)s AND blob_version = %(version)s),"
            " EXISTS (SELECT 1 FROM clients WHERE id = %(client)s),"
            " d.id, d.doc_class"
            " FROM (SELECT 1) one LEFT JOIN documents d"
            " ON d.client_id = %(client)s AND d.sha256 = %(sha)s",
            {"name": blob_name, "version": version, "client": client_id, "sha": sha256},
        ).fetchone()
    assert row is not None
    return bool(row[0]), bool(row[1]), ((row[2], row[3]) if row[2] is not None else None)


def _intake_exists(blob_name: str, version: str) -> bool:
    with postgres.transaction() as conn:
        row = conn.execute(
            "SELECT 1 FROM document_intake WHERE blob_name = %s AND blob_version = %s",
            (blob_name, version),
        ).fetchone()
    return row is not None


def _existing_document(client_id: uuid.UUID, sha256: str) -> tuple[uuid.UUID, str] | None:
    with postgres.transaction() as conn:
        row = conn.execute(
            "SELECT id, doc_class FROM documents WHERE client_id = %s AND sha256 = %s",
            (client_id, sha256),
        ).fetchone()
    return (row[0], row[1]) if row else None


def _link_duplicate(
    client_id: uuid.UUID, existing: tuple[uuid.UUID, str], record: dict[str, Any]
) -> IntakeOutcome:
    document_id, doc_class = existing
    try:
        with postgres.transaction() as conn:
            _insert_intake(conn, client_id, record, "duplicate", document_id=document_id)
            audit.record(
                conn,
                actor=ACTOR,
                action="document.duplicate",
                client_id=client_id,
                subject=f"{DOCUMENTS_CONTAINER}/{record['blob_name']}",
                details={"document_id": str(document_id), "sha256": record["sha256"]},
            )
    except _AlreadyDone:
        return IntakeOutcome("already_processed")
    log.info(
        "document %s: same bytes as document %s",
        record["blob_name"],
        document_id,
        extra={"blob": record["blob_name"], "document_id": str(document_id)},
    )
    return IntakeOutcome("duplicate", document_id, doc_class)


def _quarantine(blob_name: str, data: bytes, record: dict[str, Any], reason: str) -> IntakeOutcome:
    # The copy and its reason land first: a failure before the commit leaves the
    # original in place for a retry, and a retry writes the same copy again.
    report = {**record, "reason": reason}
    blob.upload(
        DOCUMENTS_QUARANTINE_CONTAINER, blob_name, data, content_type="application/octet-stream"
    )
    blob.upload(
        DOCUMENTS_QUARANTINE_CONTAINER,
        f"{blob_name}.reason.json",
        json.dumps(report, indent=2).encode(),
        content_type="application/json",
    )
    client_id = _client_or_none(blob_name)
    try:
        with postgres.transaction() as conn:
            _insert_intake(
                conn,
                client_id,
                record,
                "quarantined",
                reason=reason,
                quarantine_blob=f"{DOCUMENTS_QUARANTINE_CONTAINER}/{blob_name}",
            )
            audit.record(
                conn,
                actor=ACTOR,
                action="document.quarantined",
                client_id=client_id,
                subject=f"{DOCUMENTS_CONTAINER}/{blob_name}",
                details={"reason": reason, "sha256": record["sha256"]},
            )
    except _AlreadyDone:
        return IntakeOutcome("already_processed")
    blob.delete(DOCUMENTS_CONTAINER, blob_name)
    log.warning("document %s quarantined: %s", blob_name, reason, extra={"blob": blob_name})
    return IntakeOutcome("quarantined", reason=reason)


def _client_or_none(blob_name: str) -> uuid.UUID | None:
    try:
        client_id = uuid.UUID(blob_name.partition("/")[0])
    except ValueError:
        return None
    with postgres.transaction() as conn:
        row = conn.execute("SELECT id FROM clients WHERE id = %s", (client_id,)).fetchone()
    return client_id if row else None


def _store(
    client_id: uuid.UUID,
    record: dict[str, Any],
    checked: Inspected,
    result: Classification,
) -> IntakeOutcome:
    settings = get_settings()
    status = (
        "classified"
        if result.confidence >= settings.documents_review_threshold
        else "needs_review"
    )
    try:
        with postgres.transaction() as conn:
            row = conn.execute(
                "INSERT INTO documents (client_id, blob_name, sha256, size_bytes, media_type,"
                " page_count, doc_class, confidence, classifier, classifier_version, model_id,"
                " status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (client_id, sha256) DO NOTHING RETURNING id",
                (
                    client_id,
                    record["blob_name"],
                    record["sha256"],
                    record["size_bytes"],
                    checked.media_type,
                    checked.page_count,
                    result.doc_class,
                    result.confidence,
                    result.classifier,
                    result.classifier_version,
                    result.model_id,
                    status,
                ),
            ).fetchone()
            if row is None:
                # The same bytes arrived under another name a moment ago.
                raise _AlreadyDone
            document_id = row[0]
            _insert_fields(conn, client_id, document_id, result.fields, source="classifier")
            _insert_intake(
                conn,
                client_id,
                {**record, "media_type": checked.media_type, "page_count": checked.page_count},
                "new",
                document_id=document_id,
            )
            audit.record(
                conn,
                actor=ACTOR,
                action="document.classified",
                client_id=client_id,
                subject=f"{DOCUMENTS_CONTAINER}/{record['blob_name']}",
                details={
                    "document_id": str(document_id),
                    "sha256": record["sha256"],
                    "size_bytes": record["size_bytes"],
                    "media_type": checked.media_type,
                    "page_count": checked.page_count,
                    "doc_class": result.doc_class,
                    "confidence": result.confidence,
                    "classifier": result.classifier,
                    "classifier_version": result.classifier_version,
                    "status": status,
                },
            )
            _announce(conn, client_id, document_id, result.doc_class, status, revision=0)
    except _AlreadyDone:
        existing = _existing_document(client_id, record["sha256"])
        if existing is not None and not _intake_exists(
            record["blob_name"], record["blob_version"]
        ):
            return _link_duplicate(client_id, existing, record)
        return IntakeOutcome("already_processed")
    log.info(
        "document %s classified as %s (%s, confidence %.2f)",
        record["blob_name"],
        result.doc_class,
        result.classifier,
        result.confidence,
        extra={"blob": record["blob_name"], "document_id": str(document_id)},
    )
    telemetry.record_classification_confidence(result.doc_class, result.confidence)
    return IntakeOutcome("new", document_id, result.doc_class)


def _insert_intake(
    conn: psycopg.Connection,
    client_id: uuid.UUID | None,
    record: dict[str, Any],
    outcome: str,
    *,
    document_id: uuid.UUID | None = None,
    reason: str | None = None,
    quarantine_blob: str | None = None,
) -> None:
    row = conn.execute(
        "INSERT INTO document_intake (client_id, blob_name, blob_version, sha256, size_bytes,"
        " media_type, page_count, outcome, reason, document_id, quarantine_blob)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (blob_name, blob_version) DO NOTHING RETURNING id",
        (
            client_id,
            record["blob_name"],
            record["blob_version"],
            record["sha256"],
            record["size_bytes"],
            record.get("media_type"),
            record.get("page_count"),
            outcome,
            reason,
            document_id,
            quarantine_blob,
        ),
    ).fetchone()
    if row is None:
        raise _AlreadyDone


def _insert_fields(
    conn: psycopg.Connection,
    client_id: uuid.UUID,
    document_id: uuid.UUID,
    fields: tuple[ExtractedField, ...] | list[ExtractedField],
    *,
    source: str,
) -> None:
    key = get_settings().documents_field_key
    rows = []
    for f in fields:
        sealed = last4 = text = None
        if f.kind == "sensitive":
            sealed = sealing.seal(key, f.value, f"{document_id}/{f.name}")
            last4 = mask(f.value)[-4:]
        elif f.kind != "money":
            text = f.value
        rows.append(
            (
                document_id,
                client_id,
                f.name,
                f.kind,
                text,
                f.amount_minor,
                f.currency,
                sealed,
                last4,
                f.confidence,
                f.page,
                source,
            )
        )
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO document_fields (document_id, client_id, name, kind, value_text,"
                " amount_minor, currency, value_encrypted, last4, confidence, page, source)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (document_id, name) DO UPDATE SET kind = excluded.kind,"
                " value_text = excluded.value_text, amount_minor = excluded.amount_minor,"
                " currency = excluded.currency, value_encrypted = excluded.value_encrypted,"
                " last4 = excluded.last4, confidence = excluded.confidence,"
                " page = excluded.page, source = excluded.source",
                rows,
            )


def _announce(
    conn: psycopg.Connection,
    client_id: uuid.UUID,
    document_id: uuid.UUID,
    doc_class: str,
    status: str,
    *,
    revision: int,
) -> None:
    """Record the ``document.classified`` event in the outbox; the relay sends it.

    In the same transaction, the client's open engagements waiting for this class are told,
    unless the document still waits for an advisor's review: a guess below the confidence
    threshold does not count as the document having arrived.
    """
    if status != "needs_review":
        engagements.notify_document_classified(client_id, str(document_id), doc_class, conn)
    body = {
        "type": EVENT_CLASSIFIED,
        "client_id": str(client_id),
        "document_id": str(document_id),
        "doc_class": doc_class,
        "status": status,
        "revision": revision,
    }
    outbox.add(
        conn,
        DOCUMENT_EVENTS_QUEUE,
        OutboundMessage(
            message_id=f"{EVENT_CLASSIFIED}:{document_id}:{revision}",
            body=json.dumps(body, sort_keys=True).encode(),
            subject=EVENT_CLASSIFIED,
            application_properties={"client_id": str(client_id), "doc_class": doc_class},
        ),
    )


_DOCUMENT_COLUMNS = (
    "id, client_id, blob_name, sha256, size_bytes, media_type, page_count, doc_class,"
    " confidence, classifier, classifier_version, model_id, status, reviewed_by, reviewed_at,"
    " created_at"
)


def get_document(client_id: uuid.UUID, document_id: uuid.UUID) -> dict[str, Any]:
    """One document with its fields, sensitive values masked to their last four; ``load``
    does the same inside the caller's transaction.

    Raises:
        NotFound: no such document for this client.
    """
    with postgres.transaction() as conn:
        return load(conn, client_id, document_id)


def load(conn: psycopg.Connection, client_id: uuid.UUID, document_id: uuid.UUID) -> dict[str, Any]:
    """``get_document`` inside the caller's transaction; sensitive values are never
    decrypted here.

    Raises:
        NotFound: no such document for this client, or not one the transaction may see.
    """
    return _load(conn, client_id, document_id, lock=False)


def review_list(client_id: uuid.UUID) -> list[dict[str, Any]]:
    """The client's documents waiting for review (confidence below the threshold), oldest
    first, each with its fields (masked)."""
    with postgres.transaction() as conn:
        ids = conn.execute(
            "SELECT id FROM documents WHERE client_id = %s AND status = 'needs_review'"
            " ORDER BY created_at, id",
            (client_id,),
        ).fetchall()
        return [_load(conn, client_id, row[0], lock=False) for row in ids]


def classified_documents(
    client_id: uuid.UUID, doc_class: str | None = None
) -> list[DocumentSummary]:
    """The client's documents, oldest first, optionally of one class: what an engagement
    asks when it checks which of its requested documents have arrived."""
    with postgres.transaction() as conn:
        rows = conn.execute(
            "SELECT id, client_id, doc_class, status, confidence, blob_name FROM documents"
            " WHERE client_id = %s AND (%s::text IS NULL OR doc_class = %s)"
            " ORDER BY created_at, id",
            (client_id, doc_class, doc_class),
        ).fetchall()
    return [DocumentSummary(r[0], r[1], r[2], r[3], float(r[4]), r[5]) for r in rows]


def review(
    client_id: uuid.UUID, document_id: uuid.UUID, body: Any, *, actor: str
) -> dict[str, Any]:
    """An advisor confirms or corrects a document's class and fields.

    ``body`` is ``{"doc_class": "...", "fields": {"name": value or null}}``; both keys are
    optional (an empty body confirms). Money fields take ``{"amount": "12.50", "currency":
    "USD"}`` or a decimal string (the field's currency kept); null removes a field. The
    audit row records the class and fields before and after, sensitive values masked.

    Raises:
        ValidationError: the body names an unknown class or a bad value; the message says which.
        NotFound: no such document for this client.
    """
    with postgres.transaction() as conn:
        return review_in(conn, client_id, document_id, body, actor=actor)


def review_in(
    conn: psycopg.Connection,
    client_id: uuid.UUID,
    document_id: uuid.UUID,
    body: Any,
    *,
    actor: str,
) -> dict[str, Any]:
    """``review`` inside the caller's transaction (the portal's, under row-level security).

    Raises:
        ValidationError: the body names an unknown class or a bad value.
        NotFound: no such document for this client, or not one the transaction may see.
    """
    doc_class, changes = _parse_review(body)
    before = _load(conn, client_id, document_id, lock=True)
    kinds = {f["name"]: f for f in before["fields"]}
    new_fields = []
    removed = []
    for name, value in changes.items():
        if value is None:
            removed.append(name)
        else:
            new_fields.append(_reviewed_field(name, value, kinds.get(name)))
    if removed:
        conn.execute(
            "DELETE FROM document_fields WHERE document_id = %s AND name = ANY(%s)",
            (document_id, removed),
        )
    _insert_fields(conn, client_id, document_id, new_fields, source="review")
    revision = conn.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'document.reviewed' AND subject = %s",
        (f"document/{document_id}",),
    ).fetchone()
    conn.execute(
        "UPDATE documents SET doc_class = coalesce(%s, doc_class), status = 'reviewed',"
        " reviewed_by = %s, reviewed_at = now(), updated_at = now() WHERE id = %s",
        (doc_class, actor, document_id),
    )
    after = _load(conn, client_id, document_id, lock=False)
    audit.record(
        conn,
        actor=actor,
        action="document.reviewed",
        client_id=client_id,
        subject=f"document/{document_id}",
        details={"before": _audit_view(before), "after": _audit_view(after)},
    )
    _announce(
        conn,
        client_id,
        document_id,
        after["doc_class"],
        "reviewed",
        revision=1 + int(revision[0] if revision else 0),
    )
    log.info(
        "document %s reviewed by %s",
        document_id,
        actor,
        extra={"document_id": str(document_id)},
    )
    return after


def _parse_review(body: Any) -> tuple[str | None, dict[str, Any]]:
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    unknown = sorted(set(body) - {"doc_class", "fields"})
    if unknown:
        raise ValidationError(f"unknown key(s) {unknown}; allowed: doc_class, fields")
    doc_class = body.get("doc_class")
    if doc_class is not None and doc_class not in DOC_CLASSES:
        raise ValidationError(
            f"doc_class {doc_class!r} is not a document class; allowed: {', '.join(DOC_CLASSES)}"
        )
    fields = body.get("fields") or {}
    if not isinstance(fields, dict):
        raise ValidationError("fields must be an object of field name to value")
    return doc_class, fields


def _reviewed_field(name: str, value: Any, current: dict[str, Any] | None) -> ExtractedField:
    where = f"fields.{name}"
    if not (isinstance(name, str) and name.isidentifier() and name.islower()):
        raise ValidationError(f"{where}: a field name is lower-case letters, digits and _")
    kind = current["kind"] if current else _kind_of(name, value)
    if kind == "money":
        currency = (current or {}).get("currency") or "USD"
        amount = value
        if isinstance(value, dict):
            amount, currency = value.get("amount"), value.get("currency", currency)
        try:
            currency = normalise_currency(str(currency))
            decimal = Decimal(str(amount))
            minor = to_minor(decimal, currency)
        except (InvalidOperation, ValidationError, ValueError) as exc:
            raise ValidationError(
                f"{where}: {amount!r} is not an amount in {currency} ({exc})"
                if isinstance(exc, ValidationError)
                else f'{where}: {amount!r} is not a decimal amount such as "1234.50"'
            ) from None
        text = f"{Decimal(minor).scaleb(-exponent(currency))}"
        return ExtractedField(name, "money", text, 1.0, None, minor, currency)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{where}: expected a non-empty string")
    if kind == "date":
        parsed = parse_date(value)
        if parsed is None:
            raise ValidationError(f'{where}: {value!r} is not a date such as "2025-03-31"')
        return ExtractedField(name, "date", parsed.isoformat(), 1.0)
    return ExtractedField(name, cast(FieldKind, kind), value.strip(), 1.0)


def _kind_of(name: str, value: Any) -> str:
    if name in SENSITIVE_FIELDS:
        return "sensitive"
    return "money" if isinstance(value, dict) else "text"


def _load(
    conn: psycopg.Connection, client_id: uuid.UUID, document_id: uuid.UUID, *, lock: bool
) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE id = %s AND client_id = %s"
        + (" FOR UPDATE" if lock else ""),
        (document_id, client_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"document {document_id} not found")
    names = _DOCUMENT_COLUMNS.replace(" ", "").split(",")
    document: dict[str, Any] = dict(zip(names, row, strict=True))
    document["confidence"] = float(document["confidence"])
    document["fields"] = [
        _field_view(*f)
        for f in conn.execute(
            "SELECT name, kind, value_text, amount_minor, currency, last4, confidence, page,"
            " source FROM document_fields WHERE document_id = %s ORDER BY name",
            (document_id,),
        ).fetchall()
    ]
    return document


def _field_view(
    name: str,
    kind: str,
    text: str | None,
    minor: int | None,
    currency: str | None,
    last4: str | None,
    confidence: Decimal,
    page: int | None,
    source: str,
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "confidence": float(confidence),
        "page": page,
        "source": source,
    }
    if kind == "money" and minor is not None and currency is not None:
        view.update(
            value=str(Decimal(minor).scaleb(-exponent(currency))),
            amount_minor=minor,
            currency=currency,
        )
    elif kind == "sensitive":
        view["value"] = "****" + (last4 or "")
    else:
        view["value"] = text
    return view


def _audit_view(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "doc_class": document["doc_class"],
        "status": document["status"],
        "fields": {f["name"]: f["value"] for f in document["fields"]},
    }
