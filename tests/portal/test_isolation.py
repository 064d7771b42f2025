"""Per-client isolation: every client-owned table has a policy, the API's role cannot
bypass them, and no route tells another client's ids from ids that do not exist."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest

from tests.portal.conftest import make_user, seed_bank, send

# Columns that say which client a row belongs to.
OWNER_COLUMNS = ("client_id", "books_client_id")


def test_every_table_with_a_client_column_has_row_security(services: dict[str, str]) -> None:
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        rows = conn.execute(
            """
            SELECT DISTINCT c.relname, c.relrowsecurity,
                   EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND NOT a.attisdropped
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
              AND a.attname = ANY(%s)
            ORDER BY 1
            """,
            (list(OWNER_COLUMNS),),
        ).fetchall()

    unprotected = [name for name, enabled, has_policy in rows if not (enabled and has_policy)]
    assert {name for name, _, _ in rows} >= {
        "accounts",
        "journal_lines",
        "audit_log",
        "stripe_invoices",
    }
    assert unprotected == []


def test_the_api_role_cannot_bypass_row_security(services: dict[str, str]) -> None:
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles"
            " WHERE rolname = 'advisoros_api'"
        ).fetchone()
        owned = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
            " WHERE r.rolname = 'advisoros_api'"
        ).fetchone()

    assert row == (False, False, True)
    assert owned == (0,)


def test_the_api_role_sees_only_the_client_its_transaction_names(
    portal: None, firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    from shared.adapters import postgres
    from shared.services import clients

    other_firm = clients.create_firm("Other firm")
    stranger = clients.create_client(other_firm, "Stranger")
    seed_bank(client_id, 2)
    seed_bank(stranger, 3)
    user = uuid.uuid4()

    with postgres.scoped_transaction(firm_id=firm, client_id=client_id, user_id=user) as conn:
        lines = conn.execute("SELECT DISTINCT client_id FROM journal_lines").fetchall()
        firms = conn.execute("SELECT id FROM firms").fetchall()
    with postgres.scoped_transaction(firm_id=firm, client_id=None, user_id=user) as conn:
        staff_view = conn.execute("SELECT DISTINCT client_id FROM bank_transactions").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO accounts (client_id, code, name, type)"
                " VALUES (%s, 'X', 'X', 'asset')",
                (stranger,),
            )

    assert lines == [(client_id,)]
    assert firms == [(firm,)]
    assert staff_view == [(client_id,)]


def _fill(route: str, ids: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: ids[m.group(1)], route)


# A valid body for each operation that takes one, so the refusal is about the ids alone.
BODIES = {
    "ClientUpdate": {"name": "Taken"},
    "CategoryChange": {"account_code": "6100"},
    "DocumentReview": {"doc_class": "receipt"},
    "UploadRequest": {"file_name": "scan.pdf", "content_type": "application/pdf"},
    "EngagementStart": {"engagement_type": "advisory_project", "period": "2027"},
    "ReviewDecision": {"step": "advisor_review", "decision": "approve"},
}


def _client_state(conn: psycopg.Connection, storage: str, client: uuid.UUID) -> list[object]:
    """Everything a route could change for a client: rows, audit trail, blobs."""
    from azure.storage.blob import ContainerClient

    from shared.config import DOCUMENTS_CONTAINER

    queries = [
        "SELECT name, archived_at FROM clients WHERE id = %s",
        "SELECT id, category_account_id FROM bank_transactions WHERE client_id = %s ORDER BY 1",
        "SELECT id, doc_class, status, reviewed_by FROM documents WHERE client_id = %s ORDER BY 1",
        "SELECT document_id, name, source FROM document_fields WHERE client_id = %s ORDER BY 1, 2",
        "SELECT id, status FROM engagements WHERE client_id = %s ORDER BY 1",
        "SELECT seq, action FROM audit_log WHERE client_id = %s ORDER BY seq",
    ]
    state: list[object] = [conn.execute(q, (client,)).fetchall() for q in queries]
    state.append(
        conn.execute(
            "SELECT count(*) FROM outbox WHERE properties->>'client_id' = %s", (str(client),)
        ).fetchone()
    )
    container = ContainerClient.from_connection_string(storage, DOCUMENTS_CONTAINER)
    state.append(sorted(container.list_blob_names(name_starts_with=f"{client}/")))
    return state


def test_another_clients_ids_answer_as_ids_that_do_not_exist(
    services: dict[str, str],
    portal: None,
    firm: uuid.UUID,
    client_id: uuid.UUID,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every route, for a client user and for an advisor of another firm."""
    import base64

    from functions import portal as api
    from shared.config import get_settings
    from shared.services import clients, engagements
    from tests.portal.test_documents_engagements import take_in

    monkeypatch.setattr(
        get_settings(), "documents_field_key", base64.urlsafe_b64encode(b"i" * 32).decode()
    )
    victim = clients.create_client(firm, "Victim")
    victim_txn = seed_bank(victim, 1)[0]
    victim_document = take_in(victim, "other", 12)[0]
    victim_engagement = engagements.open_engagement(victim, "advisory_project", "2026", "test")
    database = psycopg.connect(services["DATABASE_URL"], autocommit=True)
    victim_import = database.execute(
        "SELECT id FROM ledger_imports WHERE client_id = %s", (victim,)
    ).fetchone()
    assert victim_import is not None
    other_firm = clients.create_firm("Elsewhere")
    outsiders = {
        "client user": make_user(firm, "client_user", client_id),
        "advisor of another firm": make_user(other_firm, "firm_admin"),
    }
    real = {
        "client_id": str(victim),
        "transaction_id": str(victim_txn),
        "import_id": str(victim_import[0]),
        "document_id": str(victim_document),
        "engagement_id": str(victim_engagement.id),
    }
    missing = {
        "client_id": str(uuid.uuid4()),
        "transaction_id": "999999999",
        "import_id": "999999999",
        "document_id": str(uuid.uuid4()),
        "engagement_id": str(uuid.uuid4()),
    }
    before = _client_state(database, services["AzureWebJobsStorage"], victim)

    checked = 0
    for who, user in outsiders.items():
        for op in api.OPERATIONS:
            if "{client_id}" not in op.route:
                continue
            path = op.route
            body = BODIES[op.body.__name__] if op.body else None
            params = {"from": "2026-01-01", "to": "2026-12-31"} if "profit" in path else None
            theirs = send(op.method, _fill(path, real), user.token, body=body, params=params)
            nobody = send(op.method, _fill(path, missing), user.token, body=body, params=params)
            context = f"{who}: {op.method} {path}"
            assert theirs.status == nobody.status == 404, context
            assert theirs.json()["detail"].replace(str(victim), "X") == nobody.json()[
                "detail"
            ].replace(missing["client_id"], "X"), context
            checked += 1

    assert checked == 2 * sum("{client_id}" in op.route for op in api.OPERATIONS)
    # Nothing was changed on the way.
    assert _client_state(database, services["AzureWebJobsStorage"], victim) == before
    database.close()


