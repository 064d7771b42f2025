"""PostgreSQL, Azurite and migrations, all real: start, recover, apply once."""

from __future__ import annotations

import os
import shutil
import signal
import uuid

import psycopg
import pytest

from devhost.errors import ConfigError, MigrationError, ServiceError
from devhost.services import (
    apply_migrations,
    free_port,
    port_accepts,
    start_azurite,
    start_postgres,
)
from tests.devhost.conftest import MIGRATIONS_DIR, wait_for


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _postmaster_pid(data_dir) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def _select_one(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT 1").fetchone()[0]


def test_postgres_recovers_after_its_server_was_killed(tmp_path):
    data_dir, port = tmp_path / "pg", free_port()
    first = start_postgres(data_dir, port, fsync=False)
    assert first.url == f"postgresql://postgres@127.0.0.1:{port}/advisoros"
    pid = _postmaster_pid(data_dir)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _pid_gone(pid), 10, "the killed postmaster to go")
    assert (data_dir / "postmaster.pid").exists()

    with start_postgres(data_dir, port, fsync=False) as second:
        assert _select_one(second.url) == 1
    assert not port_accepts(port)
    assert not (data_dir / "postmaster.pid").exists()


def test_postgres_still_running_from_an_earlier_run_is_adopted_or_moved(tmp_path):
    data_dir, port = tmp_path / "pg", free_port()
    start_postgres(data_dir, port, fsync=False)  # never stopped: an earlier run that died
    pid = _postmaster_pid(data_dir)

    adopted = start_postgres(data_dir, port, fsync=False)
    assert _postmaster_pid(data_dir) == pid
    assert _select_one(adopted.url) == 1

    other_port = free_port()
    moved = start_postgres(data_dir, other_port, fsync=False)
    try:
        assert _select_one(moved.url) == 1
        assert not port_accepts(port)
    finally:
        moved.stop()
    assert not moved.is_running()


def test_postgres_refuses_a_port_taken_by_another_program(tmp_path, pg):
    with pytest.raises(ServiceError, match=f"port {pg.port} .* already in use"):
        start_postgres(tmp_path / "pg", pg.port, fsync=False)


def test_azurite_missing_names_the_install_step(tmp_path):
    with pytest.raises(ServiceError, match=r"azurite-blob is missing. Run `npm ci`"):
        start_azurite(tmp_path / "az", free_port(), None, bin_dir=tmp_path / "no-such-dir")


def test_azurite_starts_and_stops(tmp_path):
    blob_port = free_port()
    with start_azurite(tmp_path / "az", blob_port, None) as handle:
        assert port_accepts(blob_port)
        assert f"BlobEndpoint=http://127.0.0.1:{blob_port}/devstoreaccount1" in (
            handle.connection_string
        )
        assert "QueueEndpoint" not in handle.connection_string
    assert not port_accepts(blob_port)


@pytest.fixture
def database(pg):
    """A fresh database on the session server, dropped afterwards."""
    name = f"mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg.url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(pg.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_migrations_apply_in_order_once_with_dollar_quoted_bodies(database):
    assert apply_migrations(database, MIGRATIONS_DIR) == ["0001_ledger", "0002_totals"]
    assert apply_migrations(database, MIGRATIONS_DIR) == []

    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT fx_total()").fetchone()[0] == 100
        assert conn.execute("SELECT count(*) FROM fx_entries").fetchone()[0] == 1
        with pytest.raises(psycopg.errors.RaiseException, match="is not allowed; pick another"):
            conn.execute("INSERT INTO fx_entries (memo, amount) VALUES ('a forbidden memo', 1)")


def test_a_new_migration_is_applied_alone(database, tmp_path):
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    apply_migrations(database, migrations)
    (migrations / "0003_more.sql").write_text("ALTER TABLE fx_entries ADD COLUMN note text;\n")
    assert apply_migrations(database, migrations) == ["0003_more"]


def test_migration_numbers_must_sort_as_text(database, tmp_path):
    for name in ("1_a.sql", "2_b.sql", "10_c.sql"):
        (tmp_path / name).write_text("SELECT 1;\n")
    with pytest.raises(ConfigError, match="pad them with zeros"):
        apply_migrations(database, tmp_path)


def test_misnamed_migration_is_rejected(database, tmp_path):
    (tmp_path / "create_tables.sql").write_text("SELECT 1;\n")
    with pytest.raises(ConfigError, match=r"is not named <number>_<title>\.sql"):
        apply_migrations(database, tmp_path)


def test_failing_migration_is_named_and_rolled_back(database, tmp_path):
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE fx_ok (id int);\n")
    (tmp_path / "0002_bad.sql").write_text(
        "CREATE TABLE fx_half (id int);\nINSERT INTO fx_missing VALUES (1);\n"
    )
    with pytest.raises(MigrationError, match=r"0002_bad\.sql failed and was rolled back"):
        apply_migrations(database, tmp_path)
    with psycopg.connect(database) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    assert "fx_ok" in tables
    assert "fx_half" not in tables
