"""Document pipeline benchmark: 500 one-to-three-page text PDFs through the blob trigger's
handler to the database (download, hash, checks, text, local classifier, fields, audit,
outbox), against bare text extraction of the same files (the baseline), in the same run.

    python -m bench.documents_bench [--docs 500] [--workers 2]

Both sides use the same number of worker processes; each side's peak RSS is the largest of
its workers'. Starts its own Postgres and Azurite on free ports.
"""

from __future__ import annotations

import argparse
import base64
import io
import multiprocessing
import os
import random
import resource
import socket
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from shared.domain.documents import DOC_CLASSES

REPO = Path(__file__).resolve().parents[1]
TARGET_DOCS_PER_S = 20.0
TARGET_RATIO = 0.5
# Every class but "other", which has no text of its own to classify.
TEXT_CLASSES = tuple(c for c in DOC_CLASSES if c != "other")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_pdfs(count: int, seed: int = 500) -> list[bytes]:
    from tests.documents.labelled import FONTS, LAYOUTS, MAKERS, render

    rng = random.Random(seed)
    pdfs = []
    for index in range(count):
        spec, _ = MAKERS[TEXT_CLASSES[index % len(TEXT_CLASSES)]](rng)
        pdfs.append(
            render(
                spec,
                layout=rng.choice(LAYOUTS),
                font=rng.choice(FONTS),
                rotation=rng.choice((0, 90)),
                pages=1 + index % 3,
            )
        )
    return pdfs


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def extract_only(data: bytes) -> float:
    """The baseline: the text of every page, nothing else."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    for page in reader.pages:
        page.extract_text()
    return _peak_rss_mb()


def full_pipeline(item: tuple[str, bytes, str]) -> float:
    """What the blob trigger's handler does for one dropped file, handed its bytes and
    ETag as the Functions host hands them."""
    import azure.functions as func

    from functions.documents import document_dropped

    blob_name, data, etag = item
    document_dropped(
        func.blob.InputStream(
            name=f"documents/{blob_name}", data=data, blob_properties={"ETag": etag}
        )
    )
    return _peak_rss_mb()


def _run(fn, items: list, workers: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    # Spawned, not forked: no worker shares the parent's database or storage connections.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Warm the workers (imports, connections) before the clock starts.
        list(pool.map(fn, items[:workers]))
        started = time.perf_counter()
        peaks = list(pool.map(fn, items[workers:], chunksize=4))
        elapsed = time.perf_counter() - started
    return elapsed, max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from devhost import services as local

    with tempfile.TemporaryDirectory(prefix="documents-bench-") as tmp:
        root = Path(tmp)
        with (
            local.start_postgres(root / "pg", port=free_port(), fsync=False) as pg,
            local.start_azurite(
                root / "azurite", blob_port=free_port(), queue_port=free_port()
            ) as az,
        ):
            local.apply_migrations(pg.url, REPO / "migrations")
            os.environ.update(
                {
                    "DATABASE_URL": pg.url,
                    "AzureWebJobsStorage": az.connection_string,
                    "DOCUMENTS_FIELD_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                    "LOG_LEVEL": "WARNING",
                }
            )
            from shared.adapters import blob
            from shared.config import DOCUMENTS_CONTAINER
            from shared.services import clients

            client_id = clients.create_client(clients.create_firm("Bench firm"), "Bench client")
            pdfs = make_pdfs(args.docs + args.workers)
            from azure.storage.blob import BlobServiceClient

            container = BlobServiceClient.from_connection_string(
                az.connection_string
            ).get_container_client(DOCUMENTS_CONTAINER)
            blob.upload(DOCUMENTS_CONTAINER, "bench/created", b"", content_type="text/plain")
            names = []
            for index, data in enumerate(pdfs):
                name = f"{client_id}/{index:04d}-{uuid.uuid4().hex[:6]}.pdf"
                etag = container.get_blob_client(name).upload_blob(data)["etag"]
                names.append((name, data, str(etag).strip('"')))
            pages = sum(1 + i % 3 for i in range(args.workers, len(pdfs)))

            base_s, base_rss = _run(extract_only, pdfs, args.workers)
            full_s, full_rss = _run(full_pipeline, names, args.workers)

            stored = _count_documents(pg.url, client_id)

    base_rate, full_rate = args.docs / base_s, args.docs / full_s
    ratio = full_rate / base_rate
    print(f"documents: {args.docs} PDFs, {pages} pages, {args.workers} worker processes")
    print(
        f"  baseline (text extraction only): {base_rate:8.1f} docs/s  peak RSS {base_rss:6.0f} MB"
    )
    print(
        f"  full pipeline (trigger to db):   {full_rate:8.1f} docs/s  peak RSS {full_rss:6.0f} MB"
        f"  target >= {TARGET_DOCS_PER_S:.0f} docs/s: {_verdict(full_rate >= TARGET_DOCS_PER_S)}"
    )
    print(
        f"  ratio full / baseline: {ratio:.2f}"
        f"  target >= {TARGET_RATIO}: {_verdict(ratio >= TARGET_RATIO)}"
    )
    print(f"  documents stored: {stored} of {len(names)}")
    if stored != len(names):
        sys.exit("some documents were not stored")


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _count_documents(database_url: str, client_id: uuid.UUID) -> int:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM documents WHERE client_id = %s", (client_id,)
        ).fetchone()
    return int(row[0]) if row else 0


if __name__ == "__main__":
    main()
