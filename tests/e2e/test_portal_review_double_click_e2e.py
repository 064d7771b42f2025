"""Two decisions on the same review sent at once (a double click) on the running host: one is
taken, the other answers 409 at once, and the host keeps serving meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Devhost
from tests.e2e.fake_stripe import FakeStripe
from tests.e2e.test_portal_engagements_e2e import _classified, _portal, _token, _wait_step

STATEMENT_TIMEOUT_S = 8


@pytest.fixture(scope="module")
def stripe_fake() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, stripe_fake: FakeStripe) -> Iterator[Devhost]:
    root = tmp_path_factory.mktemp("portal-double-click")
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
        # Bounds how long a blocked statement can hold the host (the default is 600 s).
        DB_STATEMENT_TIMEOUT_S=str(STATEMENT_TIMEOUT_S),
        DB_POOL_TIMEOUT_S=str(STATEMENT_TIMEOUT_S),
    )
    devhost.start()
    try:
        yield devhost
    finally:
        devhost.stop()


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
