"""Postgres access: one connection pool per worker process, and transactions from it.

Only this module knows psycopg's connection handling; services get a connection and run
SQL on it. A database that cannot be reached surfaces as a retryable ``UpstreamError``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool

from shared import telemetry
from shared.config import get_settings
from shared.errors import UpstreamError

log = logging.getLogger(__name__)

_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()


def _configure(conn: psycopg.Connection) -> None:
    timeout_ms = get_settings().db_statement_timeout_s * 1000
    conn.execute(f"SET statement_timeout = {int(timeout_ms)}")
    conn.execute("SET TIME ZONE 'UTC'")
    conn.commit()


def pool() -> ConnectionPool:
    """Return the worker's pool, opening it on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = open_pool("advisoros")
        return _pool


def open_pool(name: str) -> ConnectionPool:
    """Open a pool of its own, sized and configured as the worker's; the caller closes it.

    For code that takes a connection while a caller may hold one of the worker's pool (the
    local broker, during an outbox hand-off): from the same pool, enough such callers at
    once would each wait for a connection that none of them gives back.
    """
    settings = get_settings()
    return ConnectionPool(
        settings.database_url,
        min_size=0,
        max_size=settings.db_pool_max_size,
        timeout=settings.db_pool_timeout_s,
        configure=_configure,
        open=True,
        name=name,
    )


def close_pool() -> None:
    """Close the worker's pool (tests and scripts; the host keeps it for the process)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
            _pool = None


@contextmanager
def transaction() -> Iterator[psycopg.Connection]:
    """Yield a connection inside one transaction: committed on success, rolled back on error.

    Raises:
        UpstreamError: the database could not be reached (retryable).
    """
    try:
        with (
            telemetry.database_span("transaction"),
            pool().connection() as conn,
            conn.transaction(),
        ):
            yield conn
    except psycopg.OperationalError as exc:
        log.error("postgres unavailable: %s", exc, extra={"system": "postgres"})
        raise UpstreamError(
            "the database is unavailable", provider="postgres", retryable=True
        ) from exc
