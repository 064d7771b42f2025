"""Postgres access: one connection pool per worker process, and transactions from it.

Only this module knows psycopg's connection handling; services get a connection and run
SQL on it. A database that cannot be reached surfaces as a retryable ``UpstreamError``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool
from tenacity import RetryCallState, retry, retry_if_exception, stop_after_attempt, wait_random

from shared import telemetry
from shared.config import PORTAL_API_ROLE, get_settings
from shared.errors import NotFound, UpstreamError

log = logging.getLogger(__name__)

_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()
# Runs of a lone statement that the server rolls back (deadlock, serialization failure).
SINGLE_STATEMENT_ATTEMPTS = 3

F = TypeVar("F", bound=Callable[..., Any])


def rolled_back(exc: BaseException) -> bool:
    """Whether ``exc`` (or the database error behind it) says the server rolled the
    transaction back: SQLSTATE class 40, a deadlock victim or a serialization failure.
    Nothing of such a transaction was kept, so running it again is safe."""
    error = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    return isinstance(error, psycopg.Error) and (error.sqlstate or "").startswith("40")


def _log_rolled_back(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "transaction rolled back by the database; running it again: %s",
        error,
        extra={"system": "postgres", "attempt": state.attempt_number},
    )


def again_when_rolled_back(attempts: int) -> Callable[[F], F]:
    """Run the decorated transaction again, up to ``attempts`` runs in all, while the server
    rolls it back (``rolled_back``); after that its last error is raised as it was."""
    decorate = retry(
        retry=retry_if_exception(rolled_back),
        stop=stop_after_attempt(attempts),
        # A moment apart, so that two runs that deadlocked do not meet again at once.
        wait=wait_random(0, 0.05),
        before_sleep=_log_rolled_back,
        reraise=True,
    )
    return cast(Callable[[F], F], decorate)


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
def transaction(*, pipelined: bool = False) -> Iterator[psycopg.Connection]:
    """Yield a connection inside one transaction: committed on success, rolled back on error.

    With ``pipelined``, in pipeline mode: statements go to the server without waiting for
    each other's answers, and reading an answer (``fetchone``) waits for it and those before
    it. An error then surfaces when an answer after it is read, or at the commit: for work
    that can be run again without the pipeline to find which statement failed.

    Raises:
        UpstreamError: the database could not be reached (retryable).
    """
    try:
        with (
            telemetry.database_span("transaction"),
            pool().connection() as conn,
            conn.pipeline() if pipelined else nullcontext(),
            conn.transaction(),
        ):
            yield conn
    except psycopg.OperationalError as exc:
        log.error("postgres unavailable: %s", exc, extra={"system": "postgres"})
        raise UpstreamError(
            "the database is unavailable", provider="postgres", retryable=True
        ) from exc


def single_statement(query: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Run one statement in a transaction of its own and return its first row (or None).

    The statement runs in autocommit: the server wraps it in a transaction of its own and
    commits it before it says the statement is done, so the row is returned only once it is
    committed, at one round trip and without the client-side cost of BEGIN and COMMIT. See
    ``transaction`` for work that needs to read between statements.

    A statement the server rolled back as a deadlock victim or for a serialization failure
    ran alone in its transaction, so nothing of it remains: it is run again, up to
    ``SINGLE_STATEMENT_ATTEMPTS`` times in all.

    Raises:
        UpstreamError: the database could not be reached, or the statement was rolled back
            every time (retryable).
    """
    try:
        return _run_alone(query, params)
    except psycopg.OperationalError as exc:
        if rolled_back(exc):
            log.error("statement rolled back every time: %s", exc, extra={"system": "postgres"})
            raise UpstreamError(
                "the database rolled the statement back", provider="postgres", retryable=True
            ) from exc
        log.error("postgres unavailable: %s", exc, extra={"system": "postgres"})
        raise UpstreamError(
            "the database is unavailable", provider="postgres", retryable=True
        ) from exc


