"""QuickBooks connections: which realm a client is connected to, its tokens, and the OAuth
flow that makes and ends a connection.

The refresh token lives in the secret store (``qbo-realm-<realm>``). A refresh happens under
a per-realm Postgres advisory lock, and the rotated token is stored before the new access
token is handed out, so two workers refreshing at once cannot lose it. ``invalid_grant``
marks the connection ``needs_reconnect`` and syncing of that realm stops.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from shared.adapters import quickbooks as qbo
from shared.adapters.postgres import transaction
from shared.adapters.secrets import secret_store
from shared.config import QBO_REFRESH_MARGIN_S, get_settings
from shared.errors import ConfigError, Conflict, NotFound, ValidationError

log = logging.getLogger(__name__)

Environment = Literal["sandbox", "production"]
STATE_TTL_S = 600


class NeedsReconnect(Conflict):
    """The realm's grant is gone (invalid_grant, revoked): an advisor must connect again."""


@dataclass(frozen=True, slots=True)
class Connection:
    realm_id: str
    client_id: uuid.UUID
    environment: Environment
    status: str


def secret_name(realm_id: str) -> str:
    return f"qbo-realm-{realm_id}"


def oauth_client(environment: str) -> qbo.OAuthClient:
    settings = get_settings()
    if not (settings.quickbooks_client_id and settings.quickbooks_client_secret):
        raise ConfigError("QUICKBOOKS_CLIENT_ID and QUICKBOOKS_CLIENT_SECRET must be set")
    return qbo.OAuthClient(
        settings.quickbooks_client_id,
        settings.quickbooks_client_secret,
        settings.quickbooks_redirect_uri,
        settings.quickbooks_oauth_discovery or environment,
    )


def api_url(environment: str) -> str:
    return get_settings().quickbooks_api_url or qbo.API_URLS[environment]


def connection_for_client(client_id: uuid.UUID) -> Connection:
    """The client's connection.

    Raises:
        NotFound: the client has never been connected.
    """
    with transaction() as conn:
        row = conn.execute(
            "SELECT realm_id, client_id, environment, status FROM quickbooks_connections "
            "WHERE client_id = %s",
            (client_id,),
        ).fetchone()
    if row is None:
        raise NotFound(f"client {client_id} has no QuickBooks connection")
    return Connection(*row)


def store_connection(
    client_id: uuid.UUID, realm_id: str, environment: Environment, tokens: qbo.Tokens
) -> Connection:
    """Record a connection and its tokens (the tokens first: a row without them is useless)."""
    if not realm_id.isdigit():
        raise ValidationError(f"realmId {realm_id!r} is not a QuickBooks company id")
    secret_store().set(secret_name(realm_id), tokens.to_json())
    with transaction() as conn:
        conn.execute(
            "INSERT INTO quickbooks_connections (realm_id, client_id, environment) "
            "VALUES (%s, %s, %s) ON CONFLICT (realm_id) DO UPDATE SET "
            "client_id = EXCLUDED.client_id, environment = EXCLUDED.environment, "
            "status = 'active', status_reason = NULL, updated_at = now()",
            (realm_id, client_id, environment),
        )
    log.info("quickbooks realm %s connected", realm_id, extra={"realm_id": realm_id})
    return Connection(realm_id, client_id, environment, "active")


