"""QuickBooks Online: the Accounting API through python-quickbooks and Intuit's OAuth 2.0
endpoints through intuit-oauth. Only this module imports them.

Answers come back as plain dicts in QuickBooks' own JSON shape; failures as the typed errors
below, so callers can tell a throttle from a stale object from a bad record.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks import exceptions as qb_errors

from shared.errors import UpstreamError

PROVIDER = "quickbooks"
MINOR_VERSION = 75
API_URLS = {
    "sandbox": "https://sandbox-quickbooks.api.intuit.com/v3",
    "production": "https://quickbooks.api.intuit.com/v3",
}
STALE_OBJECT_CODE = "5010"


class QuickBooksError(UpstreamError):
    """A failure answered by (or on the way to) QuickBooks."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            message, provider=PROVIDER, status=status, retryable=retryable, request_id=request_id
        )


class Throttled(QuickBooksError):
    """429: the realm's limit was reached. ``retry_after_s`` is QuickBooks' Retry-After."""

    def __init__(self, retry_after_s: float | None) -> None:
        super().__init__("throttled (429, ThrottleExceeded 003001)", status=429, retryable=True)
        self.retry_after_s = retry_after_s


class Unavailable(QuickBooksError):
    """A 5xx answer, a timeout or a broken connection: the request may or may not have run."""


class AccessTokenRejected(QuickBooksError):
    """401: the access token expired or was revoked; refresh and try again."""


class InvalidGrant(QuickBooksError):
    """The refresh token (or authorization code) is no longer valid: the realm must reconnect."""


class Fault(QuickBooksError):
    """A fault QuickBooks answered about the request itself (validation, stale object)."""

    def __init__(self, fault: dict[str, Any], status: int | None = None) -> None:
        error = (fault.get("Error") or [{}])[0]
        self.code = str(error.get("code", ""))
        self.fault_type = str(fault.get("type", ""))
        self.message = str(error.get("Message") or "")
        self.detail = str(error.get("Detail") or "")
        self.fault = fault
        text = " - ".join(t for t in (self.message, self.detail) if t and t != "") or "no detail"
        if self.detail == self.message:
            text = self.message
        super().__init__(f"{self.fault_type} {self.code}: {text}", status=status)

    @property
    def stale(self) -> bool:
        return self.code == STALE_OBJECT_CODE


@dataclass(frozen=True, slots=True)
class Tokens:
    """A token pair as Intuit's token endpoint answers it; ``access_expires_at`` is epoch s."""

    access_token: str
    refresh_token: str
    access_expires_at: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "access_expires_at": self.access_expires_at,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Tokens:
        data = json.loads(text)
        return cls(data["access_token"], data["refresh_token"], float(data["access_expires_at"]))


class _Transport(requests.Session):
    """The HTTP session python-quickbooks sends through: a bearer token, a timeout, and the
    transport failures (429, 5xx, timeouts) raised before the library reads the body."""

    def __init__(self, access_token: str, timeout_s: float) -> None:
        super().__init__()
        self.access_token = access_token
        self._timeout_s = timeout_s

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._timeout_s)
        try:
            response = super().request(method, url, *args, **kwargs)
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise Unavailable(f"no answer: {type(exc).__name__}", retryable=True) from None
        tid = response.headers.get("intuit_tid")
        if response.status_code == 429:
            raise Throttled(_retry_after(response.headers.get("Retry-After")))
        if response.status_code >= 500:
            raise Unavailable(
                f"answered {response.status_code}",
                status=response.status_code,
                retryable=True,
                request_id=tid,
            )
        return response


