"""Who is calling the portal: bearer JWTs of the firm's identity providers (Entra ID, Okta,
or the local development issuer), App Service Authentication's principal header, and the
user, role and client they resolve to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, cast

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.adapters import postgres
from shared.config import Settings, get_settings
from shared.errors import ConfigError, Forbidden, RateLimited, Unauthenticated, UpstreamError

log = logging.getLogger(__name__)

Role = Literal["firm_admin", "advisor", "client_user"]
ROLES: tuple[Role, ...] = ("firm_admin", "advisor", "client_user")

LOCAL_ISSUER = "https://advisoros.local/issuer"
LOCAL_AUDIENCE = "advisoros-portal"
LOCAL_TOKEN_TTL_S = 8 * 3600
JWKS_REFRESH_COOLDOWN_S = 30.0
JWKS_TIMEOUT_S = 5.0
# Tokens that verified, kept by their text: a portal page sends many requests with one
# token, and checking its signature and claims again costs more than most pages' queries.
# An entry lives at most this long (and no longer than the signing keys are cached, nor
# past the token's exp), so a removed key or an expired token is refused as before.
VERIFIED_TOKEN_TTL_S = 60.0
VERIFIED_TOKENS_MAX = 10_000
# Claims that name the user when a provider names none: Entra puts the UPN in
# preferred_username (v2) or upn (v1), Okta the login in preferred_username or email.
USERNAME_CLAIMS = ("preferred_username", "upn", "email")


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in user as the portal acts for them."""

    user_id: uuid.UUID
    firm_id: uuid.UUID
    role: Role
    client_id: uuid.UUID | None
    user_name: str

    @property
    def is_staff(self) -> bool:
        """Firm admins and advisors see every client of their firm."""
        return self.role != "client_user"


@dataclass(frozen=True, slots=True)
class IdentityProvider:
    """One trusted token issuer, from ``PORTAL_IDENTITY_PROVIDERS``."""

    name: str
    issuer: str
    audience: str
    jwks_url: str
    username_claim: str = "preferred_username"


def parse_providers(raw: str) -> tuple[IdentityProvider, ...]:
    """Read ``PORTAL_IDENTITY_PROVIDERS``.

    Raises:
        ConfigError: not a JSON list of objects with name, issuer, audience and jwks_url.
    """
    try:
        items = json.loads(raw or "[]")
    except ValueError:
        raise ConfigError("PORTAL_IDENTITY_PROVIDERS is not valid JSON") from None
    if not isinstance(items, list):
        raise ConfigError("PORTAL_IDENTITY_PROVIDERS must be a JSON list")
    providers = []
    for index, item in enumerate(items):
        fields = ("name", "issuer", "audience", "jwks_url")
        if not isinstance(item, dict) or any(
            not isinstance(item.get(f), str) or not item[f] for f in fields
        ):
            raise ConfigError(
                f"PORTAL_IDENTITY_PROVIDERS[{index}] needs the strings {', '.join(fields)}"
            )
        providers.append(
            IdentityProvider(
                name=item["name"],
                issuer=item["issuer"],
                audience=item["audience"],
                jwks_url=item["jwks_url"],
                username_claim=str(item.get("username_claim") or "preferred_username"),
            )
        )
    return tuple(providers)


