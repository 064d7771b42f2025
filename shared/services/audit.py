"""The audit log: every state change worth explaining to an auditor, hash-chained per client.

The database computes each row's chain position and hash (see the audit_log migration);
this module only writes rows and asks the database to verify the chain.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg


def record(
    conn: psycopg.Connection,
    *,
    actor: str,
    action: str,
    client_id: uuid.UUID | None,
    subject: str,
    details: dict[str, Any],
) -> None:
    """Append one audit row inside the caller's transaction (so it commits with the change).

    Args:
        actor: who acted: a user id, or the process (``ledger-import``).
        action: dotted verb, such as ``ledger.import.imported``.
        client_id: the client the change belongs to; ``None`` for firm-wide rows.
        subject: what was acted on (a blob path, an entity id).
        details: JSON-safe facts; never secrets, tax ids or account numbers.
    """
    conn.execute(
        "INSERT INTO audit_log (actor, action, client_id, subject, details)"
        " VALUES (%s, %s, %s, %s, %s)",
        (actor, action, client_id, subject, json.dumps(details, sort_keys=True)),
    )


def verify(conn: psycopg.Connection, client_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """Return every break in the hash chain(s); an empty list means the log is intact."""
    rows = conn.execute(
        "SELECT id, chain, seq, problem FROM audit_log_verify(%s)", (client_id,)
    ).fetchall()
    return [{"id": r[0], "chain": str(r[1]), "seq": r[2], "problem": r[3]} for r in rows]
