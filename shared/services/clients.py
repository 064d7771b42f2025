"""Firms and clients as far as the ledger needs them: creation with a starter chart of
accounts, and the per-client mapping profile for bank files.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import Any

import psycopg

from shared.adapters import postgres
from shared.domain.imports import MappingProfile
from shared.domain.money import normalise_currency
from shared.errors import Conflict, NotFound, ValidationError
from shared.services import audit

ACCOUNT_TYPES = ("asset", "liability", "equity", "income", "expense")

# code, name, type: enough to post bank and journal imports; firms extend it.
STARTER_CHART: tuple[tuple[str, str, str], ...] = (
    ("1000", "Cash at bank", "asset"),
    ("1100", "Accounts receivable", "asset"),
    ("1200", "Stripe clearing", "asset"),
    ("2000", "Accounts payable", "liability"),
    ("2100", "Sales tax payable", "liability"),
    ("3000", "Owner's equity", "equity"),
    ("3900", "Retained earnings", "equity"),
    ("4000", "Revenue", "income"),
    ("4900", "Other income", "income"),
    ("5000", "Cost of sales", "expense"),
    ("6000", "Operating expenses", "expense"),
    ("6100", "Bank and payment fees", "expense"),
)

# A firm's own books, where its Stripe billing posts: the starter chart plus what refunds
# (a contra-revenue account, so revenue stays as invoiced) and disputes need.
BILLING_CHART: tuple[tuple[str, str, str], ...] = (
    *STARTER_CHART,
    ("1300", "Disputed funds held by Stripe", "asset"),
    ("4100", "Refunds", "income"),
    ("6200", "Dispute losses", "expense"),
)


def create_firm(name: str) -> uuid.UUID:
    """Create a firm and return its id."""
    with postgres.transaction() as conn:
        row = conn.execute("INSERT INTO firms (name) VALUES (%s) RETURNING id", (name,)).fetchone()
        assert row is not None
        firm_id: uuid.UUID = row[0]
        audit.record(
            conn,
            actor="system",
            action="firm.created",
            client_id=None,
            subject=str(firm_id),
            details={"name": name},
        )
    return firm_id


def create_client(
    firm_id: uuid.UUID,
    name: str,
    *,
    base_currency: str = "USD",
    accounts: tuple[tuple[str, str, str], ...] = STARTER_CHART,
    client_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Create a client with a chart of accounts and return its id.

    Raises:
        ValidationError: the currency is not an ISO 4217 code with minor units.
    """
    with postgres.transaction() as conn:
        return insert_client(
            conn,
            firm_id,
            name,
            base_currency=base_currency,
            accounts=accounts,
            client_id=client_id,
        )


def insert_client(
    conn: psycopg.Connection,
    firm_id: uuid.UUID,
    name: str,
    *,
    base_currency: str = "USD",
    accounts: tuple[tuple[str, str, str], ...] = STARTER_CHART,
    client_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Create a client as ``create_client`` does, inside the caller's transaction.

    Raises:
        ValidationError: the currency is not an ISO 4217 code with minor units.
    """
    currency = normalise_currency(base_currency)
    row = conn.execute(
        "INSERT INTO clients (id, firm_id, name, base_currency)"
        " VALUES (coalesce(%s, gen_random_uuid()), %s, %s, %s) RETURNING id",
        (client_id, firm_id, name, currency),
    ).fetchone()
    assert row is not None
    new_id: uuid.UUID = row[0]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO accounts (client_id, code, name, type) VALUES (%s, %s, %s, %s)",
            [(new_id, code, title, kind) for code, title, kind in accounts],
        )
    audit.record(
        conn,
        actor="system",
        action="client.created",
        client_id=new_id,
        subject=str(new_id),
        details={"name": name, "base_currency": currency},
    )
    return new_id


def set_mapping_profile(client_id: uuid.UUID, data: dict[str, Any], actor: str) -> dict[str, Any]:
    """Check and store a client's mapping profile; return it as stored.

    Raises:
        ValidationError: the profile has unknown fields or wrong values (named).
        NotFound: no such client.
    """
    profile = MappingProfile.from_json(data)
    stored = asdict(profile)
    with postgres.transaction() as conn:
        row = conn.execute(
            "SELECT mapping_profile FROM clients WHERE id = %s FOR UPDATE", (client_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"unknown client {client_id}")
        conn.execute(
            "UPDATE clients SET mapping_profile = %s WHERE id = %s",
            (json.dumps(stored), client_id),
        )
        audit.record(
            conn,
            actor=actor,
            action="client.mapping_profile.changed",
            client_id=client_id,
            subject=str(client_id),
            details={"before": row[0], "after": stored},
        )
    return stored


def get_mapping_profile(client_id: uuid.UUID) -> dict[str, Any]:
    """Return a client's mapping profile.

    Raises:
        NotFound: no such client.
    """
    with postgres.transaction() as conn:
        row = conn.execute(
            "SELECT mapping_profile FROM clients WHERE id = %s", (client_id,)
        ).fetchone()
    if row is None:
        raise NotFound(f"unknown client {client_id}")
    result: dict[str, Any] = row[0]
    return result


def require_client(conn: psycopg.Connection, client_id: uuid.UUID) -> None:
    """Raise ``NotFound`` naming ``client_id`` when no such client exists."""
    if conn.execute("SELECT 1 FROM clients WHERE id = %s", (client_id,)).fetchone() is None:
        raise NotFound(f"client {client_id} does not exist")


def add_account(client_id: uuid.UUID, code: str, name: str, kind: str, actor: str) -> int:
    """Add an account to a client's chart and return its id.

    Raises:
        ValidationError: the type is not one of the five account types, or a field is empty.
        Conflict: the code is already used in this chart.
        NotFound: no such client.
    """
    if kind not in ACCOUNT_TYPES:
        raise ValidationError(f"type {kind!r} is not one of {', '.join(ACCOUNT_TYPES)}")
    if not code.strip() or not name.strip():
        raise ValidationError("code and name must not be empty")
    with postgres.transaction() as conn:
        if conn.execute("SELECT 1 FROM clients WHERE id = %s", (client_id,)).fetchone() is None:
            raise NotFound(f"unknown client {client_id}")
        row = conn.execute(
            "INSERT INTO accounts (client_id, code, name, type) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (client_id, code) DO NOTHING RETURNING id",
            (client_id, code.strip(), name.strip(), kind),
        ).fetchone()
        if row is None:
            raise Conflict(f"account code {code!r} is already in this client's chart")
        audit.record(
            conn,
            actor=actor,
            action="account.created",
            client_id=client_id,
            subject=str(row[0]),
            details={"code": code, "name": name, "type": kind},
        )
    return int(row[0])
