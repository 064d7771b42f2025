"""The ledger's rules hold in the database itself, whatever code writes to it."""

from __future__ import annotations

import uuid

import psycopg
import pytest


@pytest.fixture()
def conn(services: dict[str, str]) -> psycopg.Connection:
    with psycopg.connect(services["DATABASE_URL"]) as connection:
        yield connection


def _accounts(conn: psycopg.Connection, client_id: uuid.UUID) -> tuple[int, int]:
    rows = conn.execute(
        "SELECT id FROM accounts WHERE client_id = %s AND code IN ('1000', '4000') ORDER BY code",
        (client_id,),
    ).fetchall()
    return rows[0][0], rows[1][0]


def _entry(conn: psycopg.Connection, client_id: uuid.UUID) -> int:
    row = conn.execute(
        "INSERT INTO journal_entries (client_id, booked_on, source)"
        " VALUES (%s, '2026-01-31', 'manual') RETURNING id",
        (client_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _line(
    conn: psycopg.Connection,
    entry: int,
    client_id: uuid.UUID,
    account: int,
    amount: int,
    currency: str = "USD",
) -> None:
    conn.execute(
        "INSERT INTO journal_lines (entry_id, client_id, account_id, amount_minor, currency)"
        " VALUES (%s, %s, %s, %s, %s)",
        (entry, client_id, account, amount, currency),
    )


def test_commits_a_balanced_entry_written_in_separate_statements(conn, client_id):
    bank, revenue = _accounts(conn, client_id)
    entry = _entry(conn, client_id)
    _line(conn, entry, client_id, bank, 1999)
    _line(conn, entry, client_id, revenue, -1999)
    conn.commit()

    total = conn.execute(
        "SELECT sum(amount_minor), count(*) FROM journal_lines WHERE entry_id = %s", (entry,)
    ).fetchone()
    assert total == (0, 2)


def test_refuses_to_commit_an_unbalanced_entry(conn, client_id):
    bank, revenue = _accounts(conn, client_id)
    entry = _entry(conn, client_id)
    _line(conn, entry, client_id, bank, 1000)
    _line(conn, entry, client_id, revenue, -999)

    with pytest.raises(
        psycopg.errors.IntegrityConstraintViolation, match="does not balance in USD"
    ):
        conn.commit()
    conn.rollback()
    assert conn.execute(
        "SELECT count(*) FROM journal_entries WHERE id = %s", (entry,)
    ).fetchone() == (0,)


def test_refuses_an_entry_balanced_only_across_currencies(conn, client_id):
    bank, revenue = _accounts(conn, client_id)
    entry = _entry(conn, client_id)
    _line(conn, entry, client_id, bank, 1000, "USD")
    _line(conn, entry, client_id, revenue, -1000, "EUR")

    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="does not balance"):
        conn.commit()


def test_refuses_an_entry_without_lines(conn, client_id):
    _entry(conn, client_id)
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="has no lines"):
        conn.commit()


def test_refuses_lines_added_to_a_committed_entry(conn, client_id):
    bank, revenue = _accounts(conn, client_id)
    entry = _entry(conn, client_id)
    _line(conn, entry, client_id, bank, 500)
    _line(conn, entry, client_id, revenue, -500)
    conn.commit()

    _line(conn, entry, client_id, bank, 100)
    _line(conn, entry, client_id, revenue, -100)
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="already committed"):
        conn.commit()


def test_refuses_a_line_on_another_clients_account(conn, client_id, firm):
    from shared.services import clients

    other = clients.create_client(firm, "Other client")
    bank, _ = _accounts(conn, client_id)
    _, other_revenue = _accounts(conn, other)
    entry = _entry(conn, client_id)
    _line(conn, entry, client_id, bank, 700)
    _line(conn, entry, client_id, other_revenue, -700)

    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="not an account of its client"):
        conn.commit()


def test_refuses_a_line_on_an_account_that_does_not_exist(conn, client_id):
    bank, _ = _accounts(conn, client_id)
    entry = _entry(conn, client_id)
    _line(conn, entry, client_id, bank, 700)
    _line(conn, entry, client_id, 999_999_999, -700)

    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="account 999999999"):
        conn.commit()


