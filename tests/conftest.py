"""Shared fixtures: a real Postgres and a real Azurite for the whole run, on free ports."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start Postgres and Azurite once, apply migrations, and point the app's settings at them."""
    from devhost import services as local

    root = tmp_path_factory.mktemp("services")
    with (
        local.start_postgres(root / "pg", port=free_port(), fsync=False) as pg,
        local.start_azurite(root / "azurite", blob_port=free_port(), queue_port=free_port()) as az,
    ):
        local.apply_migrations(pg.url, REPO / "migrations")
        env = {"DATABASE_URL": pg.url, "AzureWebJobsStorage": az.connection_string}
        os.environ.update(env)
        from shared.config import get_settings

        get_settings.cache_clear()
        yield env
        from shared.adapters import postgres

        postgres.close_pool()


@pytest.fixture()
def firm(services: dict[str, str]) -> uuid.UUID:
    from shared.services import clients

    return clients.create_firm(f"Firm {uuid.uuid4().hex[:6]}")


@pytest.fixture()
def client_id(firm: uuid.UUID) -> uuid.UUID:
    """A fresh client with the starter chart, so every test's ledger starts empty."""
    from shared.services import clients

    return clients.create_client(firm, "Test client", base_currency="USD")
