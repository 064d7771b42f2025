"""What the portal reads and changes, one function per view, each on a connection whose
transaction already acts for the signed-in user (row-level security applies to all of it).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg

from shared.domain import portal as m
from shared.domain.money import Money, normalise_currency
from shared.errors import Conflict, NotFound, ValidationError
from shared.services import audit, clients

RUNWAY_MONTHS = 3


def amount(minor: int, currency: str) -> str:
    """Minor units as a decimal string in the currency's scale."""
    return str(Money(int(minor), currency.strip()).to_decimal())


def encode_cursor(*parts: object) -> str:
    """An opaque keyset cursor for the row after which the next page starts."""
    raw = json.dumps([str(p) for p in parts]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[str]:
    """Read a cursor made by ``encode_cursor``.

    Raises:
        ValidationError: it is not one this API issued for this view.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != arity
        or not all(isinstance(p, str) for p in parts)
    ):
        raise ValidationError("query parameter 'after': not a cursor this API issued")
    return parts


def _cursor_int(value: str) -> int:
    if not (value.isascii() and value.lstrip("-").isdigit()) or len(value) > 18:
        raise ValidationError("query parameter 'after': not a cursor this API issued")
    return int(value)


def _cursor_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError("query parameter 'after': not a cursor this API issued") from None


# -- Clients -------------------------------------------------------------------------------

_CLIENT_COLUMNS = "id, name, base_currency, created_at, archived_at"


def _client(row: tuple[Any, ...]) -> m.Client:
    return m.Client(
        id=row[0], name=row[1], base_currency=row[2], created_at=row[3], archived_at=row[4]
    )


def list_clients(conn: psycopg.Connection, limit: int, after: str | None) -> m.ClientList:
    """The clients the caller sees, by name, a page at a time."""
    name, last_id = decode_cursor(after, 2) if after else ("", str(uuid.UUID(int=0)))
    try:
        last = uuid.UUID(last_id)
    except ValueError:
        raise ValidationError("query parameter 'after': not a cursor this API issued") from None
    rows = conn.execute(
        f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE (name, id) > (%s, %s)"
        " ORDER BY name, id LIMIT %s",
        (name, last, limit + 1),
    ).fetchall()
    page = [_client(r) for r in rows[:limit]]
    more = len(rows) > limit
    return m.ClientList(
        clients=page, next=encode_cursor(page[-1].name, page[-1].id) if more else None
    )


def get_client(conn: psycopg.Connection, client_id: uuid.UUID) -> m.Client:
    """One client. Raises NotFound when not visible."""
    row = conn.execute(
        f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE id = %s", (client_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"client {client_id} not found")
    return _client(row)


def create_client(
    conn: psycopg.Connection, firm_id: uuid.UUID, body: m.ClientCreate, actor: str
) -> m.Client:
    """Create a client of the caller's firm with the starter chart."""
    try:
        normalise_currency(body.base_currency)
    except ValidationError as exc:
        raise ValidationError(f"field 'base_currency': {exc}") from None
    new_id = clients.insert_client(conn, firm_id, body.name, base_currency=body.base_currency)
    audit.record(
        conn,
        actor=actor,
        action="client.created.portal",
        client_id=new_id,
        subject=str(new_id),
        details={"name": body.name},
    )
    return get_client(conn, new_id)


def rename_client(
    conn: psycopg.Connection, client_id: uuid.UUID, body: m.ClientUpdate, actor: str
) -> m.Client:
    """Change a client's name, audited."""
    before = get_client(conn, client_id)
    conn.execute("UPDATE clients SET name = %s WHERE id = %s", (body.name, client_id))
    audit.record(
        conn,
        actor=actor,
        action="client.renamed",
        client_id=client_id,
        subject=str(client_id),
        details={"before": before.name, "after": body.name},
    )
    return get_client(conn, client_id)


def archive_client(conn: psycopg.Connection, client_id: uuid.UUID, actor: str) -> m.Client:
    """Archive a client (clients are never deleted: the ledger refers to them)."""
    before = get_client(conn, client_id)
    if before.archived_at is None:
        conn.execute("UPDATE clients SET archived_at = now() WHERE id = %s", (client_id,))
        audit.record(
            conn,
            actor=actor,
            action="client.archived",
            client_id=client_id,
            subject=str(client_id),
            details={},
        )
    return get_client(conn, client_id)


# -- Ledger --------------------------------------------------------------------------------


def chart_of_accounts(conn: psycopg.Connection, client_id: uuid.UUID) -> m.AccountList:
    rows = conn.execute(
        "SELECT id, code, name, type FROM accounts WHERE client_id = %s ORDER BY code",
        (client_id,),
    ).fetchall()
    return m.AccountList(
        accounts=[m.Account(id=r[0], code=r[1], name=r[2], type=r[3]) for r in rows]
    )


# The ledger views' statements, named so bench/portal_bench.py sends the same SQL bare.
GENERAL_LEDGER_SQL = """
    SELECT l.id, e.id, e.booked_on, e.reference, e.memo, e.source, a.code, a.name,
           l.currency, l.amount_minor
    FROM journal_entries e
    JOIN journal_lines l ON l.entry_id = e.id
    JOIN accounts a ON a.id = l.account_id
    WHERE e.client_id = %(client)s
      AND (e.booked_on, e.id) >= (%(day)s, %(entry)s)
      AND (e.booked_on, e.id, l.id) > (%(day)s, %(entry)s, %(line)s)
      AND e.booked_on >= %(lo)s AND e.booked_on <= %(hi)s
    ORDER BY e.booked_on, e.id, l.id
    LIMIT %(limit)s
"""
BALANCES_SQL = """
    SELECT a.code, a.name, a.type, l.currency, sum(l.amount_minor)
    FROM accounts a
    JOIN journal_lines l ON l.account_id = a.id
    JOIN journal_entries e ON e.id = l.entry_id
    WHERE a.client_id = %s AND a.type = ANY(%s)
      AND e.booked_on >= %s AND e.booked_on <= %s
    GROUP BY a.code, a.name, a.type, l.currency
    HAVING sum(l.amount_minor) <> 0
    ORDER BY a.code, l.currency
"""


def general_ledger(
    conn: psycopg.Connection, client_id: uuid.UUID, query: m.LedgerPageQuery
) -> m.LedgerPage:
    """Journal lines in (date, entry, line) order, a keyset page at a time."""
    if query.after:
        day, entry, line = decode_cursor(query.after, 3)
        key: tuple[dt.date, int, int] = (_cursor_date(day), _cursor_int(entry), _cursor_int(line))
    else:
        key = (dt.date.min, 0, 0)
    rows = conn.execute(
        GENERAL_LEDGER_SQL,
        {
            "client": client_id,
            "day": key[0],
            "entry": key[1],
            "line": key[2],
            "lo": query.date_from or dt.date.min,
            "hi": query.date_to or dt.date.max,
            "limit": query.limit + 1,
        },
    ).fetchall()
    # The page is validated whole from plain dicts: one call into pydantic's core instead
    # of one model per line, which costs more than the query at a hundred lines.
    lines = [
        {
            "line_id": r[0],
            "entry_id": r[1],
            "booked_on": r[2],
            "reference": r[3],
            "memo": r[4],
            "source": r[5],
            "account_code": r[6],
            "account_name": r[7],
            "currency": r[8],
            "amount": amount(r[9], r[8]),
            "amount_minor": r[9],
        }
        for r in rows[: query.limit]
    ]
    last = lines[-1] if len(rows) > query.limit else None
    cursor = encode_cursor(last["booked_on"], last["entry_id"], last["line_id"]) if last else None
    return m.LedgerPage.model_validate({"lines": lines, "next": cursor})


def _balances(
    conn: psycopg.Connection,
    client_id: uuid.UUID,
    lo: dt.date | None,
    hi: dt.date,
    types: tuple[str, ...],
) -> list[m.BalanceLine]:
    rows = conn.execute(
        BALANCES_SQL,
        (client_id, list(types), lo or dt.date.min, hi),
    ).fetchall()
    return [
        m.BalanceLine(
            code=r[0],
            name=r[1],
            type=r[2],
            currency=r[3],
            balance=amount(r[4], r[3]),
            balance_minor=int(r[4]),
        )
        for r in rows
    ]


ALL_TYPES = ("asset", "liability", "equity", "income", "expense")


def trial_balance(
    conn: psycopg.Connection, client_id: uuid.UUID, as_of: dt.date
) -> m.TrialBalance:
    return m.TrialBalance(as_of=as_of, lines=_balances(conn, client_id, None, as_of, ALL_TYPES))


def _totals(
    lines: list[m.BalanceLine], sections: dict[str, tuple[str, ...]]
) -> dict[str, dict[str, str]]:
    sums: dict[str, dict[str, int]] = {name: defaultdict(int) for name in sections}
    for line in lines:
        for name, types in sections.items():
            if line.type in types:
                sums[name][line.currency] += line.balance_minor
    return {
        name: {cur: amount(total, cur) for cur, total in sorted(per.items())}
        for name, per in sums.items()
    }


def profit_and_loss(
    conn: psycopg.Connection, client_id: uuid.UUID, lo: dt.date, hi: dt.date
) -> m.Statement:
    """Income and expense for [lo, hi]; ``net`` is income less expense (credit negative,
    so a profit shows as a negative balance sum, and is reported positive here)."""
    if lo > hi:
        raise ValidationError("query parameter 'from' is after 'to'")
    lines = _balances(conn, client_id, lo, hi, ("income", "expense"))
    totals = _totals(lines, {"income": ("income",), "expense": ("expense",), "net": ALL_TYPES})
    # Credits are negative in the ledger; a statement shows income and profit positive.
    totals = {
        name: {cur: str(-Decimal(v)) if name in ("income", "net") else v for cur, v in per.items()}
        for name, per in totals.items()
    }
    return m.Statement(date_from=lo, date_to=hi, lines=lines, totals=totals)


def balance_sheet(conn: psycopg.Connection, client_id: uuid.UUID, as_of: dt.date) -> m.Statement:
    """Assets, liabilities and equity at a date, with the earnings not yet closed."""
    lines = _balances(conn, client_id, None, as_of, ALL_TYPES)
    earnings: dict[str, int] = defaultdict(int)
    kept = []
    for line in lines:
        if line.type in ("income", "expense"):
            earnings[line.currency] += line.balance_minor
        else:
            kept.append(line)
    for currency, total in sorted(earnings.items()):
        if total:
            kept.append(
                m.BalanceLine(
                    code="",
                    name="Current earnings",
                    type="equity",
                    currency=currency,
                    balance=amount(total, currency),
                    balance_minor=total,
                )
            )
    totals = _totals(
        kept, {"assets": ("asset",), "liabilities": ("liability",), "equity": ("equity",)}
    )
    return m.Statement(date_from=None, date_to=as_of, lines=kept, totals=totals)


_BANK_SELECT = """
    SELECT t.id, t.booked_on, t.description, t.currency, t.amount_minor, b.code,
           c.code, c.name, t.import_id
    FROM bank_transactions t
    JOIN accounts b ON b.id = t.account_id
    LEFT JOIN LATERAL (
        SELECT coalesce(t.category_account_id, (
            SELECT l.account_id FROM journal_lines l
            WHERE l.entry_id = t.entry_id AND l.account_id <> t.account_id
            ORDER BY l.id LIMIT 1)) AS account_id
    ) cat ON true
    LEFT JOIN accounts c ON c.id = cat.account_id
"""


def _bank(row: tuple[Any, ...]) -> m.BankTransaction:
    return m.BankTransaction(
        id=row[0],
        booked_on=row[1],
        description=row[2],
        currency=row[3],
        amount=amount(row[4], row[3]),
        amount_minor=row[4],
        bank_account_code=row[5],
        category_code=row[6],
        category_name=row[7],
        import_id=row[8],
    )


def bank_transactions(
    conn: psycopg.Connection, client_id: uuid.UUID, limit: int, after: str | None
) -> m.BankTransactionPage:
    """Bank transactions in (date, id) order with their category."""
    day, last = (dt.date.min, 0)
    if after:
        raw_day, raw_id = decode_cursor(after, 2)
        day, last = _cursor_date(raw_day), _cursor_int(raw_id)
    rows = conn.execute(
        _BANK_SELECT + " WHERE t.client_id = %s AND (t.booked_on, t.id) > (%s, %s)"
        " ORDER BY t.booked_on, t.id LIMIT %s",
        (client_id, day, last, limit + 1),
    ).fetchall()
    page = [_bank(r) for r in rows[:limit]]
    more = len(rows) > limit
    return m.BankTransactionPage(
        transactions=page, next=encode_cursor(page[-1].booked_on, page[-1].id) if more else None
    )


def recategorise(
    conn: psycopg.Connection,
    client_id: uuid.UUID,
    transaction_id: int,
    body: m.CategoryChange,
    actor: str,
) -> m.Recategorised:
    """Move a bank transaction to another category account.

    Posts a reclassification entry that takes the amount off the current category and
    puts it on the new one, records the new category, and audits both, in the caller's
    transaction.

    Raises:
        NotFound: no such transaction for this client.
        ValidationError: the account code is not in the chart, or is the bank account.
        Conflict: the transaction posted nothing (zero amount), so has no category.
    """
    row = conn.execute(
        "SELECT id, account_id, entry_id, amount_minor, currency, booked_on"
        " FROM bank_transactions WHERE id = %s AND client_id = %s FOR UPDATE",
        (transaction_id, client_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"bank transaction {transaction_id} not found")
    _, bank_account, entry_id, amount_minor, currency, booked_on = row
    if entry_id is None:
        raise Conflict(f"bank transaction {transaction_id} has a zero amount and no category")
    target = conn.execute(
        "SELECT id FROM accounts WHERE client_id = %s AND code = %s",
        (client_id, body.account_code),
    ).fetchone()
    if target is None:
        raise ValidationError(f"field 'account_code': {body.account_code!r} is not in the chart")
    if target[0] == bank_account:
        raise ValidationError("field 'account_code': the bank account cannot be its own category")
    current = conn.execute(
        "SELECT coalesce((SELECT category_account_id FROM bank_transactions WHERE id = %s),"
        " (SELECT account_id FROM journal_lines WHERE entry_id = %s AND account_id <> %s"
        "  ORDER BY id LIMIT 1))",
        (transaction_id, entry_id, bank_account),
    ).fetchone()
    assert current is not None
    entry_no: int | None = None
    if current[0] != target[0]:
        # A transaction in a closed period is corrected on the first open day after it.
        lock = conn.execute(
            "SELECT locked_through FROM period_locks WHERE client_id = %s", (client_id,)
        ).fetchone()
        posted_on = booked_on
        memo = "re-categorised"
        if lock is not None and booked_on <= lock[0]:
            posted_on = lock[0] + dt.timedelta(days=1)
            memo = f"re-categorised; the books are closed through {lock[0].isoformat()}"
        # The counterpart line carried -amount on the old category: reverse it there and
        # carry it on the new one.
        posted = conn.execute(
            "INSERT INTO journal_entries (client_id, booked_on, reference, memo, source)"
            " VALUES (%s, %s, %s, %s, 'reclassification') RETURNING id",
            (client_id, posted_on, f"bank-transaction:{transaction_id}", memo),
        ).fetchone()
        assert posted is not None
        entry_no = int(posted[0])
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO journal_lines (entry_id, client_id, account_id, amount_minor,"
                " currency) VALUES (%s, %s, %s, %s, %s)",
                [
                    (entry_no, client_id, current[0], amount_minor, currency),
                    (entry_no, client_id, target[0], -amount_minor, currency),
                ],
            )
        conn.execute(
            "UPDATE bank_transactions SET category_account_id = %s WHERE id = %s",
            (target[0], transaction_id),
        )
        audit.record(
            conn,
            actor=actor,
            action="bank_transaction.recategorised",
            client_id=client_id,
            subject=str(transaction_id),
            details={"from_account": current[0], "to_account": target[0], "entry_id": entry_no},
        )
    updated = conn.execute(_BANK_SELECT + " WHERE t.id = %s", (transaction_id,)).fetchone()
    assert updated is not None
    return m.Recategorised(transaction=_bank(updated), reclassification_entry_id=entry_no)


_IMPORT_COLUMNS = (
    "id, blob_name, format, status, reason, rows_read, imported, duplicates, error_count,"
    " started_at, finished_at"
)


def _import(row: tuple[Any, ...]) -> m.ImportSummary:
    keys = list(m.ImportSummary.model_fields)
    return m.ImportSummary(**dict(zip(keys, row, strict=True)))


def imports(conn: psycopg.Connection, client_id: uuid.UUID) -> m.ImportList:
    rows = conn.execute(
        f"SELECT {_IMPORT_COLUMNS} FROM ledger_imports WHERE client_id = %s ORDER BY id DESC"
        " LIMIT 1000",
        (client_id,),
    ).fetchall()
    return m.ImportList(imports=[_import(r) for r in rows])


def import_report(
    conn: psycopg.Connection, client_id: uuid.UUID, import_id: int
) -> m.ImportReport:
    row = conn.execute(
        f"SELECT {_IMPORT_COLUMNS}, report FROM ledger_imports WHERE client_id = %s AND id = %s",
        (client_id, import_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"import {import_id} not found")
    return m.ImportReport.model_validate({"import": _import(row[:-1]), "report": row[-1]})


# -- Billing -------------------------------------------------------------------------------


def invoices(conn: psycopg.Connection, client_id: uuid.UUID) -> m.InvoiceList:
    """Invoices billed to the client (through its linked Stripe customers)."""
    rows = conn.execute(
        """
        SELECT i.stripe_id, i.number, i.status, i.currency, i.total_minor,
               i.amount_due_minor, i.amount_paid_minor, i.updated_at
        FROM stripe_invoices i
        JOIN stripe_customers c
          ON c.books_client_id = i.books_client_id AND c.stripe_id = i.customer
        WHERE c.client_id = %s
        ORDER BY i.snapshot_at DESC, i.stripe_id
        LIMIT 1000
        """,
        (client_id,),
    ).fetchall()
    return m.InvoiceList(
        invoices=[
            m.Invoice(
                id=r[0],
                number=r[1],
                status=r[2],
                currency=r[3],
                total=amount(r[4], r[3]),
                total_minor=r[4],
                amount_due_minor=r[5],
                amount_paid_minor=r[6],
                updated_at=r[7],
            )
            for r in rows
        ]
    )


def payments(conn: psycopg.Connection, client_id: uuid.UUID) -> m.PaymentList:
    """Charges paid by the client's linked Stripe customers."""
    rows = conn.execute(
        """
        SELECT ch.stripe_id, ch.status, ch.invoice, ch.currency, ch.amount_minor,
               ch.amount_refunded_minor, ch.updated_at
        FROM stripe_charges ch
        JOIN stripe_customers c
          ON c.books_client_id = ch.books_client_id AND c.stripe_id = ch.customer
        WHERE c.client_id = %s
        ORDER BY ch.snapshot_at DESC, ch.stripe_id
        LIMIT 1000
        """,
        (client_id,),
    ).fetchall()
    return m.PaymentList(
        payments=[
            m.Payment(
                id=r[0],
                status=r[1],
                invoice=r[2],
                currency=r[3],
                amount=amount(r[4], r[3]),
                amount_minor=r[4],
                amount_refunded_minor=r[5],
                updated_at=r[6],
            )
            for r in rows
        ]
    )


# -- Audit ---------------------------------------------------------------------------------


def audit_log(
    conn: psycopg.Connection, client_id: uuid.UUID, limit: int, after: str | None
) -> m.AuditPage:
    """The client's audit rows, newest first."""
    before = _cursor_int(decode_cursor(after, 1)[0]) if after else 2**62
    rows = conn.execute(
        "SELECT id, seq, occurred_at, actor, action, subject, details FROM audit_log"
        " WHERE chain = %s AND client_id = %s AND seq < %s ORDER BY seq DESC LIMIT %s",
        (client_id, client_id, before, limit + 1),
    ).fetchall()
    entries = [
        m.AuditEntry(
            id=r[0],
            seq=r[1],
            occurred_at=r[2],
            actor=r[3],
            action=r[4],
            subject=r[5],
            details=r[6],
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return m.AuditPage(entries=entries, next=encode_cursor(entries[-1].seq) if more else None)


def verify_audit(conn: psycopg.Connection, client_id: uuid.UUID) -> m.AuditVerification:
    """Walk the client's hash chain; every break is listed."""
    breaks = audit.verify(conn, client_id)
    counted = conn.execute(
        "SELECT count(*) FROM audit_log WHERE chain = %s", (client_id,)
    ).fetchone()
    assert counted is not None
    return m.AuditVerification(
        intact=not breaks,
        rows_checked=int(counted[0]),
        breaks=[m.ChainBreak(id=b["id"], seq=b["seq"], problem=b["problem"]) for b in breaks],
    )


# -- Insights ------------------------------------------------------------------------------


def insights(conn: psycopg.Connection, client_id: uuid.UUID, today: dt.date) -> m.Insights:
    """Revenue by month (12 months), receivables ageing, expenses of the last 12 months by
    account, and cash runway, each computed in SQL."""
    year_ago = (today.replace(day=1) - dt.timedelta(days=335)).replace(day=1)
    revenue = conn.execute(
        """
        SELECT to_char(date_trunc('month', e.booked_on), 'YYYY-MM'), l.currency,
               -sum(l.amount_minor)
        FROM accounts a
        JOIN journal_lines l ON l.account_id = a.id
        JOIN journal_entries e ON e.id = l.entry_id
        WHERE a.client_id = %s AND a.type = 'income' AND e.booked_on >= %s
          AND e.booked_on <= %s
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        (client_id, year_ago, today),
    ).fetchall()
    ageing = conn.execute(
        """
        WITH open AS (
            SELECT i.currency, i.amount_due_minor - i.amount_paid_minor AS due,
                   %(today)s - CASE WHEN i.data->>'due_date' ~ '^[0-9]{1,12}$'
                                    THEN to_timestamp((i.data->>'due_date')::bigint)::date
                                    ELSE i.snapshot_at::date END AS days
            FROM stripe_invoices i
            LEFT JOIN stripe_customers c
              ON c.books_client_id = i.books_client_id AND c.stripe_id = i.customer
            WHERE (c.client_id = %(client)s OR i.books_client_id = %(client)s)
              AND i.status = 'open' AND i.amount_due_minor > i.amount_paid_minor
        )
        SELECT CASE WHEN days <= 0 THEN 'current' WHEN days <= 30 THEN '1-30'
                    WHEN days <= 60 THEN '31-60' WHEN days <= 90 THEN '61-90' ELSE '90+' END,
               currency, sum(due), count(*)
        FROM open GROUP BY 1, 2 ORDER BY 2, min(days)
        """,
        {"today": today, "client": client_id},
    ).fetchall()
    expenses = conn.execute(
        """
        SELECT a.code, a.name, l.currency, sum(l.amount_minor)
        FROM accounts a
        JOIN journal_lines l ON l.account_id = a.id
        JOIN journal_entries e ON e.id = l.entry_id
        WHERE a.client_id = %s AND a.type = 'expense' AND e.booked_on >= %s
          AND e.booked_on <= %s
        GROUP BY 1, 2, 3 HAVING sum(l.amount_minor) <> 0 ORDER BY 4 DESC, 1
        """,
        (client_id, year_ago, today),
    ).fetchall()
    window_start = (today.replace(day=1) - dt.timedelta(days=RUNWAY_MONTHS * 31)).replace(day=1)
    runway = conn.execute(
        """
        SELECT l.currency, sum(l.amount_minor),
               sum(l.amount_minor) FILTER (WHERE e.booked_on >= %s
                                             AND e.booked_on < date_trunc('month', %s::date))
        FROM accounts a
        JOIN journal_lines l ON l.account_id = a.id
        JOIN journal_entries e ON e.id = l.entry_id
        WHERE a.client_id = %s AND a.type = 'asset'
          AND (a.external_ref IS NOT NULL OR a.code = '1000') AND e.booked_on <= %s
        GROUP BY 1 ORDER BY 1
        """,
        (window_start, today, client_id, today),
    ).fetchall()
    return m.Insights(
        revenue_by_month=[
            m.MonthAmount(month=r[0], currency=r[1], amount=amount(r[2], r[1]), amount_minor=r[2])
            for r in revenue
        ],
        receivables_ageing=[
            m.AgeingBucket(
                bucket=r[0],
                currency=r[1],
                amount=amount(r[2], r[1]),
                amount_minor=r[2],
                invoices=r[3],
            )
            for r in ageing
        ],
        expense_breakdown=[
            m.ExpenseLine(
                code=r[0], name=r[1], currency=r[2], amount=amount(r[3], r[2]), amount_minor=r[3]
            )
            for r in expenses
        ],
        cash_runway=[_runway(r[0], int(r[1]), int(r[2] or 0)) for r in runway],
    )


def _runway(currency: str, cash: int, change: int) -> m.Runway:
    burn = max(0, -change) // RUNWAY_MONTHS
    months = None
    if burn > 0:
        months = str((Decimal(cash) / Decimal(burn)).quantize(Decimal("0.1"), ROUND_HALF_UP))
    return m.Runway(
        currency=currency,
        cash=amount(cash, currency),
        cash_minor=cash,
        monthly_burn_minor=burn,
        months=months,
    )
