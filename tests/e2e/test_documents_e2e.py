"""Client documents dropped into Azurite on the running local host: the blob trigger
classifies a W-2 and stores its fields, quarantines an empty file, and links a second copy."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.documents.labelled import MAKERS, render
from tests.e2e.conftest import App, Devhost

WAIT_S = 120


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    key = base64.urlsafe_b64encode(b"e" * 32).decode()
    devhost = Devhost(tmp_path_factory.mktemp("documents-host"), DOCUMENTS_FIELD_KEY=key)
    try:
        yield devhost.start()
    finally:
        devhost.stop()


def wait_for_intake(app: App, blob_name: str) -> tuple[str, str | None, str | None]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with psycopg.connect(app.database_url) as conn:
            row = conn.execute(
                "SELECT i.outcome, i.reason, d.doc_class FROM document_intake i"
                " LEFT JOIN documents d ON d.id = i.document_id WHERE i.blob_name = %s",
                (blob_name,),
            ).fetchone()
        if row is not None:
            return row[0], row[1], row[2]
        time.sleep(0.2)
    raise AssertionError(f"{blob_name} was not taken in within {WAIT_S} s")


def test_dropped_documents_are_classified_quarantined_and_linked(host):
    client = host.create_client("Documents client")
    spec, truth = MAKERS["w2"](random.Random(42))
    w2 = render(spec, layout="boxes", font="Helvetica", rotation=90, pages=2)

    host.drop("documents", f"{client}/2025/w2.pdf", w2)
    host.drop("documents", f"{client}/empty.pdf", b"")
    assert wait_for_intake(host, f"{client}/2025/w2.pdf") == ("new", None, "w2")
    assert wait_for_intake(host, f"{client}/empty.pdf") == (
        "quarantined",
        "the file is empty (0 bytes)",
        None,
    )
    host.drop("documents", f"{client}/w2-again.pdf", w2)
    assert wait_for_intake(host, f"{client}/w2-again.pdf") == ("duplicate", None, "w2")

    with psycopg.connect(host.database_url) as conn:
        wages = conn.execute(
            "SELECT f.amount_minor FROM document_fields f JOIN documents d ON d.id = f.document_id"
            " WHERE d.client_id = %s AND f.name = 'wages'",
            (client,),
        ).fetchone()
    assert wages == (int(truth["wages"].replace(".", "")),)
    log = host.log_path.read_text(errors="replace")
    assert truth["employer_ein"] not in log