class QuickBooksApi:
    """The Accounting API of one realm, with one access token."""

    def __init__(self, realm_id: str, api_url: str, access_token: str, timeout_s: float) -> None:
        self.realm_id = realm_id
        self._client = QuickBooks(
            company_id=realm_id, minorversion=MINOR_VERSION, use_decimal=True
        )
        # The library's documented base URL attribute, set per instance to our setting.
        self._client.api_url_v3 = api_url
        self._client.sandbox = False
        self._client.session = _Transport(access_token, timeout_s)
        self.access_token = access_token

    def _call(self, method: str, path: str, body: Any = None, **params: str) -> dict[str, Any]:
        url = f"{self._client.api_url}/company/{self.realm_id}/{path}"
        request_id = params.pop("requestid", None)
        try:
            result: dict[str, Any] = self._client.make_request(
                method,
                url,
                request_body=dumps(body) if body is not None else None,
                params=params,
                request_id=request_id,
            )
        except qb_errors.AuthorizationException as exc:
            if getattr(exc, "error_code", None) in (401, 3200, 100):
                raise AccessTokenRejected("access token rejected (401)", status=401) from None
            raise Fault(_fault_of(exc)) from None
        except qb_errors.QuickbooksException as exc:
            raise Fault(_fault_of(exc)) from None
        return result

    def create(self, entity: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        """Create one entity; ``request_id`` makes a retry answer with the first result."""
        answer = self._call("POST", entity.lower(), body, requestid=request_id)
        return dict(answer[entity])

    def update(self, entity: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        """Update (full or ``sparse``) one entity; the body carries Id and SyncToken."""
        answer = self._call("POST", entity.lower(), body, requestid=request_id)
        return dict(answer[entity])

    def read(self, entity: str, qbo_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"{entity.lower()}/{qbo_id}")[entity])

    def query(self, text: str) -> list[dict[str, Any]]:
        response = self._call("GET", "query", query=text).get("QueryResponse", {})
        rows = next((v for v in response.values() if isinstance(v, list)), [])
        return [dict(r) for r in rows]

    def batch(self, items: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
        """Run a batch; the answers come back per ``bId``, each an entity or a ``Fault``."""
        answer = self._call("POST", "batch", {"BatchItemRequest": items}, requestid=request_id)
        return [dict(item) for item in answer.get("BatchItemResponse", [])]

    def cdc(self, entities: list[str], changed_since: str) -> dict[str, list[dict[str, Any]]]:
        """Entities changed since a time (ISO 8601), by entity name."""
        answer = self._call("GET", "cdc", entities=",".join(entities), changedSince=changed_since)
        found: dict[str, list[dict[str, Any]]] = {}
        for block in answer.get("CDCResponse", []):
            for group in block.get("QueryResponse", []):
                for name, rows in group.items():
                    if isinstance(rows, list):
                        found.setdefault(name, []).extend(rows)
        return found


class OAuthClient:
    """Intuit's OAuth 2.0 endpoints for one app (client id and secret)."""

    def __init__(
        self, client_id: str, client_secret: str, redirect_uri: str, discovery: str
    ) -> None:
        self._args = (client_id, client_secret, redirect_uri, discovery)

    def _client(self) -> AuthClient:
        try:
            return AuthClient(*self._args)
        except (requests.RequestException, AuthClientError) as exc:
            raise QuickBooksError(f"OAuth discovery failed: {exc}", retryable=True) from None

    def authorization_url(self, state: str) -> str:
        return str(self._client().get_authorization_url([Scopes.ACCOUNTING], state_token=state))

    def exchange(self, code: str, realm_id: str) -> Tokens:
        client = self._client()
        self._send(lambda: client.get_bearer_token(code, realm_id=realm_id))
        return _tokens(client)

    def refresh(self, refresh_token: str) -> Tokens:
        client = self._client()
        self._send(lambda: client.refresh(refresh_token=refresh_token))
        return _tokens(client)

    def revoke(self, token: str) -> None:
        client = self._client()
        self._send(lambda: client.revoke(token=token))

    @staticmethod
    def _send(call: Any) -> None:
        try:
            call()
        except AuthClientError as exc:
            if exc.status_code == 400 and b"invalid_grant" in (exc.content or b""):
                raise InvalidGrant(
                    "invalid_grant: the grant is no longer valid", status=400
                ) from None
            raise QuickBooksError(
                f"token endpoint answered {exc.status_code}",
                status=exc.status_code,
                retryable=exc.status_code >= 500,
            ) from None
        except requests.RequestException as exc:
            raise QuickBooksError(f"token endpoint unreachable: {exc}", retryable=True) from None


def dumps(body: Any) -> str:
    """JSON of a request body, with Decimal amounts written as exact JSON numbers."""
    # A fresh marker per call cannot occur in the body's own text.
    marker = uuid.uuid4().hex

    def mark(value: object) -> str:
        if isinstance(value, Decimal):
            return f"{marker}{value:f}{marker}"
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    text = json.dumps(body, default=mark)
    return re.sub(f'"{marker}(-?[0-9.]+){marker}"', lambda m: m.group(1), text)


def _tokens(client: AuthClient) -> Tokens:
    return Tokens(
        access_token=str(client.access_token),
        refresh_token=str(client.refresh_token),
        access_expires_at=time.time() + float(client.expires_in or 3600),
    )


def _fault_of(exc: qb_errors.QuickbooksException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "Error": [{"code": str(exc.error_code), "Message": exc.message, "Detail": exc.detail}],
    }


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
