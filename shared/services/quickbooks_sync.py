"""Push: the ledger and billing records of a client sent to its QuickBooks company.

Every record to send has a row in ``quickbooks_sync`` (pending, synced with QuickBooks' Id
and SyncToken, failed with QuickBooks' fault, or blocked with the reason). Records go out in
batch requests, each with a ``requestid``; a batch is given its id before it is sent, so a
retry after a lost answer, even from another worker, repeats the same request and QuickBooks
answers it from memory instead of creating twice. Requests pass through the realm's shared
budget (``quickbooks_limits``).

``enqueue`` finds new records, ``push`` sends what is pending, ``push_client`` does both.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import psycopg

from shared import telemetry
from shared.adapters import quickbooks as qbo
from shared.adapters.postgres import transaction
from shared.config import get_settings
from shared.domain.money import exponent
from shared.errors import NotFound, ValidationError
from shared.messaging import QUICKBOOKS_SYNC_QUEUE, MessageSender, OutboundMessage
from shared.services import quickbooks_connections as connections
from shared.services import quickbooks_limits as limits

log = logging.getLogger(__name__)

ENTITY_ORDER = ("Customer", "Invoice", "Payment", "JournalEntry")
CLASSIFICATIONS = {
    "asset": "Asset",
    "liability": "Liability",
    "equity": "Equity",
    "income": "Revenue",
    "expense": "Expense",
}
STALE_RETRIES = 3
DOC_NUMBER_MAX = 21
T = TypeVar("T")


@dataclass
class PushOutcome:
    """What one push did: records synced, failed and blocked, requests and throttles seen."""

    synced: int = 0
    failed: int = 0
    blocked: int = 0
    waiting: int = 0
    requests: int = 0
    throttled: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass
class ApiSession:
    connection: connections.Connection
    api: qbo.QuickBooksApi
    outcome: PushOutcome
    sleep: Callable[[float], None]


@dataclass(frozen=True, slots=True)
class _Row:
    entity: str
    local_key: str
    request_id: uuid.UUID
    qbo_id: str | None
    sync_token: str | None
    batch_id: uuid.UUID | None


def push_client(
    client_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep
) -> PushOutcome:
    """Find the client's new records and send everything pending to QuickBooks."""
    enqueue(client_id)
    return push(client_id, sleep=sleep)


def enqueue(client_id: uuid.UUID) -> int:
    """Add a pending sync row for every record not yet tracked; returns how many were added."""
    with transaction() as conn:
        added = 0
        for sql in (
            "INSERT INTO quickbooks_sync (client_id, entity, local_key) "
            "SELECT %(c)s, 'Customer', stripe_id FROM stripe_customers "
            "WHERE books_client_id = %(c)s ON CONFLICT DO NOTHING",
            "INSERT INTO quickbooks_sync (client_id, entity, local_key) "
            "SELECT %(c)s, 'Invoice', stripe_id FROM stripe_invoices "
            "WHERE books_client_id = %(c)s AND status <> 'draft' ON CONFLICT DO NOTHING",
            "INSERT INTO quickbooks_sync (client_id, entity, local_key) "
            "SELECT %(c)s, 'Payment', stripe_id FROM stripe_charges "
            "WHERE books_client_id = %(c)s AND status = 'succeeded' AND customer IS NOT NULL "
            "ON CONFLICT DO NOTHING",
            "INSERT INTO quickbooks_sync (client_id, entity, local_key) "
            "SELECT %(c)s, 'JournalEntry', id::text FROM journal_entries "
            "WHERE client_id = %(c)s AND source <> 'quickbooks' ON CONFLICT DO NOTHING",
        ):
            added += conn.execute(sql, {"c": client_id}).rowcount
    return added


