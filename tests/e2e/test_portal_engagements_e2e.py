"""An engagement driven through the portal API on the running host: an advisor with a bearer
token starts it, rejects a review with a comment, approves both reviews, and the workflow
goes on to invoicing; a client user is refused, and every decision is audited. Decisions sent
at once (a double click, or reviews of several engagements of one client) are each answered,
with the host serving meanwhile."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from shared.services import engagements
from tests.conftest import REPO
from tests.e2e.conftest import App, Devhost
from tests.e2e.fake_stripe import FakeStripe


@pytest.fixture(scope="module")
def stripe_fake() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, stripe_fake: FakeStripe) -> Iterator[Devhost]:
    root = tmp_path_factory.mktemp("portal-engagements")
    devhost = Devhost(
        root,
        APP_ENVIRONMENT="development",
        PORTAL_LOCAL_ISSUER="true",
        PORTAL_LOCAL_KEY_DIR=str(root / "issuer"),
        STRIPE_API_KEY="sk_test_e2e",
        STRIPE_API_BASE=stripe_fake.url,
        ENGAGEMENT_REMINDER_INTERVAL_S="60",
        ENGAGEMENT_EVENT_RELAY_SCHEDULE="* * * * * *",
        DEVHOST_DURABLE_POLL_INTERVAL_S="0.05",
        # Bounds how long a blocked statement could hold the host (the default is 600 s).
        DB_STATEMENT_TIMEOUT_S="30",
        DB_POOL_TIMEOUT_S="30",
    )
    devhost.start()
    try:
        yield devhost
    finally:
        devhost.stop()


def _token(host: Devhost, role: str, client_id: str) -> str:
    """A bearer token of the local issuer, from the CLI a developer uses."""
    found = subprocess.run(
        [
            sys.executable,
            "-m",
            "devhost",
            "token",
            "--role",
            role,
            "--client",
            client_id,
            "--user",
            f"{role}-{uuid.uuid4().hex[:6]}@example.test",
        ],
        cwd=REPO,
        env=host.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout.strip()


def _portal(app: App, token: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    return app.call(
        "POST",
        f"/api/v1/{path}",
        body,
        key=None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def _wait_step(app: App, engagement_id: str, step: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    body: Any = {}
    while time.monotonic() < deadline:
        status, body = app.call("GET", f"/api/engagements/{engagement_id}")
        if status == 200 and (body.get("custom_status") or {}).get("step") == step:
            return
        time.sleep(0.1)
    raise AssertionError(f"engagement never reached {step}; last status {body}")


def _classified(app: App, client_id: str, doc_class: str) -> None:
    with psycopg.connect(app.database_url) as conn:
        engagements.notify_document_classified(
            uuid.UUID(client_id), f"doc-{uuid.uuid4().hex[:8]}", doc_class, conn
        )


def test_an_advisor_runs_an_engagement_through_the_portal(host: Devhost) -> None:
    app = host.app
    client_id = app.create_client("Portal engagement client")
    advisor = _token(host, "advisor", client_id)
    client_user = _token(host, "client_user", client_id)
    base = f"clients/{client_id}/engagements"
    start = {"engagement_type": "individual_tax_return", "period": "2026"}

    # A client user may not start one; the advisor starts it, twice, and gets one.
    status, refused = _portal(app, client_user, base, start)
    assert status == 403, refused
    status, first = _portal(app, advisor, base, start)
    assert status == 202, first
    status, again = _portal(app, advisor, base, start)
    assert status == 202, again
    assert (first["created"], again["created"]) == (True, False)
    assert first["instance_id"] == again["instance_id"] == f"engagement-{first['id']}"
    engagement_id = first["id"]

    # The documents arrive; the preparer rejects with a comment, the W-2 is asked again.
    _wait_step(app, engagement_id, "collecting_documents")
    for doc_class in ("w2", "1099-nec"):
        _classified(app, client_id, doc_class)
    _wait_step(app, engagement_id, "review:preparer_review")
    review = f"{base}/{engagement_id}/review"
    status, refused = _portal(
        app, client_user, review, {"step": "preparer_review", "decision": "approve"}
    )
    assert status == 403, refused
    status, answer = _portal(
        app,
        advisor,
        review,
        {
            "step": "preparer_review",
            "decision": "reject",
            "comment": "W-2 is blurred",
            "documents": ["w2"],
        },
    )
    assert status == 202, answer
    _wait_step(app, engagement_id, "collecting_documents")
    _classified(app, client_id, "w2")

    # Both reviews approve; a second click on the same review, and a stale decision on a
    # step already passed, are conflicts and are not audited.
    _wait_step(app, engagement_id, "review:preparer_review")
    approve = {"step": "preparer_review", "decision": "approve"}
    status, _ = _portal(app, advisor, review, approve)
    assert status == 202
    status, twice = _portal(app, advisor, review, approve)
    assert status == 409, twice
    _wait_step(app, engagement_id, "review:partner_review")
    status, stale = _portal(
        app, advisor, review, {"step": "preparer_review", "decision": "approve"}
    )
    assert status == 409
    assert stale["detail"] == (
        f"engagement {engagement_id} is waiting for review step 'partner_review',"
        " not 'preparer_review'"
    )
    status, _ = _portal(app, advisor, review, {"step": "partner_review", "decision": "approve"})
    assert status == 202
    _wait_step(app, engagement_id, "awaiting_payment")

    with psycopg.connect(app.database_url) as conn:
        audited = conn.execute(
            "SELECT action, details->>'step', details->>'comment' FROM audit_log"
            " WHERE subject = %s AND action LIKE 'engagement.%%' ORDER BY id",
            (engagement_id,),
        ).fetchall()
        actors = conn.execute(
            "SELECT DISTINCT actor FROM audit_log WHERE subject = %s"
            " AND action LIKE 'engagement.review.%%'",
            (engagement_id,),
        ).fetchall()
    assert audited == [
        ("engagement.opened", None, None),
        ("engagement.review.reject", "preparer_review", "W-2 is blurred"),
        ("engagement.review.approve", "preparer_review", ""),
        ("engagement.review.approve", "partner_review", ""),
        ("engagement.invoiced", None, None),
    ]
    assert len(actors) == 1 and actors[0][0].startswith("user:")


def test_a_double_click_on_a_review_is_one_202_and_one_409(host: Devhost) -> None:
    app = host.app
    client_id = app.create_client("Double click client")
    advisor = _token(host, "advisor", client_id)
    base = f"clients/{client_id}/engagements"
    status, started = _portal(
        app, advisor, base, {"engagement_type": "individual_tax_return", "period": "2026"}
    )
    assert status == 202, started
    engagement_id = started["id"]
    _wait_step(app, engagement_id, "collecting_documents")
    for doc_class in ("w2", "1099-nec"):
        _classified(app, client_id, doc_class)
    _wait_step(app, engagement_id, "review:preparer_review")

    review = f"{base}/{engagement_id}/review"
    approve = {"step": "preparer_review", "decision": "approve"}
    barrier = threading.Barrier(2)
    results: list[tuple[int, Any]] = []

    def click() -> None:
        barrier.wait()
        results.append(_portal(app, advisor, review, approve))

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    # Meanwhile an unrelated request to the same host is served.
    status, _ = app.call("GET", f"/api/engagements/{engagement_id}")
    for thread in threads:
        thread.join(timeout=120)

    # A host whose loop waits on the chain lock ends both at the statement timeout: 503s.
    assert (sorted(r[0] for r in results), status) == ([202, 409], 200), results


def test_reviews_of_one_client_at_once_are_all_accepted(
    host: Devhost,
) -> None:
    app = host.app
    client_id = app.create_client("Many reviews client")
    advisor = _token(host, "advisor", client_id)
    base = f"clients/{client_id}/engagements"
    ids = []
    for period in ("2021", "2022", "2023", "2024", "2025", "2026", "2027", "2028"):
        status, started = _portal(
            app, advisor, base, {"engagement_type": "individual_tax_return", "period": period}
        )
        assert status == 202, started
        ids.append(started["id"])
    for engagement_id in ids:
        _wait_step(app, engagement_id, "collecting_documents")
    # Each classified document is told to every open engagement of the client.
    for doc_class in ("w2", "1099-nec"):
        _classified(app, client_id, doc_class)
    for engagement_id in ids:
        _wait_step(app, engagement_id, "review:preparer_review")

    approve = {"step": "preparer_review", "decision": "approve"}
    barrier = threading.Barrier(len(ids))
    results: list[tuple[int, Any]] = []

    def click(engagement_id: str) -> None:
        barrier.wait()
        results.append(_portal(app, advisor, f"{base}/{engagement_id}/review", approve))

    threads = [threading.Thread(target=click, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [status for status, _ in results] == [202] * len(ids), results
