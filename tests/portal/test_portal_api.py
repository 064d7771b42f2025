"""The portal API as a signed-in user sees it: roles, pages, statements, re-categorisation,
CSV, limits and problem answers."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from tests.portal.conftest import make_user, seed_bank, send

pytestmark = pytest.mark.usefixtures("portal")


def test_without_a_token_the_answer_is_401_problem() -> None:
    answer = send("GET", "v1/clients")

    assert answer.status == 401
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["detail"] == "a bearer token is required (Authorization: Bearer <JWT>)"
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_unprovisioned_and_deactivated_users_are_refused(firm: uuid.UUID) -> None:
    from shared.adapters import postgres
    from shared.services import identity

    stranger = send("GET", "v1/clients", identity.issue_local_token("nobody@example.test"))
    user = make_user(firm, "advisor")
    with postgres.transaction() as conn:
        conn.execute("UPDATE users SET active = false WHERE id = %s", (user.id,))
    deactivated = send("GET", "v1/clients", user.token)

    assert (stranger.status, stranger.json()["detail"]) == (
        403,
        "user 'nobody@example.test' is not provisioned for this portal",
    )
    assert deactivated.status == 403
    assert deactivated.json()["detail"] == f"user {user.user_name!r} is deactivated"


def test_advisor_creates_renames_and_archives_a_client(firm: uuid.UUID) -> None:
    advisor = make_user(firm, "advisor")

    created = send(
        "POST", "v1/clients", advisor.token, body={"name": "Acme", "base_currency": "EUR"}
    )
    client = created.json()["id"]
    renamed = send("PATCH", f"v1/clients/{client}", advisor.token, body={"name": "Acme Ltd"})
    archived = send("POST", f"v1/clients/{client}/archive", advisor.token)
    chart = send("GET", f"v1/clients/{client}/accounts", advisor.token)
    log = send("GET", f"v1/clients/{client}/audit-log", advisor.token)

    assert created.status == 201
    assert renamed.json()["name"] == "Acme Ltd"
    assert archived.json()["archived_at"] is not None
    assert [a["code"] for a in chart.json()["accounts"]][:2] == ["1000", "1100"]
    actions = [e["action"] for e in log.json()["entries"]]
    assert actions[:3] == ["client.archived", "client.renamed", "client.created.portal"]
    assert all(e["actor"] == f"user:{advisor.id}" for e in log.json()["entries"][:3])


def test_client_user_sees_only_its_client_and_cannot_change_it(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    from shared.services import clients

    clients.create_client(firm, "Sibling client")
    user = make_user(firm, "client_user", client_id)

    listed = send("GET", "v1/clients", user.token)
    rename = send("PATCH", f"v1/clients/{client_id}", user.token, body={"name": "Mine now"})
    create = send("POST", "v1/clients", user.token, body={"name": "Another"})

    assert [c["id"] for c in listed.json()["clients"]] == [str(client_id)]
    assert rename.status == 403
    assert rename.json()["detail"] == "only firm staff may rename a client (firm staff)."
    assert create.status == 403


def test_invalid_body_names_the_field_and_writes_nothing(firm: uuid.UUID) -> None:
    advisor = make_user(firm, "firm_admin")

    answer = send("POST", "v1/clients", advisor.token, body={"name": "X", "base_currency": "usd"})
    unknown = send("POST", "v1/clients", advisor.token, body={"name": "X", "owner": "me"})
    listed = send("GET", "v1/clients", advisor.token)

    assert answer.status == 400
    assert answer.json()["errors"][0]["field"] == "base_currency"
    assert answer.json()["detail"].startswith("field 'base_currency': String should match pattern")
    assert unknown.json()["detail"] == "field 'owner': Extra inputs are not permitted"
    assert listed.json()["clients"] == []


def test_general_ledger_pages_by_keyset_without_gaps_or_repeats(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    seed_bank(client_id, 25)
    advisor = make_user(firm, "advisor")

    seen: list[int] = []
    after = None
    while True:
        params = {"limit": "7", **({"after": after} if after else {})}
        page = send("GET", f"v1/clients/{client_id}/general-ledger", advisor.token, params=params)
        assert page.status == 200
        seen += [line["line_id"] for line in page.json()["lines"]]
        after = page.json()["next"]
        if after is None:
            break

    assert len(seen) == 50 and len(set(seen)) == 50


def test_statements_balance_and_recategorisation_moves_the_amount(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    txns = seed_bank(client_id, 4)  # two expenses of 12.34, two incomes of 100.00
    advisor = make_user(firm, "advisor")
    base = f"v1/clients/{client_id}"

    pnl = send(
        "GET",
        f"{base}/profit-and-loss",
        advisor.token,
        params={"from": "2026-01-01", "to": "2026-01-31"},
    )
    changed = send(
        "PUT",
        f"{base}/bank-transactions/{txns[0]}/category",
        advisor.token,
        body={"account_code": "6100"},
    )
    again = send(
        "PUT",
        f"{base}/bank-transactions/{txns[0]}/category",
        advisor.token,
        body={"account_code": "6100"},
    )
    trial = send("GET", f"{base}/trial-balance", advisor.token, params={"as_of": "2026-12-31"})
    sheet = send("GET", f"{base}/balance-sheet", advisor.token, params={"as_of": "2026-12-31"})
    log = send("GET", f"{base}/audit-log", advisor.token, params={"limit": "1"})

    assert pnl.json()["totals"] == {
        "income": {"USD": "200.00"},
        "expense": {"USD": "24.68"},
        "net": {"USD": "175.32"},
    }
    assert changed.json()["transaction"]["category_code"] == "6100"
    assert changed.json()["reclassification_entry_id"] is not None
    assert again.json()["reclassification_entry_id"] is None
    balances = {line["code"]: line["balance_minor"] for line in trial.json()["lines"]}
    assert balances == {"1000": 17532, "4900": -20000, "6000": 1234, "6100": 1234}
    assert sheet.json()["totals"]["assets"] == {"USD": "175.32"}
    assert log.json()["entries"][0]["action"] == "bank_transaction.recategorised"


def test_recategorising_in_a_closed_period_posts_on_the_first_open_day(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    from shared.adapters import postgres

    txns = seed_bank(client_id, 2)  # dated 2026-01-01 and 2026-01-02
    with postgres.transaction() as conn:
        conn.execute(
            "INSERT INTO period_locks (client_id, locked_through, locked_by)"
            " VALUES (%s, '2026-01-31', 'test')",
            (client_id,),
        )
    advisor = make_user(firm, "advisor")

    changed = send(
        "PUT",
        f"v1/clients/{client_id}/bank-transactions/{txns[0]}/category",
        advisor.token,
        body={"account_code": "6100"},
    )

    assert changed.status == 200, changed.json()
    with postgres.transaction() as conn:
        posted = conn.execute(
            "SELECT booked_on, memo FROM journal_entries WHERE id = %s",
            (changed.json()["reclassification_entry_id"],),
        ).fetchone()
    assert posted == (
        dt.date(2026, 2, 1),
        "re-categorised; the books are closed through 2026-01-31",
    )


def test_recategorisation_to_an_unknown_account_is_refused(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    txns = seed_bank(client_id, 1)
    advisor = make_user(firm, "advisor")

    answer = send(
        "PUT",
        f"v1/clients/{client_id}/bank-transactions/{txns[0]}/category",
        advisor.token,
        body={"account_code": "9999"},
    )

    assert answer.status == 400
    assert answer.json()["detail"] == "field 'account_code': '9999' is not in the chart"


def test_csv_export_neutralises_formula_cells(firm: uuid.UUID, client_id: uuid.UUID) -> None:
    seed_bank(client_id, 2)
    advisor = make_user(firm, "advisor")

    answer = send(
        "GET", f"v1/clients/{client_id}/bank-transactions", advisor.token, params={"format": "csv"}
    )

    lines = answer.body.decode().splitlines()
    assert answer.headers["content-type"].startswith("text/csv")
    assert lines[0] == "id,booked_on,description,currency,amount,bank_account,category"
    assert "'=HYPERLINK" in lines[1] and ",-12.34," in lines[1]
    assert all(not cell.startswith("=") for line in lines for cell in line.split(","))


def test_page_size_over_the_limit_is_refused(firm: uuid.UUID, client_id: uuid.UUID) -> None:
    advisor = make_user(firm, "advisor")

    answer = send(
        "GET", f"v1/clients/{client_id}/general-ledger", advisor.token, params={"limit": "501"}
    )
    bad_cursor = send(
        "GET",
        f"v1/clients/{client_id}/general-ledger",
        advisor.token,
        params={"after": "x' OR 1=1 --"},
    )

    assert (answer.status, answer.json()["detail"]) == (
        400,
        "query parameter 'limit': at most 500 rows a page",
    )
    assert (bad_cursor.status, bad_cursor.json()["detail"]) == (
        400,
        "query parameter 'after': not a cursor this API issued",
    )


def test_oversized_body_gets_413(firm: uuid.UUID) -> None:
    advisor = make_user(firm, "advisor")

    answer = send("POST", "v1/clients", advisor.token, body=b"{" + b" " * 70000 + b"}")

    assert answer.status == 413


def test_sql_in_inputs_is_data(firm: uuid.UUID, client_id: uuid.UUID) -> None:
    advisor = make_user(firm, "advisor")
    hostile = "x'); DROP TABLE clients; --"

    created = send("POST", "v1/clients", advisor.token, body={"name": hostile})
    by_id = send("GET", f"v1/clients/{client_id}' OR '1'='1", advisor.token)
    category = send(
        "PUT",
        f"v1/clients/{client_id}/bank-transactions/1 OR 1=1/category",
        advisor.token,
        body={"account_code": hostile},
    )

    assert created.json()["name"] == hostile
    assert by_id.status == 404 and category.status == 404
    assert send("GET", f"v1/clients/{client_id}", advisor.token).status == 200


def test_rate_limit_answers_429_with_retry_after(
    firm: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.config import get_settings

    monkeypatch.setenv("PORTAL_RATE_LIMIT_PER_MIN", "3")
    get_settings.cache_clear()
    advisor = make_user(firm, "advisor")
    other = make_user(firm, "advisor")

    answers = [send("GET", "v1/clients", advisor.token).status for _ in range(4)]
    limited = send("GET", "v1/clients", advisor.token)
    someone_else = send("GET", "v1/clients", other.token)

    assert answers == [200, 200, 200, 429]
    assert int(limited.headers["retry-after"]) >= 1
    assert someone_else.status == 200


def test_openapi_document_describes_every_operation() -> None:
    from functions import portal as api

    doc = api.openapi_document()

    assert doc["openapi"] == "3.1.0"
    declared = {(f"/api/{op.route}", op.method.lower()) for op in api.OPERATIONS}
    published = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert declared == published
    ledger = doc["paths"]["/api/v1/clients/{client_id}/general-ledger"]["get"]
    assert {p["name"] for p in ledger["parameters"]} >= {"client_id", "limit", "after", "from"}


def test_a_body_not_sent_as_json_gets_415(firm: uuid.UUID) -> None:
    advisor = make_user(firm, "advisor")

    answer = send(
        "POST",
        "v1/clients",
        advisor.token,
        body={"name": "X"},
        headers={"Content-Type": "text/plain"},
    )

    assert answer.status == 415
    assert answer.json()["detail"] == "the body must be sent as application/json, not text/plain"


def test_reference_page_lists_every_operation() -> None:
    import azure.functions as func

    from functions import portal as api

    page = api.api_reference(func.HttpRequest("GET", "/api/docs", body=b"")).get_body().decode()

    assert page.startswith("<!doctype html>")
    assert all(f"id='{op.name}'" in page for op in api.OPERATIONS)


def test_a_nul_character_is_refused_naming_the_field(
    firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    advisor = make_user(firm, "advisor")

    renamed = send("PATCH", f"v1/clients/{client_id}", advisor.token, body={"name": "a\u0000b"})

    assert renamed.status == 400
    assert renamed.json()["detail"] == "field 'name': contains a NUL character"