def mark_changed(client_id: uuid.UUID, entity: str, local_key: str) -> None:
    """Send a synced record again (as an update), after it changed locally."""
    with transaction() as conn:
        conn.execute(
            "UPDATE quickbooks_sync SET status = 'pending', reason = NULL, fault = NULL, "
            "updated_at = now() WHERE client_id = %s AND entity = %s AND local_key = %s",
            (client_id, entity, local_key),
        )


def push(client_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep) -> PushOutcome:
    """Send every pending record of the client, in batches, customers first.

    Raises:
        NotFound: the client has no QuickBooks connection.
        NeedsReconnect: the realm must be connected again; nothing was sent.
        UpstreamError: QuickBooks kept failing (throttled, 5xx, timeouts, open breaker);
            what was answered is recorded, the rest stays pending for the next try.
    """
    connection = connections.connection_for_client(client_id)
    if _pending(client_id) == 0:
        telemetry.record_sync_lag(connection.realm_id, 0.0)
        return PushOutcome()
    session = ApiSession(connection, connections.api_for(connection), PushOutcome(), sleep)
    auto_map_accounts(client_id, session)
    size = get_settings().quickbooks_batch_max_items
    # A record put back to pending during this push (no answer, stale again and again)
    # waits for the next push instead of being retried in a loop.
    with transaction() as conn:
        started = conn.execute("SELECT now()").fetchone()
    assert started is not None
    for entity in ENTITY_ORDER:
        while True:
            batch = _next_batch(client_id, entity, size, session.outcome, started[0])
            if batch is None:
                break
            batch_id, items, rows = batch
            _send_batch(client_id, session, batch_id, items, rows)
    session.outcome.waiting, lag_s = _backlog(client_id)
    telemetry.record_sync_lag(connection.realm_id, lag_s)
    log.info(
        "quickbooks push for realm %s: %s synced, %s failed, %s blocked, %s requests",
        connection.realm_id,
        session.outcome.synced,
        session.outcome.failed,
        session.outcome.blocked,
        session.outcome.requests,
        extra={"realm_id": connection.realm_id, "client_id": str(client_id)},
    )
    return session.outcome


def _pending(client_id: uuid.UUID) -> int:
    with transaction() as conn:
        row = conn.execute(
            "SELECT count(*) FROM quickbooks_sync WHERE client_id = %s AND status = 'pending'",
            (client_id,),
        ).fetchone()
    return int(row[0]) if row else 0


def _backlog(client_id: uuid.UUID) -> tuple[int, float]:
    # Records still pending, and how long the oldest has waited (the realm's sync lag).
    with transaction() as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(updated_at)), 0)"
            " FROM quickbooks_sync WHERE client_id = %s AND status = 'pending'",
            (client_id,),
        ).fetchone()
    return (int(row[0]), float(row[1])) if row else (0, 0.0)


# -- account map -----------------------------------------------------------------------------


def auto_map_accounts(client_id: uuid.UUID, session: ApiSession | None = None) -> int:
    """Map each unmapped ledger account to the QuickBooks account of the same name and type.

    Returns the number of accounts newly mapped. Manual mappings are never replaced.
    """
    if session is None:
        connection = connections.connection_for_client(client_id)
        session = ApiSession(
            connection, connections.api_for(connection), PushOutcome(), time.sleep
        )
    with transaction() as conn:
        unmapped = conn.execute(
            "SELECT a.id, a.name, a.type FROM accounts a WHERE a.client_id = %s AND NOT EXISTS "
            "(SELECT 1 FROM quickbooks_account_map m WHERE m.client_id = a.client_id "
            "AND m.account_id = a.id)",
            (client_id,),
        ).fetchall()
    if not unmapped:
        return 0
    remote = call(session, lambda api: api.query("select * from Account maxresults 1000"))
    by_key = {
        (_name_key(str(a.get("Name", ""))), a.get("Classification")): a
        for a in remote
        if a.get("Active", True)
    }
    matched = 0
    with transaction() as conn:
        for account_id, name, kind in unmapped:
            found = by_key.get((_name_key(name), CLASSIFICATIONS[kind]))
            if found is None:
                continue
            matched += conn.execute(
                "INSERT INTO quickbooks_account_map (client_id, account_id, qbo_account_id, "
                "qbo_account_name, matched_by) VALUES (%s, %s, %s, %s, 'auto') "
                "ON CONFLICT DO NOTHING",
                (client_id, account_id, str(found["Id"]), str(found["Name"])),
            ).rowcount
    return matched


