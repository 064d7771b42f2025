"""The liveness probe answers without any dependency: no database, no storage settings."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from functions import ops


@pytest.mark.parametrize("route", ["health", "health/live"])
def test_liveness_touches_no_dependency(monkeypatch: pytest.MonkeyPatch, route: str) -> None:
    from shared.adapters import blob, postgres

    def unreachable(*args: object, **kwargs: object) -> None:
        raise AssertionError("the liveness probe touched a dependency")

    monkeypatch.setattr(postgres, "transaction", unreachable)
    monkeypatch.setattr(blob, "ping", unreachable)
    request = func.HttpRequest(method="GET", url=f"/api/{route}", body=b"")
    handler = ops.health_check if route == "health" else ops.liveness

    response = handler(request)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert json.loads(response.get_body()) == {"status": "alive"}