def test_refuses_an_entry_of_a_client_that_does_not_exist(conn, client_id):
    # Its lines are on accounts of a real client, which is the first thing found wrong.
    bank, revenue = _accounts(conn, client_id)
    stranger = uuid.uuid4()
    entry = _entry(conn, stranger)
    _line(conn, entry, stranger, bank, 5)
    _line(conn, entry, stranger, revenue, -5)

    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="not an account of its client"):
        conn.commit()


def test_refuses_a_bank_transaction_on_another_clients_account(conn, client_id, firm):
    from shared.services import clients

    other = clients.create_client(firm, "Other client")
    _, other_revenue = _accounts(conn, other)
    imported = conn.execute(
        "INSERT INTO ledger_imports (client_id, blob_name, blob_version, sha256, size_bytes,"
        " status, started_at) VALUES (%s, %s, 'v1', repeat('0', 64), 1, 'imported', now())"
        " RETURNING id",
        (client_id, f"{client_id}/x.csv"),
    ).fetchone()
    assert imported is not None

    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="not an account of its client"):
        conn.execute(
            "INSERT INTO bank_transactions (client_id, account_id, booked_on, amount_minor,"
            " currency, dedupe_key, import_id) VALUES (%s, %s, '2026-01-01', 1, 'USD', 'k', %s)",
            (client_id, other_revenue, imported[0]),
        )


