"""Bearer tokens against an issuer whose JWKS a server on 127.0.0.1 serves: the forged,
stale and misdirected ones are refused with the reason, and key rotation is followed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.errors import Forbidden, Unauthenticated
from shared.services.identity import IdentityProvider, TokenVerifier

ISSUER = "https://login.example.test/tenant/v2.0"
AUDIENCE = "api://advisoros"


class Jwks:
    """A JWKS endpoint whose key set a test can change; counts fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.public_set()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/keys"

    def add_key(self, kid: str) -> rsa.RSAPrivateKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = key
        return key

    def public_set(self) -> list[dict[str, Any]]:
        found = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            found.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return found


@pytest.fixture()
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    server.add_key("k1")
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture()
def verifier(jwks: Jwks) -> TokenVerifier:
    provider = IdentityProvider("entra", ISSUER, AUDIENCE, jwks.url)
    return TokenVerifier(
        (provider,), algorithms=("RS256",), leeway_s=30, cache_s=3600, cooldown_s=0
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "00000000-aaaa",
        "preferred_username": "ada@example.test",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(jwks: Jwks, kid: str = "k1", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), jwks.keys[kid], algorithm="RS256", headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsigned(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}.{b64(signature)}"


def test_accepts_a_token_signed_by_the_issuer(jwks: Jwks, verifier: TokenVerifier) -> None:
    provider, found = verifier.verify(sign(jwks))

    assert provider.name == "entra"
    assert found["preferred_username"] == "ada@example.test"


def test_refuses_alg_none(jwks: Jwks, verifier: TokenVerifier) -> None:
    token = unsigned({"alg": "none", "typ": "JWT"}, claims())

    with pytest.raises(
        Unauthenticated, match=r"^token algorithm 'none' is not allowed; allowed: RS256$"
    ):
        verifier.verify(token)


def test_refuses_hs256_signed_with_the_public_key(jwks: Jwks, verifier: TokenVerifier) -> None:
    public_pem = (
        jwks.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()

    with pytest.raises(Unauthenticated, match=r"^token algorithm 'HS256' is not allowed"):
        verifier.verify(f"{header}.{body}.{b64(mac)}")


def test_refuses_another_audience(jwks: Jwks, verifier: TokenVerifier) -> None:
    with pytest.raises(
        Unauthenticated,
        match=r"^the token's audience is not this API \(expected api://advisoros\)$",
    ):
        verifier.verify(sign(jwks, aud="api://someone-else"))


def test_refuses_an_untrusted_issuer(jwks: Jwks, verifier: TokenVerifier) -> None:
    with pytest.raises(
        Unauthenticated, match=r"^token issuer 'https://evil.test/' is not trusted$"
    ):
        verifier.verify(sign(jwks, iss="https://evil.test/"))


def test_refuses_an_expired_token_beyond_the_skew(jwks: Jwks, verifier: TokenVerifier) -> None:
    now = int(time.time())

    with pytest.raises(Unauthenticated, match=r"^the token has expired$"):
        verifier.verify(sign(jwks, iat=now - 700, nbf=now - 700, exp=now - 60))
    # Within the 30 s skew a just-expired token still passes.
    verifier.verify(sign(jwks, exp=now - 10))


def test_refuses_a_token_not_valid_yet(jwks: Jwks, verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated, match=r"^the token is not valid yet"):
        verifier.verify(sign(jwks, nbf=int(time.time()) + 300))


def test_refuses_a_token_without_expiry(jwks: Jwks, verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated, match=r"^the token has no 'exp' claim$"):
        verifier.verify(sign(jwks, exp=None))


def test_refuses_an_unknown_kid_after_refetching(jwks: Jwks, verifier: TokenVerifier) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": "k9"})

    with pytest.raises(
        Unauthenticated, match=r"^the token's key 'k9' is not among entra's signing keys$"
    ):
        verifier.verify(token)


def test_refuses_a_signature_by_another_key_under_a_known_kid(
    jwks: Jwks, verifier: TokenVerifier
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": "k1"})

    with pytest.raises(Unauthenticated, match=r"^the token's signature does not verify$"):
        verifier.verify(token)


def test_follows_key_rotation_and_caches_keys(jwks: Jwks, verifier: TokenVerifier) -> None:
    verifier.verify(sign(jwks))
    verifier.verify(sign(jwks))
    fetched_before_rotation = jwks.fetches
    jwks.add_key("k2")

    verifier.verify(sign(jwks, kid="k2"))

    assert fetched_before_rotation == 1
    assert jwks.fetches == 2


def test_local_issuer_is_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import get_settings
    from shared.errors import ConfigError

    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("APP_ENVIRONMENT", "production")
    monkeypatch.setenv("PORTAL_LOCAL_ISSUER", "true")
    get_settings.cache_clear()
    try:
        with pytest.raises(
            ConfigError, match=r"PORTAL_LOCAL_ISSUER is refused when APP_ENVIRONMENT is production"
        ):
            get_settings()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_app_service_principal_is_used_only_when_configured(
    portal: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.config import get_settings
    from shared.services import identity

    principal = base64.b64encode(
        json.dumps(
            {
                "auth_typ": "aad",
                "name_typ": "name",
                "claims": [{"typ": "name", "val": "x@example.test"}],
            }
        ).encode()
    ).decode()
    headers = {"x-ms-client-principal": principal}

    with pytest.raises(Unauthenticated, match=r"a bearer token is required"):
        identity.authenticate(headers)
    monkeypatch.setenv("PORTAL_APP_SERVICE_AUTH", "true")
    get_settings.cache_clear()
    with pytest.raises(Forbidden, match=r"user 'x@example.test' is not provisioned"):
        identity.authenticate(headers)


def _clock_moved(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the clocks the verifier and PyJWT read (wall, monotonic) ``seconds`` ahead."""
    import datetime as dt

    from shared.services import identity

    real_time, real_monotonic = time.time, time.monotonic

    class Later(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Later:  # type: ignore[override]
            return super().now(tz) + dt.timedelta(seconds=seconds)

    monkeypatch.setattr(identity.time, "time", lambda: real_time() + seconds)
    monkeypatch.setattr(identity.time, "monotonic", lambda: real_monotonic() + seconds)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)


def test_a_token_that_verified_is_refused_once_it_expires(
    jwks: Jwks, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = sign(jwks, exp=int(time.time()) + 40)
    verifier.verify(token)

    _clock_moved(monkeypatch, 40 + 30 + 5)

    with pytest.raises(Unauthenticated, match=r"^the token has expired$"):
        verifier.verify(token)
