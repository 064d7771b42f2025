"""A lone statement in a transaction of its own: run again when the server rolls it back
(a deadlock victim), and never half kept."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from shared.adapters import postgres
from shared.errors import UpstreamError


@pytest.fixture
def probe(services: dict[str, str]) -> Iterator[str]:
    """A table and a function that writes a row to it, then fails as a deadlock victim for
    the first ``failures`` calls (a sequence counts them: it outlives the rollbacks)."""
    name = f"retry_probe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (tag text NOT NULL)")
        conn.execute(f"CREATE SEQUENCE {name}_calls")
        conn.execute(
            f"""
            CREATE FUNCTION {name}(tag text, failures int) RETURNS bigint
            LANGUAGE plpgsql AS $$
            DECLARE call bigint;
            BEGIN
                INSERT INTO {name} (tag) VALUES (tag);
                call := nextval('{name}_calls');
                IF call <= failures THEN
                    RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01';
                END IF;
                RETURN call;
            END $$
            """
        )
    yield name
    with psycopg.connect(services["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(f"DROP FUNCTION {name}(text, int)")
        conn.execute(f"DROP SEQUENCE {name}_calls")
        conn.execute(f"DROP TABLE {name}")


def _rows(services: dict[str, str], table: str) -> list[str]:
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        return [r[0] for r in conn.execute(f"SELECT tag FROM {table}").fetchall()]


def test_a_statement_rolled_back_as_a_deadlock_victim_runs_again(services, probe):
    row = postgres.single_statement(
        f"SELECT {probe}(%(tag)s, %(failures)s)", {"tag": "kept", "failures": 2}
    )

    assert row == (3,)
    # The two rolled-back runs left nothing; the third is committed once.
    assert _rows(services, probe) == ["kept"]


def test_a_statement_rolled_back_every_time_is_a_retryable_error_and_keeps_nothing(
    services, probe
):
    with pytest.raises(UpstreamError, match="the database rolled the statement back") as raised:
        postgres.single_statement(
            f"SELECT {probe}(%(tag)s, %(failures)s)", {"tag": "lost", "failures": 3}
        )

    assert raised.value.retryable
    assert _rows(services, probe) == []