def set_account_map(
    client_id: uuid.UUID, mappings: Iterable[dict[str, Any]], actor: str
) -> list[dict[str, Any]]:
    """Set mappings by hand: ``[{"account": "<code>", "qbo_account_id": "<id>",
    "qbo_account_name": "<name>"}]``; blocked records that needed them go back to pending.

    Raises:
        ValidationError: an entry is malformed or names an unknown account (index named).
    """
    items = list(mappings)
    with transaction() as conn:
        for index, item in enumerate(items):
            where = f"mappings[{index}]"
            if not isinstance(item, dict):
                raise ValidationError(f"{where}: must be an object")
            code, qbo_id = item.get("account"), item.get("qbo_account_id")
            if not isinstance(code, str) or not code.strip():
                raise ValidationError(f"{where}.account: must be a ledger account code")
            if not isinstance(qbo_id, str) or not qbo_id.isdigit():
                raise ValidationError(f"{where}.qbo_account_id: must be a QuickBooks account Id")
            found = conn.execute(
                "SELECT id FROM accounts WHERE client_id = %s AND code = %s", (client_id, code)
            ).fetchone()
            if found is None:
                raise ValidationError(f"{where}.account: no ledger account with code {code!r}")
            conn.execute(
                "INSERT INTO quickbooks_account_map (client_id, account_id, qbo_account_id, "
                "qbo_account_name, matched_by) VALUES (%s, %s, %s, %s, 'manual') "
                "ON CONFLICT (client_id, account_id) DO UPDATE SET qbo_account_id = "
                "EXCLUDED.qbo_account_id, qbo_account_name = EXCLUDED.qbo_account_name, "
                "matched_by = 'manual', updated_at = now()",
                (client_id, found[0], qbo_id, str(item.get("qbo_account_name") or "")),
            )
        conn.execute(
            "UPDATE quickbooks_sync SET status = 'pending', reason = NULL, updated_at = now() "
            "WHERE client_id = %s AND status = 'blocked'",
            (client_id,),
        )
    log.info("quickbooks account map edited by %s", actor, extra={"client_id": str(client_id)})
    return account_map(client_id)


