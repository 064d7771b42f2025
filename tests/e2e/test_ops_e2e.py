"""The health probes on the running app."""

from __future__ import annotations

from tests.e2e.conftest import App


def test_liveness_answers_alive_without_a_key(app: App) -> None:
    assert app.call("GET", "/api/health/live", key=None) == (200, {"status": "alive"})


def test_liveness_takes_only_get(app: App) -> None:
    assert app.call("POST", "/api/health/live", b"", key=None)[0] == 405
