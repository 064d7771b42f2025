"""Month-end close for bookkeeping clients: per bank account checks, the QuickBooks sync
request, the close report (trial balance, P&L, balance sheet) in Blob storage, and the
period lock that the database then enforces on every posting dated in the period.

Each step is safe to repeat: checks only read, the sync message is keyed by client and
period, the report overwrites itself, and the lock only ever moves forward.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import re
import uuid
from datetime import date
from typing import Any

import psycopg

from shared.adapters import blob, postgres
from shared.errors import NotFound, ValidationError
from shared.messaging import QUICKBOOKS_SYNC_QUEUE, OutboundMessage
from shared.services import audit, clients, outbox, quickbooks_connections

CLOSE_REPORTS_CONTAINER = "close-reports"
ORCHESTRATOR = "month_end_close_v1"
# ASCII digits only, and the whole text: no other script's digits, no trailing newline.
_PERIOD = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
_BALANCE_SHEET_TYPES = ("asset", "liability", "equity")
_PROFIT_AND_LOSS_TYPES = ("income", "expense")


def period_bounds(period: str) -> tuple[date, date]:
    """First and last day of a ``YYYY-MM`` period.

    Raises:
        ValidationError: not a ``YYYY-MM`` month.
    """
    found = _PERIOD.fullmatch(period)
    if found is None or found.group(1) == "0000":
        raise ValidationError(
            f"period must be a month as YYYY-MM, such as 2026-11, not {period!r}"
        )
    year, month = int(found.group(1)), int(found.group(2))
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def instance_id_for(client_id: uuid.UUID, period: str) -> str:
    """The close orchestration's instance id: one close per client and period."""
    period_bounds(period)
    return f"close-{client_id}-{period}"