def account_map(client_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every ledger account with its QuickBooks account, or null where unmapped."""
    with transaction() as conn:
        rows = conn.execute(
            "SELECT a.code, a.name, a.type, m.qbo_account_id, m.qbo_account_name, m.matched_by "
            "FROM accounts a LEFT JOIN quickbooks_account_map m ON m.client_id = a.client_id "
            "AND m.account_id = a.id WHERE a.client_id = %s ORDER BY a.code",
            (client_id,),
        ).fetchall()
    keys = ("account", "name", "type", "qbo_account_id", "qbo_account_name", "matched_by")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def sync_state(client_id: uuid.UUID) -> dict[str, Any]:
    """Counts per entity and status, and every failed or blocked record with its reason."""
    with transaction() as conn:
        counts = conn.execute(
            "SELECT entity, status, count(*) FROM quickbooks_sync WHERE client_id = %s "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            (client_id,),
        ).fetchall()
        problems = conn.execute(
            "SELECT entity, local_key, status, reason, fault FROM quickbooks_sync "
            "WHERE client_id = %s AND status IN ('failed', 'blocked') ORDER BY entity, local_key",
            (client_id,),
        ).fetchall()
    totals: dict[str, dict[str, int]] = {}
    for entity, status, count in counts:
        totals.setdefault(entity, {})[status] = int(count)
    return {
        "counts": totals,
        "problems": [
            {"entity": e, "local_key": k, "status": s, "reason": r, "fault": f}
            for e, k, s, r, f in problems
        ],
    }


def _name_key(name: str) -> str:
    return " ".join(name.replace("(deleted)", "").lower().split())


# -- batches ---------------------------------------------------------------------------------


def _next_batch(
    client_id: uuid.UUID, entity: str, size: int, outcome: PushOutcome, started: datetime
) -> tuple[uuid.UUID, list[dict[str, Any]], dict[str, _Row]] | None:
    """The next batch to send: one sent before and not answered, else a new one."""
    with transaction() as conn:
        rows = _rows(
            conn,
            "SELECT entity, local_key, request_id, qbo_id, sync_token, batch_id "
            "FROM quickbooks_sync WHERE client_id = %s AND entity = %s AND status = 'pending' "
            "AND batch_id IS NOT NULL ORDER BY batch_id, local_key LIMIT %s",
            (client_id, entity, size),
        )
        batch_id = rows[0].batch_id if rows else None
        if batch_id is not None:
            rows = [r for r in rows if r.batch_id == batch_id]
        else:
            rows = _rows(
                conn,
                "SELECT entity, local_key, request_id, qbo_id, sync_token, batch_id "
                "FROM quickbooks_sync WHERE client_id = %s AND entity = %s "
                "AND status = 'pending' AND batch_id IS NULL AND updated_at < %s "
                "ORDER BY length(local_key), local_key LIMIT %s FOR UPDATE SKIP LOCKED",
                (client_id, entity, started, size),
            )
            batch_id = uuid.uuid4()
        if not rows:
            return None
        items: list[dict[str, Any]] = []
        by_bid: dict[str, _Row] = {}
        for row in rows:
            try:
                payload = _payload(conn, client_id, row)
            except _Blocked as blocked:
                _set_status(conn, client_id, row, "blocked", str(blocked))
                outcome.blocked += 1
                continue
            except _Wait as waiting:
                # Left pending, out of this push's way, with what it waits for.
                _set_status(conn, client_id, row, "pending", str(waiting))
                continue
            bid = str(len(items) + 1)
            operation = "update" if row.qbo_id else "create"
            items.append({"bId": bid, "operation": operation, row.entity: payload})
            by_bid[bid] = row
        if not items:
            # Everything waits on something else (a customer not yet in QuickBooks) or was
            # blocked: nothing to send now. Waiting rows are left for the next push.
            return None
        conn.execute(
            "UPDATE quickbooks_sync SET batch_id = %s, attempts = attempts + 1 "
            "WHERE client_id = %s AND entity = %s AND local_key = ANY(%s)",
            (batch_id, client_id, entity, [r.local_key for r in by_bid.values()]),
        )
    return batch_id, items, by_bid


def _send_batch(
    client_id: uuid.UUID,
    session: ApiSession,
    batch_id: uuid.UUID,
    items: list[dict[str, Any]],
    rows: dict[str, _Row],
) -> None:
    answers = call(session, lambda api: api.batch(items, str(batch_id)))
    by_bid = {str(a.get("bId")): a for a in answers}
    stale: list[_Row] = []
    with transaction() as conn:
        for bid, row in rows.items():
            answer = by_bid.get(bid)
            if answer is None:
                _set_status(conn, client_id, row, "pending", None, clear_batch=True)
                continue
            if "Fault" in answer:
                fault = qbo.Fault(answer["Fault"])
                if fault.stale:
                    stale.append(row)
                    _set_status(conn, client_id, row, "pending", None, clear_batch=True)
                    continue
                _fail(conn, client_id, row, fault, session.outcome)
                continue
            entity = answer.get(row.entity) or {}
            _synced(conn, client_id, row, entity)
            session.outcome.synced += 1
    for row in stale:
        _update_after_stale(client_id, session, row)


def _update_after_stale(client_id: uuid.UUID, session: ApiSession, row: _Row) -> None:
    """A stale SyncToken: read the current version, apply our change to it, send again."""
    assert row.qbo_id is not None
    for _ in range(STALE_RETRIES):
        current = call(session, lambda api: api.read(row.entity, str(row.qbo_id)))
        with transaction() as conn:
            payload = _payload(conn, client_id, row)
        payload.update(Id=current["Id"], SyncToken=current["SyncToken"])
        # One request id per version sent: a retry of this very update is answered once.
        request_id = str(uuid.uuid4())
        try:
            updated = call(
                session,
                partial(_update, entity=row.entity, body=payload, request_id=request_id),
            )
        except qbo.Fault as fault:
            if fault.stale:
                continue
            with transaction() as conn:
                _fail(conn, client_id, row, fault, session.outcome)
            return
        with transaction() as conn:
            _synced(conn, client_id, row, updated)
        session.outcome.synced += 1
        return
    with transaction() as conn:
        reason = f"stale SyncToken {STALE_RETRIES} times in a row; will try again"
        _set_status(conn, client_id, row, "pending", reason, clear_batch=True)


def _update(
    api: qbo.QuickBooksApi, *, entity: str, body: dict[str, Any], request_id: str
) -> dict[str, Any]:
    return api.update(entity, body, request_id)


def call(session: ApiSession, request: Callable[[qbo.QuickBooksApi], T]) -> T:
    """One request through the realm's budget, retried on throttling, 5xx, timeouts and an
    expired access token; a QuickBooks fault about the request itself is raised as is."""
    settings = get_settings()
    realm = session.connection.realm_id
    attempt = 0
    while True:
        attempt += 1
        lease = limits.acquire(realm, sleep=session.sleep)
        session.outcome.requests += 1
        try:
            result = request(session.api)
        except qbo.Throttled as exc:
            session.outcome.throttled += 1
            limits.release(lease, "throttled", retry_after_s=exc.retry_after_s)
            _give_up_after(attempt, settings.quickbooks_max_attempts, exc, realm)
            continue
        except qbo.Unavailable as exc:
            limits.release(lease, "failed")
            _give_up_after(attempt, settings.quickbooks_max_attempts, exc, realm)
            session.sleep(limits.backoff_s(attempt))
            continue
        except qbo.AccessTokenRejected as exc:
            limits.release(lease, "ok")
            _give_up_after(attempt, settings.quickbooks_max_attempts, exc, realm)
            session.api = connections.api_for(
                session.connection, rejected=session.api.access_token
            )
            continue
        except BaseException:
            limits.release(lease, "ok")
            raise
        limits.release(lease, "ok")
        return result


def _give_up_after(attempt: int, most: int, exc: qbo.QuickBooksError, realm: str) -> None:
    log.warning(
        "quickbooks request for realm %s failed (attempt %s of %s): %s",
        realm,
        attempt,
        most,
        exc,
        extra={"realm_id": realm, "attempt": attempt},
    )
    if attempt >= most:
        raise exc


def _rows(conn: psycopg.Connection, sql: str, params: tuple[Any, ...]) -> list[_Row]:
    return [_Row(*row) for row in conn.execute(sql, params).fetchall()]


def _set_status(
    conn: psycopg.Connection,
    client_id: uuid.UUID,
    row: _Row,
    status: str,
    reason: str | None,
    *,
    clear_batch: bool = False,
) -> None:
    conn.execute(
        "UPDATE quickbooks_sync SET status = %s, reason = %s, updated_at = now(), "
        "batch_id = CASE WHEN %s THEN NULL ELSE batch_id END "
        "WHERE client_id = %s AND entity = %s AND local_key = %s",
        (status, reason, clear_batch, client_id, row.entity, row.local_key),
    )


def _synced(
    conn: psycopg.Connection, client_id: uuid.UUID, row: _Row, entity: dict[str, Any]
) -> None:
    conn.execute(
        "UPDATE quickbooks_sync SET status = 'synced', qbo_id = %s, sync_token = %s, "
        "reason = NULL, fault = NULL, batch_id = NULL, updated_at = now() "
        "WHERE client_id = %s AND entity = %s AND local_key = %s",
        (str(entity["Id"]), str(entity["SyncToken"]), client_id, row.entity, row.local_key),
    )


def _fail(
    conn: psycopg.Connection,
    client_id: uuid.UUID,
    row: _Row,
    fault: qbo.Fault,
    outcome: PushOutcome,
) -> None:
    """The record's dead letter: failed, with QuickBooks' fault kept whole."""
    reason = f"QuickBooks refused {row.entity} {row.local_key}: {fault}"
    conn.execute(
        "UPDATE quickbooks_sync SET status = 'failed', reason = %s, fault = %s, "
        "batch_id = NULL, updated_at = now() "
        "WHERE client_id = %s AND entity = %s AND local_key = %s",
        (reason, json.dumps(fault.fault), client_id, row.entity, row.local_key),
    )
    outcome.failed += 1
    outcome.failures.append(reason)
    log.error(reason, extra={"client_id": str(client_id), "entity": row.entity})


# -- payloads --------------------------------------------------------------------------------


class _Blocked(Exception):
    """The record cannot be sent until a person fixes something; the text says what."""


class _Wait(Exception):
    """The record depends on another one not yet in QuickBooks; it goes in a later batch."""


def _payload(conn: psycopg.Connection, client_id: uuid.UUID, row: _Row) -> dict[str, Any]:
    if row.entity == "JournalEntry":
        body = _journal_entry(conn, client_id, int(row.local_key))
    elif row.entity == "Customer":
        body = _customer(conn, client_id, row.local_key)
    elif row.entity == "Invoice":
        body = _invoice(conn, client_id, row.local_key)
    elif row.entity == "Payment":
        body = _payment(conn, client_id, row.local_key)
    else:
        raise _Blocked(f"{row.entity} records are not sent to QuickBooks")
    if row.qbo_id:
        body.update(Id=row.qbo_id, SyncToken=row.sync_token, sparse=True)
    return body


def _amount(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


def _journal_entry(
    conn: psycopg.Connection, client_id: uuid.UUID, entry_id: int
) -> dict[str, Any]:
    head = conn.execute(
        "SELECT booked_on, reference, memo FROM journal_entries WHERE client_id = %s AND id = %s",
        (client_id, entry_id),
    ).fetchone()
    if head is None:
        raise NotFound(f"journal entry {entry_id} not found")
    lines = conn.execute(
        "SELECT l.amount_minor, l.currency, l.memo, a.code, a.name, m.qbo_account_id "
        "FROM journal_lines l JOIN accounts a ON a.id = l.account_id "
        "LEFT JOIN quickbooks_account_map m ON m.client_id = l.client_id "
        "AND m.account_id = l.account_id WHERE l.entry_id = %s ORDER BY l.id",
        (entry_id,),
    ).fetchall()
    unmapped = sorted({f'{code} "{name}"' for _, _, _, code, name, qbo_id in lines if not qbo_id})
    if unmapped:
        raise _Blocked(
            f"ledger account {', '.join(unmapped)} has no QuickBooks account; map it with "
            f"PUT /api/clients/{client_id}/quickbooks/account-map"
        )
    currencies = {currency for _, currency, *_ in lines}
    # Limitation: an entry with lines in two currencies is blocked, not split per currency.
    if len(currencies) != 1:
        raise _Blocked(
            f"journal entry {entry_id} has lines in {len(currencies)} currencies "
            f"({', '.join(sorted(currencies))}); a QuickBooks JournalEntry takes one"
        )
    currency = currencies.pop()
    body_lines = [
        {
            "Id": str(index),
            "Description": memo or head[2] or "",
            "Amount": _amount(abs(amount), currency),
            "DetailType": "JournalEntryLineDetail",
            "JournalEntryLineDetail": {
                "PostingType": "Debit" if amount > 0 else "Credit",
                "AccountRef": {"value": qbo_id},
            },
        }
        for index, (amount, _, memo, _, _, qbo_id) in enumerate(lines, start=1)
    ]
    body: dict[str, Any] = {
        "TxnDate": head[0].isoformat(),
        "PrivateNote": f"AdvisorOS journal entry {entry_id}. {head[2]}".strip()[:4000],
        "CurrencyRef": {"value": currency},
        "Line": body_lines,
    }
    if head[1]:
        body["DocNumber"] = str(head[1])[:DOC_NUMBER_MAX]
    return body


def _customer(conn: psycopg.Connection, client_id: uuid.UUID, stripe_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT name, email FROM stripe_customers WHERE books_client_id = %s AND stripe_id = %s",
        (client_id, stripe_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"customer {stripe_id} not found")
    name, email = row
    # DisplayName must be unique in a company: the Stripe id keeps two "Jane Doe"s apart.
    body: dict[str, Any] = {"DisplayName": f"{name or email or 'Customer'} ({stripe_id})"[:500]}
    if email:
        body["PrimaryEmailAddr"] = {"Address": email}
    return body


def _invoice(conn: psycopg.Connection, client_id: uuid.UUID, stripe_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT i.number, i.currency, i.total_minor, i.snapshot_at, s.qbo_id, i.customer "
        "FROM stripe_invoices i LEFT JOIN quickbooks_sync s ON s.client_id = i.books_client_id "
        "AND s.entity = 'Customer' AND s.local_key = i.customer AND s.status = 'synced' "
        "WHERE i.books_client_id = %s AND i.stripe_id = %s",
        (client_id, stripe_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"invoice {stripe_id} not found")
    number, currency, total, snapshot_at, customer_qbo_id, customer = row
    if customer_qbo_id is None:
        raise _Wait(f"waiting for customer {customer} to be in QuickBooks")
    amount = _amount(total, currency)
    body: dict[str, Any] = {
        "CustomerRef": {"value": customer_qbo_id},
        "CurrencyRef": {"value": currency},
        "TxnDate": snapshot_at.date().isoformat(),
        "PrivateNote": f"Stripe invoice {stripe_id}",
        "Line": [
            {
                "Amount": amount,
                "DetailType": "SalesItemLineDetail",
                "Description": f"Stripe invoice {number or stripe_id}",
                # Limitation: every invoice line goes on item 1, the company's default
                # service item; there is no item map yet.
                "SalesItemLineDetail": {"ItemRef": {"value": "1"}},
            }
        ],
    }
    if number:
        body["DocNumber"] = str(number)[:DOC_NUMBER_MAX]
    return body


def _payment(conn: psycopg.Connection, client_id: uuid.UUID, stripe_id: str) -> dict[str, Any]:
    """A Stripe charge as a Payment, applied to its invoice when it has one (unapplied else)."""
    row = conn.execute(
        "SELECT c.currency, c.amount_captured_minor, c.snapshot_at, c.invoice, cu.qbo_id, "
        "inv.qbo_id FROM stripe_charges c "
        "LEFT JOIN quickbooks_sync cu ON cu.client_id = c.books_client_id "
        "AND cu.entity = 'Customer' AND cu.local_key = c.customer AND cu.status = 'synced' "
        "LEFT JOIN quickbooks_sync inv ON inv.client_id = c.books_client_id "
        "AND inv.entity = 'Invoice' AND inv.local_key = c.invoice AND inv.status = 'synced' "
        "WHERE c.books_client_id = %s AND c.stripe_id = %s",
        (client_id, stripe_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"charge {stripe_id} not found")
    currency, captured, snapshot_at, invoice, customer_qbo_id, invoice_qbo_id = row
    if customer_qbo_id is None:
        raise _Wait("waiting for its customer to be in QuickBooks")
    if invoice is not None and invoice_qbo_id is None:
        raise _Wait(f"waiting for invoice {invoice} to be in QuickBooks")
    amount = _amount(captured, currency)
    body: dict[str, Any] = {
        "CustomerRef": {"value": customer_qbo_id},
        "CurrencyRef": {"value": currency},
        "TotalAmt": amount,
        "TxnDate": snapshot_at.date().isoformat(),
        "PrivateNote": f"Stripe charge {stripe_id}",
        "PaymentRefNum": stripe_id[-21:],
    }
    if invoice_qbo_id is not None:
        body["Line"] = [
            {"Amount": amount, "LinkedTxn": [{"TxnId": invoice_qbo_id, "TxnType": "Invoice"}]}
        ]
    return body


def sync_message(client_id: uuid.UUID) -> tuple[str, OutboundMessage]:
    """The queue message asking for a push of the client's records (one session per realm).

    Raises:
        NotFound: the client has no QuickBooks connection.
    """
    connection = connections.connection_for_client(client_id)
    body = json.dumps({"client_id": str(client_id), "realm_id": connection.realm_id})
    message = OutboundMessage(
        message_id=f"qbo-sync:{client_id}:{uuid.uuid4()}",
        body=body.encode(),
        session_id=connection.realm_id,
        subject="quickbooks.push",
    )
    return QUICKBOOKS_SYNC_QUEUE, message


def request_push(client_id: uuid.UUID, sender: MessageSender) -> str:
    """Queue a push of the client's records; returns the realm it goes to."""
    queue, message = sync_message(client_id)
    sender.send(queue, [message])
    return str(message.session_id)


def reconciliation(client_id: uuid.UUID) -> dict[str, Any]:
    """Per mapped account: the ledger balance, the balance of what QuickBooks holds from us
    (entries synced), and the difference; with the records waiting, failed and blocked.

    Limitation: the QuickBooks side is what this app has synced, not QuickBooks' own
    CurrentBalance, so entries made in QuickBooks by hand are not in it; the mirror of
    pulled changes is not yet compared.
    """
    connection = connections.connection_for_client(client_id)
    with transaction() as conn:
        rows = conn.execute(
            "SELECT a.code, a.name, m.qbo_account_id, m.qbo_account_name, l.currency, "
            "sum(l.amount_minor), sum(l.amount_minor) FILTER (WHERE s.status = 'synced') "
            "FROM quickbooks_account_map m JOIN accounts a ON a.id = m.account_id "
            "JOIN journal_lines l ON l.account_id = a.id AND l.client_id = m.client_id "
            "LEFT JOIN quickbooks_sync s ON s.client_id = l.client_id "
            "AND s.entity = 'JournalEntry' AND s.local_key = l.entry_id::text "
            "WHERE m.client_id = %s GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 5",
            (client_id,),
        ).fetchall()
    accounts = [
        {
            "account": code,
            "name": name,
            "qbo_account_id": qbo_id,
            "qbo_account_name": qbo_name,
            "currency": currency,
            "ledger_minor": int(ledger),
            "quickbooks_minor": int(synced or 0),
            "difference_minor": int(ledger) - int(synced or 0),
        }
        for code, name, qbo_id, qbo_name, currency, ledger, synced in rows
    ]
    state = sync_state(client_id)
    return {
        "client_id": str(client_id),
        "realm_id": connection.realm_id,
        "connection": connection.status,
        "accounts": accounts,
        "counts": state["counts"],
        "waiting": sum(c.get("pending", 0) for c in state["counts"].values()),
        "failed": [p for p in state["problems"] if p["status"] == "failed"],
        "blocked": [p for p in state["problems"] if p["status"] == "blocked"],
    }
