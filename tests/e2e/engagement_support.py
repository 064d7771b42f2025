"""What the engagement end-to-end tests do as the outside world does it: generated client
PDFs dropped into the documents container, Stripe's signed ``invoice.paid`` posted to the
webhook, and the engagements' steps read back from the task hub."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg

from tests.documents.labelled import MAKERS, render
from tests.e2e.conftest import MASTER_KEY, STRIPE_SECRET, App
from tests.services import stripe_events as se
from tests.webhook_support import stripe_header

# The deployment's own Stripe account: the events below name it, and it is linked to a firm.
OWN_ACCOUNT = "acct_e2eengagement01"
THREADS = 8

T = TypeVar("T")
R = TypeVar("R")


def in_parallel(work: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``work`` over ``items`` from a few threads, as several people or systems at once."""
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(work, items))


def link_own_account(app: App) -> None:
    """Link the deployment's Stripe account to a firm, so billing applies its events."""
    status, created = app.call("POST", "/api/ops/clients", {"name": "Firm books"}, key=MASTER_KEY)
    assert status == 201, created
    status, body = app.call(
        "POST",
        "/api/ops/stripe-accounts",
        {"firm_id": created["firm_id"], "stripe_account_id": OWN_ACCOUNT},
        key=MASTER_KEY,
    )
    assert status in (200, 201), body


def document_pdf(doc_class: str, seed: int) -> bytes:
    """A generated PDF of ``doc_class``; each seed gives other contents."""
    spec, _ = MAKERS[doc_class](random.Random(seed))
    return render(spec, layout="lines", font="Helvetica", rotation=0, pages=1)


def drop_document(app: App, client_id: str, doc_class: str, seed: int) -> str:
    """Drop a client's document as the client's upload does; returns the blob name."""
    name = f"{client_id}/uploads/{doc_class}-{seed}.pdf"
    app.drop("documents", name, document_pdf(doc_class, seed))
    return name


def invoice_paid(invoice: dict[str, Any]) -> dict[str, Any]:
    """Stripe's ``invoice.paid`` event for an invoice the fake Stripe API issued."""
    now = int(time.time())
    obj = se.invoice(
        str(invoice["id"]),
        customer=str(invoice["customer"]),
        currency=str(invoice["currency"]).lower(),
        total=int(invoice["total"]),
        status="paid",
        finalized_at=now,
    )
    return se.event(
        "invoice.paid", obj, event_id=f"evt_{uuid.uuid4().hex}", created=now, account=OWN_ACCOUNT
    )


def post_stripe_event(app: App, event: dict[str, Any], attempts: int = 5) -> dict[str, Any]:
    """POST an event to the webhook signed as Stripe signs it, and again after a 5xx answer
    as Stripe does (a busy host may answer 503); returns the 200 answer."""
    body = (json.dumps(event, indent=2) + "\n").encode()
    for attempt in range(1, attempts + 1):
        headers = {"Stripe-Signature": stripe_header(body, secret=STRIPE_SECRET)}
        status, answer = app.call("POST", "/api/webhooks/stripe", body, key=None, headers=headers)
        if status < 500 or attempt == attempts:
            break
        time.sleep(0.5 * attempt)
    assert status == 200, answer
    return dict(answer)


def steps(app: App, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each instance's custom status (step, what it waits for), read from the task hub."""
    with psycopg.connect(app.database_url) as conn:
        rows = conn.execute(
            "SELECT instance_id, custom_status FROM devhost.durable_instances"
            " WHERE instance_id = ANY(%s)",
            (instance_ids,),
        ).fetchall()
    return {str(iid): json.loads(custom) if custom else {} for iid, custom in rows}


def wait_all_at(
    app: App, instance_ids: list[str], step: str, timeout_s: float
) -> dict[str, dict[str, Any]]:
    """Wait until every instance's custom status names ``step``; returns their statuses."""
    deadline = time.monotonic() + timeout_s
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        found = steps(app, instance_ids)
        if len(found) == len(instance_ids) and all(s.get("step") == step for s in found.values()):
            return found
        time.sleep(0.25)
    behind = {iid: s.get("step") for iid, s in found.items() if s.get("step") != step}
    raise AssertionError(
        f"{len(behind)} of {len(instance_ids)} engagements never reached {step}; "
        f"some of them: {dict(list(behind.items())[:5])}\n" + app.log_path.read_text()[-3000:]
    )


def intake(app: App, blob_name: str, timeout_s: float = 120) -> tuple[str, str | None]:
    """The document intake's outcome and the class it found for ``blob_name``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with psycopg.connect(app.database_url) as conn:
            row = conn.execute(
                "SELECT i.outcome, d.doc_class FROM document_intake i"
                " LEFT JOIN documents d ON d.id = i.document_id WHERE i.blob_name = %s",
                (blob_name,),
            ).fetchone()
        if row is not None:
            return str(row[0]), row[1]
        time.sleep(0.2)
    raise AssertionError(f"{blob_name} was not taken in within {timeout_s} s")