def _import_row(conn: psycopg.Connection, client_id: uuid.UUID) -> int:
    row = conn.execute(
        "INSERT INTO ledger_imports (client_id, blob_name, blob_version, sha256, size_bytes,"
        " status, started_at) VALUES (%s, %s, 'v1', repeat('0', 64), 1, 'imported', now())"
        " RETURNING id",
        (client_id, f"{client_id}/{uuid.uuid4().hex}.csv"),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_refuses_lines_of_an_entry_that_does_not_exist(conn, client_id):
    bank, revenue = _accounts(conn, client_id)
    entry = _entry(conn, client_id)
    _line(conn, entry, client_id, bank, 300)
    _line(conn, entry, client_id, revenue, -300)
    _line(conn, entry + 1, client_id, bank, 300)
    _line(conn, entry + 1, client_id, revenue, -300)

    with pytest.raises(
        psycopg.errors.ForeignKeyViolation,
        match=f"journal lines refer to entry {entry + 1}, which does not exist",
    ):
        conn.commit()


def test_refuses_an_entry_naming_another_clients_import(conn, client_id, firm):
    from shared.services import clients

    other = clients.create_client(firm, "Other client")
    foreign_import = _import_row(conn, other)
    bank, revenue = _accounts(conn, client_id)
    entry = conn.execute(
        "INSERT INTO journal_entries (client_id, booked_on, source, import_id)"
        " VALUES (%s, '2026-01-31', 'bank_import', %s) RETURNING id",
        (client_id, foreign_import),
    ).fetchone()
    assert entry is not None
    _line(conn, entry[0], client_id, bank, 40)
    _line(conn, entry[0], client_id, revenue, -40)

    with pytest.raises(
        psycopg.errors.ForeignKeyViolation,
        match=f"names import {foreign_import} of another client",
    ):
        conn.commit()


def test_refuses_a_reversal_of_another_clients_entry(conn, client_id, firm):
    from shared.services import clients

    other = clients.create_client(firm, "Other client")
    other_bank, other_revenue = _accounts(conn, other)
    theirs = _entry(conn, other)
    _line(conn, theirs, other, other_bank, 60)
    _line(conn, theirs, other, other_revenue, -60)
    conn.commit()

    bank, revenue = _accounts(conn, client_id)
    reversal = conn.execute(
        "INSERT INTO journal_entries (client_id, booked_on, source, reverses_id)"
        " VALUES (%s, '2026-02-01', 'manual', %s) RETURNING id",
        (client_id, theirs),
    ).fetchone()
    assert reversal is not None
    _line(conn, reversal[0], client_id, bank, -60)
    _line(conn, reversal[0], client_id, revenue, 60)

    with pytest.raises(
        psycopg.errors.ForeignKeyViolation,
        match=f"reverses entry {theirs}, which is no entry of its client",
    ):
        conn.commit()


def test_refuses_a_bank_transaction_naming_another_clients_entry(conn, client_id, firm):
    from shared.services import clients

    other = clients.create_client(firm, "Other client")
    other_bank, other_revenue = _accounts(conn, other)
    theirs = _entry(conn, other)
    _line(conn, theirs, other, other_bank, 80)
    _line(conn, theirs, other, other_revenue, -80)
    conn.commit()
    bank, _ = _accounts(conn, client_id)
    imported = _import_row(conn, client_id)

    with pytest.raises(
        psycopg.errors.ForeignKeyViolation,
        match=f"names entry {theirs}, which is not an entry of its client",
    ):
        conn.execute(
            "INSERT INTO bank_transactions (client_id, account_id, booked_on, amount_minor,"
            " currency, dedupe_key, import_id, entry_id)"
            " VALUES (%s, %s, '2026-01-01', 80, 'USD', 'k', %s, %s)",
            (client_id, bank, imported, theirs),
        )


def test_refuses_a_bank_transaction_naming_another_clients_import(conn, client_id, firm):
    from shared.services import clients

    other = clients.create_client(firm, "Other client")
    foreign_import = _import_row(conn, other)
    bank, _ = _accounts(conn, client_id)

    with pytest.raises(
        psycopg.errors.ForeignKeyViolation,
        match=f"names import {foreign_import}, which is not an import of its client",
    ):
        conn.execute(
            "INSERT INTO bank_transactions (client_id, account_id, booked_on, amount_minor,"
            " currency, dedupe_key, import_id) VALUES (%s, %s, '2026-01-01', 1, 'USD', 'k', %s)",
            (client_id, bank, foreign_import),
        )


@pytest.mark.parametrize("table", ["accounts", "clients", "firms"])
def test_rows_the_ledger_refers_to_are_never_deleted(conn, client_id, table):
    with pytest.raises(psycopg.errors.RestrictViolation, match="never deleted"):
        conn.execute(f"DELETE FROM {table}")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE journal_lines SET amount_minor = amount_minor * 2",
        "DELETE FROM journal_lines",
        "UPDATE journal_entries SET memo = 'edited'",
        "DELETE FROM journal_entries",
        "TRUNCATE journal_lines CASCADE",
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
    ],
)
def test_ledger_and_audit_log_are_append_only(conn, client_id, statement):
    bank, revenue = _accounts(conn, client_id)
    entry = _entry(conn, client_id)
    _line(conn, entry, client_id, bank, 100)
    _line(conn, entry, client_id, revenue, -100)
    conn.commit()

    with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
        conn.execute(statement)


def test_audit_chain_verifies_and_names_an_edited_row(conn, client_id):
    from shared.services import audit

    for n in range(3):
        audit.record(
            conn,
            actor="t",
            action="test.step",
            client_id=client_id,
            subject=str(n),
            details={"n": n},
        )
    conn.commit()
    assert audit.verify(conn, client_id) == []

    # Someone with owner rights switches the guard off and edits the middle row.
    conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
    conn.execute(
        "UPDATE audit_log SET details = '{\"n\": 99}' WHERE client_id = %s AND subject = '1'",
        (client_id,),
    )
    conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    conn.commit()

    broken = audit.verify(conn, client_id)
    assert [(b["problem"]) for b in broken] == ["content does not match its hash"]


def test_audit_chain_names_a_deleted_row(conn, client_id):
    from shared.services import audit

    for n in range(4):
        audit.record(
            conn, actor="t", action="test.step", client_id=client_id, subject=str(n), details={}
        )
    conn.commit()
    conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
    conn.execute("DELETE FROM audit_log WHERE client_id = %s AND subject = '2'", (client_id,))
    conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    conn.commit()

    broken = audit.verify(conn, client_id)
    assert [b["problem"] for b in broken] == ["row(s) missing before this one"]
