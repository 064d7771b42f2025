"""Helpers for the QuickBooks tests and benchmark: settings pointing at the fake, a
connected realm, and ledger entries to send."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from cryptography.fernet import Fernet

from tests.quickbooks_fake import FakeQuickBooks


def settings_for(fake: FakeQuickBooks, secrets_dir: Path) -> dict[str, str]:
    return {
        "QUICKBOOKS_CLIENT_ID": "ABtestclient",
        "QUICKBOOKS_CLIENT_SECRET": "test-client-secret",
        "QUICKBOOKS_REDIRECT_URI": "http://127.0.0.1/api/quickbooks/callback",
        "QUICKBOOKS_OAUTH_DISCOVERY": fake.discovery_url,
        "QUICKBOOKS_API_URL": fake.api_url,
        "QUICKBOOKS_TIMEOUT_S": "1",
        "QUICKBOOKS_BACKOFF_FIRST_S": "0.01",
        "LOCAL_SECRET_STORE_PATH": str(secrets_dir / "secrets.json"),
        "LOCAL_SECRET_STORE_KEY": Fernet.generate_key().decode(),
    }


@contextmanager
def configured(env: dict[str, str]) -> Iterator[None]:
    """Apply settings for the duration, and re-read them on the way in and out."""
    from shared.adapters.secrets import reset_secret_store
    from shared.config import get_settings

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    get_settings.cache_clear()
    reset_secret_store()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        reset_secret_store()


def connect(fake: FakeQuickBooks, client_id: uuid.UUID, realm_id: str) -> None:
    """Connect the client to a realm of the fake, as a completed consent would."""
    from shared.adapters.quickbooks import Tokens
    from shared.services import quickbooks_connections as connections

    access, refresh = fake.grant(realm_id)
    fake.seed_accounts(realm_id)
    tokens = Tokens(access, refresh, access_expires_at=4102444800.0)
    connections.store_connection(client_id, realm_id, "sandbox", tokens)


def post_entries(
    client_id: uuid.UUID, entries: Sequence[Sequence[tuple[str, int]]], currency: str = "USD"
) -> list[int]:
    """Post balanced entries; each is a list of (account code, amount minor, debit > 0)."""
    from shared.adapters.postgres import transaction

    ids: list[int] = []
    with transaction() as conn:
        accounts = dict(
            conn.execute("SELECT code, id FROM accounts WHERE client_id = %s", (client_id,))
        )
        for number, lines in enumerate(entries, start=1):
            row = conn.execute(
                "INSERT INTO journal_entries (client_id, booked_on, reference, memo, source) "
                "VALUES (%s, %s, %s, %s, 'manual') RETURNING id",
                (client_id, date(2026, 11, 30), f"JE-{number}", f"entry {number}"),
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO journal_lines (entry_id, client_id, account_id, amount_minor, "
                    "currency) VALUES (%s, %s, %s, %s, %s)",
                    [
                        (row[0], client_id, accounts[code], amount, currency)
                        for code, amount in lines
                    ],
                )
    return ids


def add_customers_and_invoices(
    client_id: uuid.UUID, customers: int, invoices: int, total_minor: int = 12345
) -> None:
    """Billing mirror rows, as the Stripe consumer would leave them."""
    from shared.adapters.postgres import transaction

    with transaction() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO stripe_customers (books_client_id, stripe_id, status, status_rank, "
            "snapshot_at, snapshot_event, data, name, email) VALUES (%s, %s, 'active', 1, now(), "
            "'evt_seed', '{}', %s, %s)",
            [
                (client_id, f"cus_{n:05d}", f"Customer {n}", f"c{n}@example.test")
                for n in range(customers)
            ],
        )
        cur.executemany(
            "INSERT INTO stripe_invoices (books_client_id, stripe_id, status, status_rank, "
            "snapshot_at, snapshot_event, data, customer, number, currency, total_minor, "
            "tax_minor, amount_due_minor, amount_paid_minor) VALUES (%s, %s, 'open', 2, now(), "
            "'evt_seed', '{}', %s, %s, 'USD', %s, 0, %s, 0)",
            [
                (
                    client_id,
                    f"in_{n:06d}",
                    f"cus_{n % customers:05d}",
                    f"INV-{n}",
                    total_minor + n,
                    total_minor + n,
                )
                for n in range(invoices)
            ],
        )


def add_charges(client_id: uuid.UUID, invoices: Sequence[str], customer: str) -> None:
    """Succeeded charges paying the given invoices in full, plus one with no invoice."""
    from shared.adapters.postgres import transaction

    with transaction() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO stripe_charges (books_client_id, stripe_id, status, status_rank, "
            "snapshot_at, snapshot_event, data, customer, invoice, currency, amount_minor, "
            "amount_captured_minor, amount_refunded_minor) SELECT %s, %s, 'succeeded', 3, now(), "
            "'evt_seed', '{}', %s, %s, 'USD', coalesce(i.total_minor, 5000), "
            "coalesce(i.total_minor, 5000), 0 FROM (SELECT 1) one LEFT JOIN stripe_invoices i "
            "ON i.books_client_id = %s AND i.stripe_id = %s",
            [
                (client_id, f"ch_{n:05d}", customer, invoice, client_id, invoice)
                for n, invoice in enumerate([*invoices, None])
            ],
        )
