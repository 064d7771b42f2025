"""QuickBooks on the running app: connect through Intuit's redirect, then a push queued over
HTTP is run by the sync consumer against the fake QuickBooks API."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import psycopg
import pytest

from tests.e2e.conftest import FUNCTION_KEY, App, Devhost
from tests.quickbooks_fake import FakeQuickBooks
from tests.quickbooks_support import settings_for

REALM = "9680000000000001"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeQuickBooks]:
    with FakeQuickBooks() as server:
        yield server


@pytest.fixture(scope="module")
def qbo_app(fake: FakeQuickBooks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("devhost-qbo")
    host = Devhost(root, **settings_for(fake, Path(root)))
    try:
        yield host.start()
    finally:
        host.stop()


def _post_entries(app: App, client_id: str, count: int) -> None:
    with psycopg.connect(app.database_url) as conn:
        accounts = dict(
            conn.execute("SELECT code, id FROM accounts WHERE client_id = %s", (client_id,))
        )
        for n in range(count):
            row = conn.execute(
                "INSERT INTO journal_entries (client_id, booked_on, reference, source) "
                "VALUES (%s, %s, %s, 'manual') RETURNING id",
                (client_id, date(2026, 11, 30), f"E2E-{n}"),
            ).fetchone()
            assert row is not None
            for code, amount in (("6000", 1050 + n), ("1000", -(1050 + n))):
                conn.execute(
                    "INSERT INTO journal_lines (entry_id, client_id, account_id, amount_minor, "
                    "currency) VALUES (%s, %s, %s, %s, 'USD')",
                    (row[0], client_id, accounts[code], amount),
                )


def test_connect_then_push_through_the_queue(qbo_app: App, fake: FakeQuickBooks) -> None:
    client_id = qbo_app.create_client(f"QBO e2e {uuid.uuid4().hex[:6]}")
    fake.seed_accounts(REALM)

    with psycopg.connect(qbo_app.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM quickbooks_connections").fetchone() == (0,)
    # What Intuit's consent page would do: redirect back with a code and the realm.
    location = _consent_location(qbo_app, client_id)
    state = parse_qs(urlsplit(location).query)["state"][0]
    query = urlencode({"state": state, "code": fake.authorization_code(REALM), "realmId": REALM})
    status, body = qbo_app.call("GET", f"/api/quickbooks/callback?{query}", key=None)
    assert (status, body["realm_id"], body["status"]) == (200, REALM, "active")

    _post_entries(qbo_app, client_id, 35)
    status, body = qbo_app.call("POST", f"/api/clients/{client_id}/quickbooks/sync")
    assert (status, body) == (202, {"queued": True, "realm_id": REALM})

    deadline = time.monotonic() + 120
    while len(fake.all(REALM, "JournalEntry")) < 35 and time.monotonic() < deadline:
        time.sleep(0.3)
    entries = fake.all(REALM, "JournalEntry")
    assert sorted(e["DocNumber"] for e in entries) == sorted(f"E2E-{n}" for n in range(35))
    first = next(e for e in entries if e["DocNumber"] == "E2E-3")
    assert {Decimal(str(line["Amount"])) for line in first["Line"]} == {Decimal("10.53")}
    # The fake holds a batch before the app records its answer, so wait for the records too.
    while time.monotonic() < deadline:
        status, report = qbo_app.call("GET", f"/api/clients/{client_id}/quickbooks/reconciliation")
        if status != 200 or report["counts"] == {"JournalEntry": {"synced": 35}}:
            break
        time.sleep(0.3)
    assert status == 200 and report["counts"] == {"JournalEntry": {"synced": 35}}


def _consent_location(app: App, client_id: str) -> str:
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(
        f"{app.base_url}/api/quickbooks/connect?client={client_id}",
        headers={"x-functions-key": FUNCTION_KEY},
    )
    try:
        opener.open(request, timeout=60)
    except urllib.error.HTTPError as redirect:
        assert redirect.code == 302
        return str(redirect.headers["Location"])
    raise AssertionError("connect did not redirect")
