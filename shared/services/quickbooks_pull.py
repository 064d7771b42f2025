"""Pull: changes made in QuickBooks brought back into the local mirror (``quickbooks_entities``).

``apply_change`` handles one message of the QuickBooks events queue (create, update, delete,
void, merge, emailed); ``run_cdc`` asks Change Data Capture for everything changed since the
realm's cursor, to heal missed webhooks. A record this app sent that is deleted or merged
away in QuickBooks is marked as a conflict on its sync row.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from shared.adapters import quickbooks as qbo
from shared.adapters.postgres import transaction
from shared.errors import ValidationError
from shared.services import quickbooks_connections as connections
from shared.services.quickbooks_sync import ApiSession, PushOutcome, call

log = logging.getLogger(__name__)

CDC_ENTITIES = ("Customer", "Invoice", "Payment", "JournalEntry", "Account")
CDC_MAX_LOOKBACK = timedelta(days=30)
NOT_FOUND_CODE = "610"


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """What one change did to the mirror: ``applied``, ``stale`` (older than the mirror),
    ``skipped`` (unknown or disconnected realm), ``ignored`` (an entity not mirrored)."""

    status: str
    state: str | None = None


# Limitation: pulled changes update the mirror (and flag conflicts) but never the ledger.
def apply_change(
    body: Mapping[str, Any], *, sleep: Callable[[float], None] = time.sleep
) -> ChangeOutcome:
    """Bring one entity change into the mirror; the same change twice does nothing more.

    Raises:
        ValidationError: the message lacks a field (named).
        NeedsReconnect: the realm's grant is gone.
    """
    fields = {}
    for name in ("realm_id", "entity", "entity_id", "operation", "last_updated"):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise ValidationError(f"quickbooks change: field {name!r} is missing")
        fields[name] = value
    if fields["entity"] not in CDC_ENTITIES:
        return ChangeOutcome("ignored")
    connection = _active_connection(fields["realm_id"])
    if connection is None:
        return ChangeOutcome("skipped")
    client_id, entity, qbo_id = connection.client_id, fields["entity"], fields["entity_id"]
    changed_at = _time(fields["last_updated"])
    if _mirror_is_newer(client_id, entity, qbo_id, changed_at):
        return ChangeOutcome("stale")
    operation = fields["operation"]
    if operation == "Delete":
        _store(client_id, entity, qbo_id, "deleted", changed_at, None)
        return ChangeOutcome("applied", "deleted")
    if operation == "Merge" and isinstance(body.get("deleted_id"), str):
        _merged(client_id, entity, str(body["deleted_id"]), qbo_id, changed_at)
    session = ApiSession(connection, connections.api_for(connection), PushOutcome(), sleep)
    try:
        current = call(session, lambda api: api.read(entity, qbo_id))
    except qbo.Fault as fault:
        if fault.code != NOT_FOUND_CODE:
            raise
        # Deleted in QuickBooks since the change was announced.
        _store(client_id, entity, qbo_id, "deleted", changed_at, None)
        return ChangeOutcome("applied", "deleted")
    state = _state_of(current, operation)
    _store(client_id, entity, qbo_id, state, _last_updated(current) or changed_at, current)
    return ChangeOutcome("applied", state)


def run_cdc(realm_id: str, *, sleep: Callable[[float], None] = time.sleep) -> int:
    """Apply everything Change Data Capture reports since the realm's cursor; returns the
    number of entities applied. The cursor moves to the newest change seen."""
    connection = _active_connection(realm_id)
    if connection is None:
        return 0
    with transaction() as conn:
        row = conn.execute(
            "SELECT coalesce(cdc_cursor, connected_at) FROM quickbooks_connections "
            "WHERE realm_id = %s",
            (realm_id,),
        ).fetchone()
    assert row is not None
    since = max(row[0], datetime.now(UTC) - CDC_MAX_LOOKBACK)
    session = ApiSession(connection, connections.api_for(connection), PushOutcome(), sleep)
    changes = call(session, lambda api: api.cdc(list(CDC_ENTITIES), since.isoformat()))
    newest = since
    applied = 0
    for entity, rows in changes.items():
        for current in rows:
            stamp = _last_updated(current) or since
            newest = max(newest, stamp)
            if _mirror_is_newer(connection.client_id, entity, str(current["Id"]), stamp):
                continue
            deleted = str(current.get("status", "")).lower() == "deleted"
            state = "deleted" if deleted else _state_of(current, "Update")
            _store(
                connection.client_id,
                entity,
                str(current["Id"]),
                state,
                stamp,
                None if deleted else current,
            )
            applied += 1
    with transaction() as conn:
        conn.execute(
            "UPDATE quickbooks_connections SET cdc_cursor = %s, updated_at = now() "
            "WHERE realm_id = %s",
            (newest, realm_id),
        )
    return applied


def active_realms() -> list[str]:
    with transaction() as conn:
        rows = conn.execute(
            "SELECT realm_id FROM quickbooks_connections WHERE status = 'active' ORDER BY 1"
        ).fetchall()
    return [str(r[0]) for r in rows]


def _active_connection(realm_id: str) -> connections.Connection | None:
    with transaction() as conn:
        row = conn.execute(
            "SELECT realm_id, client_id, environment, status FROM quickbooks_connections "
            "WHERE realm_id = %s",
            (realm_id,),
        ).fetchone()
    if row is None or row[3] != "active":
        log.warning(
            "quickbooks change for realm %s skipped: %s",
            realm_id,
            "not connected" if row is None else row[3],
            extra={"realm_id": realm_id},
        )
        return None
    return connections.Connection(*row)


def _mirror_is_newer(client_id: uuid.UUID, entity: str, qbo_id: str, changed_at: datetime) -> bool:
    with transaction() as conn:
        row = conn.execute(
            "SELECT last_updated FROM quickbooks_entities WHERE client_id = %s AND entity = %s "
            "AND qbo_id = %s",
            (client_id, entity, qbo_id),
        ).fetchone()
    return row is not None and row[0] is not None and row[0] >= changed_at


def _store(
    client_id: uuid.UUID,
    entity: str,
    qbo_id: str,
    state: str,
    last_updated: datetime,
    data: dict[str, Any] | None,
    merged_into: str | None = None,
) -> None:
    with transaction() as conn:
        conn.execute(
            "INSERT INTO quickbooks_entities (client_id, entity, qbo_id, sync_token, state, "
            "merged_into, last_updated, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (client_id, entity, qbo_id) DO UPDATE SET sync_token = "
            "EXCLUDED.sync_token, state = EXCLUDED.state, merged_into = EXCLUDED.merged_into, "
            "last_updated = EXCLUDED.last_updated, data = EXCLUDED.data, updated_at = now() "
            "WHERE quickbooks_entities.last_updated IS NULL "
            "OR quickbooks_entities.last_updated <= EXCLUDED.last_updated",
            (
                client_id,
                entity,
                qbo_id,
                str(data["SyncToken"]) if data and "SyncToken" in data else None,
                state,
                merged_into,
                last_updated,
                Jsonb(data, dumps=qbo.dumps) if data is not None else None,
            ),
        )
        if state in ("deleted", "merged"):
            _conflict(conn, client_id, entity, qbo_id, state, merged_into)
        elif data is not None:
            conn.execute(
                "UPDATE quickbooks_sync SET sync_token = %s, updated_at = now() "
                "WHERE client_id = %s AND entity = %s AND qbo_id = %s AND status = 'synced'",
                (str(data.get("SyncToken")), client_id, entity, qbo_id),
            )


def _conflict(
    conn: psycopg.Connection,
    client_id: uuid.UUID,
    entity: str,
    qbo_id: str,
    state: str,
    merged_into: str | None,
) -> None:
    """A record we sent was deleted or merged away in QuickBooks: say so on its sync row."""
    if state == "merged" and merged_into:
        reason = f"merged into {entity} {merged_into} in QuickBooks"
        conn.execute(
            "UPDATE quickbooks_sync SET qbo_id = %s, reason = %s, updated_at = now() "
            "WHERE client_id = %s AND entity = %s AND qbo_id = %s",
            (merged_into, reason, client_id, entity, qbo_id),
        )
        return
    conn.execute(
        "UPDATE quickbooks_sync SET status = 'failed', reason = %s, updated_at = now() "
        "WHERE client_id = %s AND entity = %s AND qbo_id = %s",
        (f"conflict: {entity} {qbo_id} was deleted in QuickBooks", client_id, entity, qbo_id),
    )


def _merged(
    client_id: uuid.UUID, entity: str, gone_id: str, survivor_id: str, changed_at: datetime
) -> None:
    _store(client_id, entity, gone_id, "merged", changed_at, None, merged_into=survivor_id)


def _state_of(current: Mapping[str, Any], operation: str) -> str:
    voided = operation == "Void" or str(current.get("PrivateNote", "")).startswith("Voided")
    return "voided" if voided else "active"


def _last_updated(current: Mapping[str, Any]) -> datetime | None:
    stamp = (current.get("MetaData") or {}).get("LastUpdatedTime")
    return _time(stamp) if isinstance(stamp, str) else None


def _time(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"quickbooks change: last_updated {text!r} is not a time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