def test_a_client_user_is_refused_every_staff_route_of_its_own_client(
    services: dict[str, str],
    portal: None,
    firm: uuid.UUID,
    client_id: uuid.UUID,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its own ids, so the refusal is the role's: 403, and nothing changed."""
    import base64

    from functions import portal as api
    from shared.config import get_settings
    from shared.services import engagements
    from tests.portal.test_documents_engagements import take_in

    monkeypatch.setattr(
        get_settings(), "documents_field_key", base64.urlsafe_b64encode(b"r" * 32).decode()
    )
    own = {
        "client_id": str(client_id),
        "transaction_id": str(seed_bank(client_id, 1)[0]),
        "document_id": str(take_in(client_id, "other", 12)[0]),
        "engagement_id": str(
            engagements.open_engagement(client_id, "advisory_project", "2026", "test").id
        ),
    }
    user = make_user(firm, "client_user", client_id)
    database = psycopg.connect(services["DATABASE_URL"], autocommit=True)
    before = _client_state(database, services["AzureWebJobsStorage"], client_id)

    refused = {}
    for op in api.OPERATIONS:
        if op.staff_only and "{client_id}" in op.route:
            body = BODIES[op.body.__name__] if op.body else None
            refused[f"{op.method} {op.route}"] = send(
                op.method, _fill(op.route, own), user.token, body=body
            ).status

    assert set(refused.values()) == {403}, refused
    assert {
        "GET v1/clients/{client_id}/document-reviews",
        "POST v1/clients/{client_id}/engagements",
        "POST v1/clients/{client_id}/engagements/{engagement_id}/review",
    } <= set(refused)
    assert _client_state(database, services["AzureWebJobsStorage"], client_id) == before
    database.close()
