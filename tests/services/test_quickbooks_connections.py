"""Connecting a client to QuickBooks: signed state, code exchange, token refresh under a
per-realm lock with rotation, and revocation."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.quickbooks_fake import FakeQuickBooks
from tests.quickbooks_support import configured, settings_for


@pytest.fixture()
def fake(services: dict[str, str], tmp_path: Path) -> Iterator[FakeQuickBooks]:
    with FakeQuickBooks() as server, configured(settings_for(server, tmp_path)):
        yield server


def _realm() -> str:
    return str(9340000000000000 + uuid.uuid4().int % 10**6)


def _connect(fake: FakeQuickBooks, client_id: uuid.UUID, realm: str) -> None:
    from shared.services import quickbooks_connections as connections

    url = connections.connect_url(client_id, "sandbox")
    state = parse_qs(urlsplit(url).query)["state"][0]
    connections.complete_connection(state, fake.authorization_code(realm), realm)


class TestConnect:
    def test_consent_url_carries_a_signed_state_and_the_callback_stores_the_connection(
        self, fake: FakeQuickBooks, client_id: uuid.UUID
    ) -> None:
        from shared.adapters.secrets import secret_store
        from shared.services import quickbooks_connections as connections

        realm = _realm()
        url = connections.connect_url(client_id, "sandbox")
        query = parse_qs(urlsplit(url).query)
        assert url.startswith(f"{fake.base_url}/connect/oauth2?")
        assert query["scope"] == ["com.intuit.quickbooks.accounting"]
        assert connections.check_state(query["state"][0]) == (client_id, "sandbox")

        connections.complete_connection(query["state"][0], fake.authorization_code(realm), realm)
        connection = connections.connection_for_client(client_id)
        assert (connection.realm_id, connection.status) == (realm, "active")
        stored = secret_store().get(f"qbo-realm-{realm}") or ""
        assert "refresh_token" in stored and fake.refresh_tokens
        # The local store keeps it encrypted, never in the clear.
        assert stored.split('"refresh_token": "')[1][:20] not in (
            Path(fake_settings_path()).read_text()
        )

    def test_rejects_a_forged_or_expired_state(
        self, fake: FakeQuickBooks, client_id: uuid.UUID
    ) -> None:
        from shared.errors import ValidationError
        from shared.services import quickbooks_connections as connections

        state = connections.sign_state(client_id, "sandbox")
        forged = state[:-1] + ("0" if state[-1] != "0" else "1")
        with pytest.raises(ValidationError, match="state: signature does not match"):
            connections.complete_connection(forged, fake.authorization_code("1"), "1")
        old = connections.sign_state(client_id, "sandbox", now=time.time() - 3600)
        with pytest.raises(ValidationError, match="state: expired"):
            connections.complete_connection(old, fake.authorization_code("1"), "1")

    def test_disconnect_revokes_the_refresh_token(
        self, fake: FakeQuickBooks, client_id: uuid.UUID
    ) -> None:
        from shared.services import quickbooks_connections as connections

        realm = _realm()
        _connect(fake, client_id, realm)
        [refresh] = [t for t, r in fake.refresh_tokens.items() if r == realm]
        connections.disconnect(client_id)
        assert fake.revoked == [refresh]
        assert connections.connection_for_client(client_id).status == "disconnected"
        with pytest.raises(connections.NeedsReconnect, match="disconnected"):
            connections.api_for(connections.connection_for_client(client_id))


class TestRefresh:
    def test_two_workers_refreshing_at_once_keep_the_rotated_token(
        self, fake: FakeQuickBooks, client_id: uuid.UUID
    ) -> None:
        from shared.adapters.quickbooks import Tokens
        from shared.adapters.secrets import secret_store
        from shared.services import quickbooks_connections as connections

        realm = _realm()
        _connect(fake, client_id, realm)
        name = f"qbo-realm-{realm}"
        tokens = Tokens.from_json(secret_store().get(name) or "")
        # The access token is about to expire: both workers want a new one.
        secret_store().set(
            name, Tokens(tokens.access_token, tokens.refresh_token, time.time()).to_json()
        )
        connection = connections.connection_for_client(client_id)
        got: list[str] = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                got.append(connections.access_token(connection))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == []
        assert fake.refreshes == 1 and len(set(got)) == 1
        after = Tokens.from_json(secret_store().get(name) or "")
        assert after.refresh_token in fake.refresh_tokens
        assert connections.connection_for_client(client_id).status == "active"


def fake_settings_path() -> str:
    import os

    return os.environ["LOCAL_SECRET_STORE_PATH"]
