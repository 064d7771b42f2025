"""Portal fixtures: the local issuer's tokens for users of each role, seeded books, and a
way to send a request to the portal's functions as the host would."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
import psycopg
import pytest

from tests.conftest import free_port
from tests.portal.workflow_support import WorkflowHost

_workflow_host: WorkflowHost | None = None


@pytest.fixture(scope="session")
def workflows(services: dict[str, str]) -> Iterator[WorkflowHost]:
    """The Durable management API that `send` gives the workflow operations' client."""
    global _workflow_host
    host = WorkflowHost(services["DATABASE_URL"], free_port()).start()
    _workflow_host = host
    yield host
    _workflow_host = None
    host.stop()


@pytest.fixture()
def portal(
    services: dict[str, str],
    workflows: WorkflowHost,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:
    """Settings for the portal: the local issuer on, its key in a fresh folder."""
    from shared.config import get_settings
    from shared.services import identity

    monkeypatch.setenv("APP_ENVIRONMENT", "test")
    monkeypatch.setenv("PORTAL_LOCAL_ISSUER", "true")
    monkeypatch.setenv("PORTAL_LOCAL_KEY_DIR", str(tmp_path / "issuer"))
    caches = (get_settings, identity.verifier)
    for cache in caches:
        cache.cache_clear()
    yield
    monkeypatch.undo()
    for cache in caches:
        cache.cache_clear()


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    user_name: str
    token: str


def make_user(firm: uuid.UUID, role: str, client: uuid.UUID | None = None) -> User:
    """Provision a user directly (as SCIM would) and sign a local token for them."""
    from shared.adapters import postgres
    from shared.services import identity

    name = f"{role}-{uuid.uuid4().hex[:8]}@example.test"
    with postgres.transaction() as conn:
        row = conn.execute(
            "INSERT INTO users (firm_id, user_name, role, client_id) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            (firm, name, role, client),
        ).fetchone()
    assert row is not None
    return User(row[0], name, identity.issue_local_token(name))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    method: str,
    path: str,
    token: str | None = None,
    *,
    body: bytes | dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """Send one request to the portal route that matches ``path`` (below ``/api/``)."""
    from functions import portal as api

    for route in {op.route for op in api.OPERATIONS}:
        pattern = "^" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", route) + "$"
        match = re.match(pattern, path)
        if match:
            break
    else:
        raise AssertionError(f"no portal route matches {path}")
    data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    url = f"/api/{path}" + (f"?{urlencode(params)}" if params else "")
    request = func.HttpRequest(
        method=method,
        url=url,
        headers=all_headers,
        params=params or {},
        route_params=match.groupdict(),
        body=data,
    )
    response = dispatch(request, route)
    found = {k.lower(): v for k, v in response.headers.items()}
    found["content-type"] = response.mimetype
    return Answer(response.status_code, found, response.get_body())


def dispatch(request: func.HttpRequest, route: str) -> func.HttpResponse:
    """Hand a request to the portal as the host would: workflow operations on the Durable
    client's event loop, the others as plain calls."""
    from functions import portal as api

    workflow = any(
        op.workflow and op.route == route and op.method == request.method.upper()
        for op in api.OPERATIONS
    )
    if not workflow:
        return api.dispatch(request, route)
    host = _workflow_host
    assert host is not None, "workflow operations need the workflows fixture"
    return host.run(api.dispatch_workflow(request, route, host.client()))


def seed_bank(client: uuid.UUID, count: int, *, start: dt.date = dt.date(2026, 1, 1)) -> list[int]:
    """Post ``count`` bank transactions (alternating -12.34 expense and +100.00 income) as an
    import would: each a balanced entry against the uncategorised-like accounts 6000/4900."""
    from shared.adapters import postgres

    with postgres.transaction() as conn:
        accounts = dict(
            conn.execute(
                "SELECT code, id FROM accounts WHERE client_id = %s", (client,)
            ).fetchall()
        )
        imp = conn.execute(
            "INSERT INTO ledger_imports (client_id, blob_name, blob_version, sha256, size_bytes,"
            " format, status, rows_read, imported, started_at, report)"
            " VALUES (%s, %s, 'v1', %s, 10, 'bank_csv', 'imported', %s, %s, now(), %s)"
            " RETURNING id",
            (
                client,
                f"{client}/{uuid.uuid4().hex}.csv",
                "0" * 64,
                count,
                count,
                json.dumps({"rows_read": count}),
            ),
        ).fetchone()
        assert imp is not None
        ids = []
        for n in range(count):
            amount = -1234 if n % 2 == 0 else 10000
            other = accounts["6000"] if amount < 0 else accounts["4900"]
            day = start + dt.timedelta(days=n)
            entry = conn.execute(
                "INSERT INTO journal_entries (client_id, booked_on, memo, source, import_id)"
                " VALUES (%s, %s, %s, 'bank_import', %s) RETURNING id",
                (client, day, f"txn {n}", imp[0]),
            ).fetchone()
            assert entry is not None
            conn.execute(
                "INSERT INTO journal_lines"
                " (entry_id, client_id, account_id, amount_minor, currency)"
                " VALUES (%s, %s, %s, %s, 'USD'), (%s, %s, %s, %s, 'USD')",
                (entry[0], client, accounts["1000"], amount, entry[0], client, other, -amount),
            )
            txn = conn.execute(
                "INSERT INTO bank_transactions (client_id, account_id, booked_on, amount_minor,"
                " currency, description, dedupe_key, import_id, entry_id)"
                " VALUES (%s, %s, %s, %s, 'USD', %s, %s, %s, %s) RETURNING id",
                (
                    client,
                    accounts["1000"],
                    day,
                    amount,
                    f'=HYPERLINK("x") {n}',
                    f"row:{n}",
                    imp[0],
                    entry[0],
                ),
            ).fetchone()
            assert txn is not None
            ids.append(int(txn[0]))
    return ids


def owner_conn(services: dict[str, str]) -> psycopg.Connection:
    return psycopg.connect(services["DATABASE_URL"], autocommit=True)