def bank_accounts(client_id: uuid.UUID) -> list[int]:
    """The client's bank accounts (those the importer created or that hold transactions)."""
    with postgres.transaction() as conn:
        clients.require_client(conn, client_id)
        rows = conn.execute(
            "SELECT a.id FROM accounts a WHERE a.client_id = %s AND (a.external_ref LIKE 'bank:%%'"
            " OR EXISTS (SELECT 1 FROM bank_transactions t WHERE t.account_id = a.id))"
            " ORDER BY a.id",
            (client_id,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def check_account(client_id: uuid.UUID, account_id: int, period: str) -> dict[str, Any]:
    """One bank account's checks for the period.

    Returns:
        ``imports_present`` (any transaction dated in the period), ``transactions``,
        ``bank_total_minor`` and ``ledger_total_minor`` per currency through the period's end
        (they must agree: ``reconciled``), ``uncategorised`` (transactions in the period
        posted against an uncategorised account), and the reconciliation against the bank's
        own statements: ``statement_balances`` (see ``_statement_reconciliation``),
        ``statement_difference_minor`` per currency, and ``statement_reconciled`` (None when
        no import stated a balance dated in the period).
    """
    first, last = period_bounds(period)
    with postgres.transaction() as conn:
        code = conn.execute(
            "SELECT code FROM accounts WHERE id = %s AND client_id = %s", (account_id, client_id)
        ).fetchone()
        if code is None:
            raise NotFound(f"account {account_id} of client {client_id} does not exist")
        counts = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE EXISTS ("
            "   SELECT 1 FROM journal_lines l JOIN accounts a ON a.id = l.account_id"
            "   WHERE l.entry_id = t.entry_id AND a.code LIKE 'UNCATEGORISED-%%'))"
            " FROM bank_transactions t WHERE t.account_id = %s AND t.booked_on BETWEEN %s AND %s",
            (account_id, first, last),
        ).fetchone()
        bank = dict(
            conn.execute(
                "SELECT currency, sum(amount_minor) FROM bank_transactions"
                " WHERE account_id = %s AND booked_on <= %s GROUP BY currency",
                (account_id, last),
            ).fetchall()
        )
        ledger = dict(
            conn.execute(
                "SELECT l.currency, sum(l.amount_minor) FROM journal_lines l"
                " JOIN journal_entries e ON e.id = l.entry_id"
                " WHERE l.account_id = %s AND e.booked_on <= %s GROUP BY l.currency",
                (account_id, last),
            ).fetchall()
        )
        statements = _statement_reconciliation(conn, account_id, first, last)
    assert counts is not None
    bank_totals = {str(k): int(v) for k, v in bank.items()}
    ledger_totals = {str(k): int(v) for k, v in ledger.items()}
    return {
        "account_id": account_id,
        "account_code": str(code[0]),
        "imports_present": int(counts[0]) > 0,
        "transactions": int(counts[0]),
        "uncategorised": int(counts[1]),
        "bank_total_minor": bank_totals,
        "ledger_total_minor": ledger_totals,
        "reconciled": bank_totals == ledger_totals,
        "statement_balances": statements,
        "statement_difference_minor": {
            line["currency"]: line["difference_minor"] for line in statements
        },
        "statement_reconciled": (
            all(line["difference_minor"] == 0 for line in statements) if statements else None
        ),
    }


def _statement_reconciliation(
    conn: psycopg.Connection, account_id: int, first: date, last: date
) -> list[dict[str, Any]]:
    """Per currency, the latest balance an imported statement states for a day in the
    period, beside the account's book balance at the end of that day.

    ``difference_minor`` is stated minus books: positive when the bank holds more than the
    books show (a deposit not imported, an opening balance never posted).
    """
    rows = conn.execute(
        "SELECT DISTINCT ON (s.currency) s.currency, s.as_of, s.amount_minor, s.import_id,"
        " (SELECT coalesce(sum(l.amount_minor), 0) FROM journal_lines l"
        "   JOIN journal_entries e ON e.id = l.entry_id"
        "   WHERE l.account_id = s.account_id AND l.currency = s.currency"
        "   AND e.booked_on <= s.as_of)"
        " FROM bank_statement_balances s"
        " WHERE s.account_id = %s AND s.as_of BETWEEN %s AND %s"
        " ORDER BY s.currency, s.as_of DESC, s.id DESC",
        (account_id, first, last),
    ).fetchall()
    return [
        {
            "currency": str(currency),
            "as_of": as_of.isoformat(),
            "stated_minor": int(stated),
            "books_minor": int(books),
            "difference_minor": int(stated) - int(books),
            "import_id": int(import_id),
        }
        for currency, as_of, stated, import_id, books in rows
    ]


def request_quickbooks_sync(client_id: uuid.UUID, period: str) -> str:
    """Queue the period's QuickBooks sync (through the outbox, once per client and period).

    Returns:
        The message id.
    """
    first, last = period_bounds(period)
    message_id = f"qbo-sync:{client_id}:{period}"
    # The sync queue has one session per realm, so pushes to one company never overlap; a
    # client not connected to QuickBooks gets its own session and the consumer logs it.
    try:
        session = quickbooks_connections.connection_for_client(client_id).realm_id
    except NotFound:
        session = str(client_id)
    body = {
        "client_id": str(client_id),
        "period": period,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "reason": "month_end_close",
    }
    with postgres.transaction() as conn:
        outbox.add(
            conn,
            QUICKBOOKS_SYNC_QUEUE,
            OutboundMessage(
                message_id=message_id,
                body=json.dumps(body).encode(),
                session_id=session,
                subject="month_end_close",
            ),
        )
    return message_id


def write_report(client_id: uuid.UUID, period: str, checks: list[dict[str, Any]]) -> list[str]:
    """Write the close report as JSON and CSV; returns the two blob names.

    The trial balance and balance sheet are as at the period's last day; the profit and
    loss covers the period. Amounts are integer minor units per currency.
    """
    first, last = period_bounds(period)
    with postgres.transaction() as conn:
        rows = conn.execute(
            "SELECT a.code, a.name, a.type, l.currency,"
            " sum(l.amount_minor),"
            " sum(l.amount_minor) FILTER (WHERE e.booked_on >= %s)"
            " FROM accounts a JOIN journal_lines l ON l.account_id = a.id"
            " JOIN journal_entries e ON e.id = l.entry_id"
            " WHERE a.client_id = %s AND e.booked_on <= %s"
            " GROUP BY a.code, a.name, a.type, l.currency ORDER BY a.code, l.currency",
            (first, client_id, last),
        ).fetchall()
    lines = [
        {
            "code": code,
            "name": name,
            "type": kind,
            "currency": currency,
            "balance_minor": int(total),
            "period_minor": int(in_period or 0),
        }
        for code, name, kind, currency, total, in_period in rows
    ]
    report: dict[str, Any] = {
        "client_id": str(client_id),
        "period": period,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "accounts": checks,
        "trial_balance": [
            {k: line[k] for k in ("code", "name", "type", "currency", "balance_minor")}
            for line in lines
            if line["balance_minor"]
        ],
        "profit_and_loss": [
            {k: line[k] for k in ("code", "name", "type", "currency", "period_minor")}
            for line in lines
            if line["type"] in _PROFIT_AND_LOSS_TYPES and line["period_minor"]
        ],
        "balance_sheet": [
            {k: line[k] for k in ("code", "name", "type", "currency", "balance_minor")}
            for line in lines
            if line["type"] in _BALANCE_SHEET_TYPES and line["balance_minor"]
        ],
    }
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["section", "code", "name", "type", "currency", "amount_minor"])
    for section, key in (
        ("trial_balance", "balance_minor"),
        ("profit_and_loss", "period_minor"),
        ("balance_sheet", "balance_minor"),
    ):
        for line in report[section]:
            writer.writerow(
                [section, line["code"], line["name"], line["type"], line["currency"], line[key]]
            )
    # Each bank account's statement against its books: the difference, stated minus books.
    for check in checks:
        for line in check.get("statement_balances") or []:
            writer.writerow(
                [
                    "bank_reconciliation",
                    check["account_code"],
                    f"statement balance as of {line['as_of']}",
                    "difference",
                    line["currency"],
                    line["difference_minor"],
                ]
            )
    base = f"{client_id}/{period}/close"
    blob.upload(
        CLOSE_REPORTS_CONTAINER,
        f"{base}.json",
        json.dumps(report, indent=2, sort_keys=True).encode(),
        content_type="application/json",
    )
    blob.upload(
        CLOSE_REPORTS_CONTAINER, f"{base}.csv", text.getvalue().encode(), content_type="text/csv"
    )
    return [f"{base}.json", f"{base}.csv"]


def lock_period(client_id: uuid.UUID, period: str, actor: str) -> str:
    """Close the books through the period's last day (never moves a lock back).

    Returns:
        The date the books are closed through, ISO format.
    """
    _, last = period_bounds(period)
    with postgres.transaction() as conn:
        row = conn.execute(
            "INSERT INTO period_locks (client_id, locked_through, locked_by)"
            " VALUES (%s, %s, %s) ON CONFLICT (client_id) DO UPDATE"
            " SET locked_through = greatest(period_locks.locked_through, EXCLUDED.locked_through),"
            "     locked_by = EXCLUDED.locked_by, locked_at = now()"
            " RETURNING locked_through",
            (client_id, last, actor),
        ).fetchone()
        assert row is not None
        audit.record(
            conn,
            actor=actor,
            action="ledger.period.locked",
            client_id=client_id,
            subject=period,
            details={"locked_through": row[0].isoformat()},
        )
    return str(row[0].isoformat())
