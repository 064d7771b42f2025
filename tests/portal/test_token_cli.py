"""``python -m devhost token``: a usable token for a provisioned local user, never in
production."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.portal.conftest import send


def test_prints_a_token_the_portal_accepts(
    portal: None,
    firm: uuid.UUID,
    client_id: uuid.UUID,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from devhost.cli import main

    code = main(
        [
            "--app-dir",
            str(tmp_path),
            "token",
            "--role",
            "client_user",
            "--client",
            str(client_id),
            "--user",
            "viewer@example.test",
        ]
    )
    token = capsys.readouterr().out.strip()
    answer = send("GET", "v1/clients", token)

    assert code == 0
    assert [c["id"] for c in answer.json()["clients"]] == [str(client_id)]


def test_is_refused_in_production(
    portal: None,
    client_id: uuid.UUID,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from devhost.cli import main
    from shared.config import get_settings

    monkeypatch.setenv("APP_ENVIRONMENT", "production")
    monkeypatch.setenv("PORTAL_LOCAL_ISSUER", "false")
    get_settings.cache_clear()

    code = main(
        ["--app-dir", str(tmp_path), "token", "--role", "advisor", "--client", str(client_id)]
    )

    assert code == 1
    assert "refused when APP_ENVIRONMENT is production" in capsys.readouterr().err
    assert not (tmp_path / ".local").exists()