def access_token(connection: Connection, *, rejected: str | None = None) -> str:
    """A valid access token for the realm, refreshed first when it is close to expiry, or
    when it is the token QuickBooks just ``rejected`` (401); a token another worker has
    refreshed meanwhile is used as it is.

    Raises:
        NeedsReconnect: the connection is not active, or Intuit answered invalid_grant.
    """
    store = secret_store()
    name = secret_name(connection.realm_id)
    with transaction() as conn:
        # One refresher per realm across every worker; the others wait, then read its result.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (name,))
        status = conn.execute(
            "SELECT status FROM quickbooks_connections WHERE realm_id = %s",
            (connection.realm_id,),
        ).fetchone()
        if status is None or status[0] != "active":
            raise NeedsReconnect(
                f"QuickBooks realm {connection.realm_id} is not connected "
                f"({status[0] if status else 'no connection'}); reconnect it"
            )
        stored = store.get(name)
        if stored is None:
            raise NeedsReconnect(f"QuickBooks realm {connection.realm_id} has no stored tokens")
        tokens = qbo.Tokens.from_json(stored)
        fresh = tokens.access_expires_at - time.time() > QBO_REFRESH_MARGIN_S
        if fresh and tokens.access_token != rejected:
            return tokens.access_token
        renewed: qbo.Tokens | None
        try:
            renewed = oauth_client(connection.environment).refresh(tokens.refresh_token)
        except qbo.InvalidGrant:
            conn.execute(
                "UPDATE quickbooks_connections SET status = 'needs_reconnect', "
                "status_reason = 'invalid_grant on token refresh', updated_at = now() "
                "WHERE realm_id = %s",
                (connection.realm_id,),
            )
            log.error(
                "quickbooks realm %s needs reconnecting: invalid_grant on refresh",
                connection.realm_id,
                extra={"realm_id": connection.realm_id},
            )
            renewed = None
        else:
            # The rotated refresh token is stored before anything uses the new access token.
            store.set(name, renewed.to_json())
    # Raised after the commit, so that the needs_reconnect mark is kept.
    if renewed is None:
        raise NeedsReconnect(
            f"QuickBooks realm {connection.realm_id} needs reconnecting: the refresh token "
            "was refused (invalid_grant)"
        )
    return renewed.access_token


def api_for(connection: Connection, *, rejected: str | None = None) -> qbo.QuickBooksApi:
    """The Accounting API of the connection's realm with a valid access token (see
    ``access_token`` for ``rejected``)."""
    token = access_token(connection, rejected=rejected)
    return qbo.QuickBooksApi(
        connection.realm_id,
        api_url(connection.environment),
        token,
        get_settings().quickbooks_timeout_s,
    )


def sign_state(client_id: uuid.UUID, environment: str, now: float | None = None) -> str:
    """A ``state`` for the consent redirect: client, environment, expiry, nonce, signature."""
    issued = int(now if now is not None else time.time())
    body = f"{client_id}.{environment}.{issued + STATE_TTL_S}.{secrets.token_urlsafe(8)}"
    return f"{body}.{_signature(body)}"


def check_state(state: str, now: float | None = None) -> tuple[uuid.UUID, Environment]:
    """Read a ``state`` back.

    Raises:
        ValidationError: it is malformed, forged or expired.
    """
    body, _, signature = state.rpartition(".")
    if not body or not hmac.compare_digest(signature, _signature(body)):
        raise ValidationError("state: signature does not match")
    client, environment, expires, _nonce = body.split(".", 3)
    if int(expires) < (now if now is not None else time.time()):
        raise ValidationError("state: expired; start the connection again")
    if environment not in ("sandbox", "production"):
        raise ValidationError(f"state: unknown environment {environment!r}")
    return uuid.UUID(client), environment  # type: ignore[return-value]


def _signature(body: str) -> str:
    key = get_settings().quickbooks_client_secret.encode()
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def connect_url(client_id: uuid.UUID, environment: Environment) -> str:
    """Intuit's consent page for this client, with a signed, expiring state."""
    with transaction() as conn:
        if conn.execute("SELECT 1 FROM clients WHERE id = %s", (client_id,)).fetchone() is None:
            raise NotFound(f"client {client_id} not found")
    return oauth_client(environment).authorization_url(sign_state(client_id, environment))


def complete_connection(state: str, code: str, realm_id: str) -> Connection:
    """The callback: check the state, exchange the code, store the connection."""
    client_id, environment = check_state(state)
    tokens = oauth_client(environment).exchange(code, realm_id)
    return store_connection(client_id, realm_id, environment, tokens)


def disconnect(client_id: uuid.UUID) -> None:
    """Revoke the realm's tokens at Intuit and mark the connection disconnected."""
    connection = connection_for_client(client_id)
    stored = secret_store().get(secret_name(connection.realm_id))
    if stored is not None:
        oauth_client(connection.environment).revoke(qbo.Tokens.from_json(stored).refresh_token)
        secret_store().delete(secret_name(connection.realm_id))
    with transaction() as conn:
        conn.execute(
            "UPDATE quickbooks_connections SET status = 'disconnected', "
            "status_reason = 'disconnected by an advisor', updated_at = now() WHERE realm_id = %s",
            (connection.realm_id,),
        )