class TokenVerifier:
    """Checks bearer tokens against the trusted issuers and returns their claims.

    Signing keys are fetched from each issuer's JWKS URL, kept for ``cache_s`` seconds, and
    fetched again at once (at most every ``cooldown_s``) when a token names an unknown
    ``kid``, which is how a provider's key rotation shows up.
    """

    def __init__(
        self,
        providers: tuple[IdentityProvider, ...],
        *,
        algorithms: tuple[str, ...],
        leeway_s: int,
        cache_s: int,
        cooldown_s: float = JWKS_REFRESH_COOLDOWN_S,
        local_key: rsa.RSAPublicKey | None = None,
    ) -> None:
        self._providers = {p.issuer: p for p in providers}
        self._algorithms = list(algorithms)
        self._leeway_s = leeway_s
        self._verified_ttl_s = min(VERIFIED_TOKEN_TTL_S, float(cache_s))
        self._verified: dict[str, tuple[float, IdentityProvider, dict[str, Any]]] = {}
        self._verified_lock = threading.Lock()
        self._local_key = local_key
        self._clients = {
            p.issuer: jwt.PyJWKClient(
                p.jwks_url,
                cache_keys=True,
                lifespan=cache_s,
                timeout=JWKS_TIMEOUT_S,
                cooldown_duration=cooldown_s,
            )
            for p in providers
        }

    def verify(self, token: str) -> tuple[IdentityProvider, dict[str, Any]]:
        """Return the issuer and the verified claims of a token.

        Raises:
            Unauthenticated: the token is malformed, uses an algorithm not allowed, comes
                from an untrusted issuer, names an unknown key, has a bad signature, the
                wrong audience, or is expired or not valid yet.
            UpstreamError: the issuer's JWKS could not be fetched (retryable).
        """
        now = time.time()
        with self._verified_lock:
            known = self._verified.get(token)
        if known is not None and now < known[0]:
            return known[1], known[2]
        provider, claims = self._verify(token)
        # exp is required and checked by _verify, so it is a number here.
        until = min(now + self._verified_ttl_s, float(claims["exp"]) + self._leeway_s)
        with self._verified_lock:
            if len(self._verified) >= VERIFIED_TOKENS_MAX:
                self._verified.clear()
            self._verified[token] = (until, provider, claims)
        return provider, claims

    def _verify(self, token: str) -> tuple[IdentityProvider, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise Unauthenticated("the bearer token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise Unauthenticated(
                f"token algorithm {algorithm!r} is not allowed; allowed: "
                + ", ".join(self._algorithms)
            )
        provider, key = self._key_for(unverified.get("iss"), header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=provider.audience,
                issuer=provider.issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated(
                "the token is not valid yet (nbf or iat in the future)"
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                f"the token's audience is not this API (expected {provider.audience})"
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the token is invalid: {exc}") from None
        return provider, claims

    def _key_for(self, issuer: object, kid: object) -> tuple[IdentityProvider, Any]:
        if self._local_key is not None and issuer == LOCAL_ISSUER:
            local = IdentityProvider("local", LOCAL_ISSUER, LOCAL_AUDIENCE, "")
            return local, self._local_key
        provider = self._providers.get(issuer) if isinstance(issuer, str) else None
        if provider is None:
            raise Unauthenticated(f"token issuer {issuer!r} is not trusted")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the token names no signing key (kid)")
        try:
            return provider, self._clients[provider.issuer].get_signing_key(kid).key
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("jwks fetch failed: %s", exc, extra={"system": provider.name})
            raise UpstreamError(
                f"the signing keys of {provider.name} could not be fetched",
                provider=provider.name,
                retryable=True,
            ) from None
        except jwt.PyJWKClientError:
            raise Unauthenticated(
                f"the token's key {kid!r} is not among {provider.name}'s signing keys"
            ) from None


def username_from_claims(provider: IdentityProvider, claims: Mapping[str, Any]) -> str:
    """The sign-in name a token carries, from the provider's claim or the usual ones.

    Raises:
        Unauthenticated: the token names no user.
    """
    for claim in (provider.username_claim, *USERNAME_CLAIMS):
        value = claims.get(claim)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise Unauthenticated(f"the token has no {provider.username_claim!r} claim naming the user")


def username_from_app_service(header: str) -> str:
    """The user named by App Service Authentication's ``X-MS-CLIENT-PRINCIPAL`` header.

    Raises:
        Unauthenticated: the header is not base64 JSON with a name claim.
    """
    try:
        principal = json.loads(base64.b64decode(header, validate=True))
        name_type = principal.get("name_typ") or "name"
        claims = principal["claims"]
        names = [c["val"] for c in claims if c.get("typ") in (name_type, *USERNAME_CLAIMS)]
    except (ValueError, binascii.Error, KeyError, TypeError, AttributeError):
        raise Unauthenticated("X-MS-CLIENT-PRINCIPAL is not a valid principal") from None
    if not names or not isinstance(names[0], str) or not names[0].strip():
        raise Unauthenticated("X-MS-CLIENT-PRINCIPAL names no user")
    return str(names[0]).strip()


def resolve_user(user_name: str) -> Principal:
    """Return the active, provisioned user with this sign-in name.

    Raises:
        Forbidden: no such user, the user is deactivated, or has no role yet.
    """
    with postgres.transaction() as conn:
        row = conn.execute(
            "SELECT id, firm_id, role, client_id, active FROM users"
            " WHERE lower(user_name) = lower(%s)",
            (user_name,),
        ).fetchone()
    return _principal(user_name, row)


def sign_in(user_name: str, per_minute: int) -> Principal:
    """`resolve_user`, and one request taken from the user's rate-limit bucket, in one
    statement of the portal's role (``portal_sign_in``, migration 0014).

    The buckets are rows in Postgres, so every instance serving the API draws on the same
    budget: ``per_minute`` requests a minute, in bursts up to that.

    Raises:
        Forbidden: no such user, the user is deactivated, or has no role yet.
        RateLimited: the user's bucket is empty; ``retry_after_s`` says when it is not.
    """
    row = postgres.api_fetchone(
        "SELECT id, firm_id, role, client_id, active, retry_after_s FROM portal_sign_in(%s, %s)",
        (user_name, per_minute),
    )
    principal = _principal(user_name, row[:5] if row else None)
    assert row is not None
    if row[5] > 0:
        raise RateLimited(
            f"too many requests; at most {per_minute} a minute", retry_after_s=int(row[5])
        )
    return principal


def _principal(user_name: str, row: tuple[Any, ...] | None) -> Principal:
    if row is None:
        raise Forbidden(f"user {user_name!r} is not provisioned for this portal")
    user_id, firm_id, role, client_id, active = row
    if not active:
        raise Forbidden(f"user {user_name!r} is deactivated")
    if role not in ROLES:
        raise Forbidden(f"user {user_name!r} has no role yet")
    return Principal(user_id, firm_id, cast(Role, role), client_id, user_name)


def authenticate(headers: Mapping[str, str], *, rate_per_min: int | None = None) -> Principal:
    """Return the principal a request's headers prove (header names in lower case).

    Args:
        headers: the request's headers.
        rate_per_min: when given, the user's shared rate limit (see `sign_in`), taken in
            the same statement that finds the user.

    Raises:
        Unauthenticated: no credential, or one that does not verify.
        Forbidden: the user is not provisioned, deactivated or without a role.
        RateLimited: ``rate_per_min`` is given and the user has used it up.
        UpstreamError: the identity provider's keys could not be fetched.
    """
    settings = get_settings()
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    principal = headers.get("x-ms-client-principal")
    if scheme.lower() == "bearer" and token.strip():
        provider, claims = verifier().verify(token.strip())
        user_name = username_from_claims(provider, claims)
    elif settings.portal_app_service_auth and principal:
        user_name = username_from_app_service(principal)
    else:
        raise Unauthenticated("a bearer token is required (Authorization: Bearer <JWT>)")
    if rate_per_min is None:
        return resolve_user(user_name)
    return sign_in(user_name, rate_per_min)


@lru_cache(maxsize=1)
def verifier() -> TokenVerifier:
    """The worker's token verifier, built once from the settings."""
    return build_verifier(get_settings())


def build_verifier(
    settings: Settings, *, cooldown_s: float = JWKS_REFRESH_COOLDOWN_S
) -> TokenVerifier:
    """Build a verifier from settings (``verifier()`` keeps one per worker)."""
    local_key = None
    if settings.portal_local_issuer:
        local_key = local_signing_key(Path(settings.portal_local_key_dir)).public_key()
    return TokenVerifier(
        parse_providers(settings.portal_identity_providers),
        algorithms=settings.portal_jwt_algorithms,
        leeway_s=settings.portal_jwt_leeway_s,
        cache_s=settings.portal_jwks_cache_s,
        cooldown_s=cooldown_s,
        local_key=local_key,
    )


# -- The local development issuer -------------------------------------------------------

_key_lock = threading.Lock()


def local_signing_key(key_dir: Path) -> rsa.RSAPrivateKey:
    """The local issuer's RSA key, generated into ``key_dir/signing-key.pem`` on first use.

    Raises:
        ConfigError: the settings say production (the local issuer is refused there).
    """
    if get_settings().app_environment == "production":
        raise ConfigError("the local token issuer is refused when APP_ENVIRONMENT is production")
    path = key_dir / "signing-key.pem"
    with _key_lock:
        if not path.exists():
            key_dir.mkdir(parents=True, exist_ok=True)
            fresh = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = fresh.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # Owner-only from the first byte: the key signs tokens for any user.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{path} does not hold an RSA private key")
    return key


def issue_local_token(user_name: str, *, ttl_s: int = LOCAL_TOKEN_TTL_S) -> str:
    """Sign a token of the local issuer for ``user_name`` (see ``python -m devhost token``).

    Raises:
        ConfigError: the settings say production.
    """
    key = local_signing_key(Path(get_settings().portal_local_key_dir))
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    claims = {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": user_name,
        "preferred_username": user_name,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
    }
    kid = hashlib.sha256(public).hexdigest()[:16]
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