@again_when_rolled_back(SINGLE_STATEMENT_ATTEMPTS)
def _run_alone(query: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    with telemetry.database_span("transaction"), pool().connection() as conn:
        conn.autocommit = True
        try:
            return conn.execute(query, params).fetchone()
        finally:
            # The pool's other users expect transactions; a broken connection is discarded
            # by the pool whatever its mode.
            if not conn.closed:
                conn.autocommit = False


# -- The portal API's connections ---------------------------------------------------------

_api_pool: ConnectionPool | None = None


class ClientNotVisible(NotFound):
    """The client a scoped transaction was to be narrowed to is not one the user sees."""


def api_database_url() -> str:
    """The portal API role's URL: ``PORTAL_DATABASE_URL``, else ``DATABASE_URL`` with the
    user replaced by the API role (a local server with trust auth)."""
    settings = get_settings()
    if settings.portal_database_url:
        return settings.portal_database_url
    parts = urlsplit(settings.database_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{PORTAL_API_ROLE}@{host}"))


def api_pool() -> ConnectionPool:
    """Return the worker's pool of the portal API role, opening it on first use."""
    global _api_pool
    with _pool_lock:
        if _api_pool is None:
            settings = get_settings()
            _api_pool = ConnectionPool(
                api_database_url(),
                min_size=0,
                max_size=settings.db_pool_max_size,
                timeout=settings.db_pool_timeout_s,
                configure=_configure,
                # Autocommit: a lone statement (`api_fetchone`) is one round trip; requests
                # still run in explicit transactions (`scoped_transaction`).
                kwargs={"autocommit": True},
                open=True,
                name="advisoros-api",
            )
        return _api_pool


def api_fetchone(sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Run one statement as the portal API role, committed on its own; its first row.

    Raises:
        UpstreamError: the database could not be reached (retryable).
    """
    try:
        with api_pool().connection() as conn:
            return conn.execute(sql, params).fetchone()
    except psycopg.OperationalError as exc:
        log.error("postgres unavailable: %s", exc, extra={"system": "postgres"})
        raise UpstreamError(
            "the database is unavailable", provider="postgres", retryable=True
        ) from exc


def close_api_pool() -> None:
    """Close the portal API's pool (tests and scripts)."""
    global _api_pool
    with _pool_lock:
        if _api_pool is not None:
            _api_pool.close()
            _api_pool = None


@contextmanager
def scoped_transaction(
    *,
    firm_id: uuid.UUID,
    client_id: uuid.UUID | None,
    user_id: uuid.UUID,
    enter_client: uuid.UUID | None = None,
) -> Iterator[psycopg.Connection]:
    """Yield a connection of the API role inside one transaction that acts for a user.

    Row-level security reads the three settings made here, so every statement of the
    transaction sees only the firm's rows, and only one client's when ``client_id`` is set.

    Args:
        firm_id: the user's firm.
        client_id: the user's own client (client users), or None (firm staff).
        user_id: the user.
        enter_client: a client to narrow the transaction to, if the user may see it; made
            by the same statement as the settings (``portal_enter``, migration 0014).

    Raises:
        ClientNotVisible: ``enter_client`` does not exist or is not visible to the user.
        UpstreamError: the database could not be reached (retryable).
    """
    try:
        with api_pool().connection() as conn, conn.transaction():
            entered = conn.execute(
                "SELECT portal_enter(%s, %s, %s, %s)", (firm_id, client_id, user_id, enter_client)
            ).fetchone()
            if entered is None or not entered[0]:
                raise ClientNotVisible(f"client {enter_client} not found")
            yield conn
    except psycopg.OperationalError as exc:
        log.error("postgres unavailable: %s", exc, extra={"system": "postgres"})
        raise UpstreamError(
            "the database is unavailable", provider="postgres", retryable=True
        ) from exc
