"""Reading the ledger: the trial balance of a client's books."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from shared.adapters import postgres
from shared.errors import NotFound


@dataclass(frozen=True, slots=True)
class TrialBalanceLine:
    """One account's balance in one currency: debits positive, credits negative."""

    code: str
    name: str
    type: str
    currency: str
    balance_minor: int


def trial_balance(client_id: uuid.UUID) -> list[TrialBalanceLine]:
    """Return the balance of every account of a client that has postings, per currency.

    Lines are ordered by account code, then currency; accounts without postings are left
    out. The balances of each currency sum to zero, because every entry balances.

    Raises:
        NotFound: no such client.
    """
    with postgres.transaction() as conn:
        if conn.execute("SELECT 1 FROM clients WHERE id = %s", (client_id,)).fetchone() is None:
            raise NotFound(f"unknown client {client_id}")
        rows = conn.execute(
            """
            SELECT a.code, a.name, a.type, l.currency, sum(l.amount_minor)
            FROM accounts a JOIN journal_lines l ON l.account_id = a.id
            WHERE a.client_id = %s
            GROUP BY a.code, a.name, a.type, l.currency
            ORDER BY a.code, l.currency
            """,
            (client_id,),
        ).fetchall()
    return [
        TrialBalanceLine(code, name, kind, currency, int(total))
        for code, name, kind, currency, total in rows
    ]
