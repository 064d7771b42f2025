"""The QuickBooks HTTP endpoints: account map, reconciliation, connect and callback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest

from functions import quickbooks
from tests.quickbooks_fake import FakeQuickBooks
from tests.quickbooks_support import configured, connect, post_entries, settings_for


@pytest.fixture()
def fake(services: dict[str, str], tmp_path: Path) -> Iterator[FakeQuickBooks]:
    with FakeQuickBooks() as server, configured(settings_for(server, tmp_path)):
        yield server


def _request(
    method: str,
    url: str,
    body: Any = None,
    route: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> func.HttpRequest:
    return func.HttpRequest(
        method=method,
        url=url,
        body=json.dumps(body).encode() if body is not None else b"",
        route_params=route or {},
        params=params or {},
    )


def _json(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body())


def test_account_map_edit_names_the_bad_entry(fake: FakeQuickBooks, client_id: uuid.UUID) -> None:
    route = {"client_id": str(client_id)}
    bad = {
        "mappings": [
            {"account": "6000", "qbo_account_id": "5"},
            {"account": "9999", "qbo_account_id": "5"},
        ]
    }
    response = quickbooks.account_map(_request("PUT", "/x", bad, route))

    assert response.status_code == 400
    assert _json(response)["detail"] == "mappings[1].account: no ledger account with code '9999'"
    # Nothing of the request was kept.
    listed = _json(quickbooks.account_map(_request("GET", "/x", route=route)))["accounts"]
    assert all(a["qbo_account_id"] is None for a in listed)


def test_account_map_edit_and_reconciliation(fake: FakeQuickBooks, client_id: uuid.UUID) -> None:
    from shared.services import quickbooks_sync

    realm = str(9560000000000000 + uuid.uuid4().int % 10**6)
    connect(fake, client_id, realm)
    route = {"client_id": str(client_id)}
    good = {"mappings": [{"account": "6000", "qbo_account_id": "6", "qbo_account_name": "Opex"}]}
    response = quickbooks.account_map(_request("PUT", "/x", good, route))
    assert response.status_code == 200
    mapped = {a["account"]: a for a in _json(response)["accounts"]}
    assert (mapped["6000"]["qbo_account_id"], mapped["6000"]["matched_by"]) == ("6", "manual")

    post_entries(client_id, [[("6000", 2500), ("1000", -2500)], [("6000", 100), ("1000", -100)]])
    quickbooks_sync.push_client(client_id, sleep=lambda _: None)
    post_entries(client_id, [[("6000", 40), ("1000", -40)]])
    quickbooks_sync.enqueue(client_id)
    report = _json(quickbooks.reconciliation(_request("GET", "/x", route=route)))

    opex = next(a for a in report["accounts"] if a["account"] == "6000")
    assert (opex["ledger_minor"], opex["quickbooks_minor"], opex["difference_minor"]) == (
        2640,
        2600,
        40,
    )
    assert report["waiting"] == 1 and report["failed"] == [] and report["realm_id"] == realm


def test_connect_redirects_with_state_and_callback_stores_the_connection(
    fake: FakeQuickBooks, client_id: uuid.UUID
) -> None:
    realm = str(9570000000000000 + uuid.uuid4().int % 10**6)
    redirect = quickbooks.connect(_request("GET", "/x", params={"client": str(client_id)}))
    assert redirect.status_code == 302
    state = parse_qs(urlsplit(redirect.headers["Location"]).query)["state"][0]

    missing = quickbooks.callback(_request("GET", "/x", params={"state": state}))
    assert missing.status_code == 400
    assert _json(missing)["detail"] == "query code, realmId missing from the callback"

    params = {"state": state, "code": fake.authorization_code(realm), "realmId": realm}
    done = quickbooks.callback(_request("GET", "/x", params=params))
    assert done.status_code == 200
    assert _json(done) == {
        "client_id": str(client_id),
        "realm_id": realm,
        "environment": "sandbox",
        "status": "active",
    }
