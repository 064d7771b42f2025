"""GET /api/ready: 200 while the database, storage and Service Bus answer; 503 naming each
one that does not. Real Postgres, Azurite and the local broker; outages are made by pointing
the app at ports where nothing listens."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient

from tests.conftest import free_port
from tests.webhook_support import database_down


@pytest.fixture(autouse=True)
def fresh_bus(services: dict[str, str]) -> Iterator[None]:
    """The bus backend opened against whichever database the test points at."""
    from shared.adapters import servicebus

    servicebus.reset()
    yield
    servicebus.reset()


def ready() -> tuple[int, dict[str, Any]]:
    from functions import ops

    response = ops.readiness(func.HttpRequest(method="GET", url="/api/ready", body=b""))
    return response.status_code, json.loads(response.get_body())


def test_ready_when_database_storage_and_bus_answer() -> None:
    status, body = ready()
    assert status == 200
    assert body["status"] == "ok"
    assert body["down"] == []
    assert {name: c["status"] for name, c in body["checks"].items()} == {
        "database": "ok",
        "storage": "ok",
        "bus": "ok",
    }


def test_database_down_names_the_database_and_the_local_broker_in_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with database_down(monkeypatch, free_port()):
        status, body = ready()
    assert status == 503
    assert body["detail"] == "not ready: database, bus unreachable"
    assert body["checks"]["database"] == {
        "status": "failing",
        "error": "[postgres] the database is unavailable",
        "ms": body["checks"]["database"]["ms"],
    }
    assert body["checks"]["storage"]["status"] == "ok"


def test_storage_down_names_storage_alone(
    services: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.adapters import blob

    dead = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{free_port()}", services["AzureWebJobsStorage"])
    monkeypatch.setattr(
        blob, "_client", BlobServiceClient.from_connection_string(dead, retry_total=0)
    )
    status, body = ready()
    assert status == 503
    assert body["detail"] == "not ready: storage unreachable"
    assert body["down"] == ["storage"]
