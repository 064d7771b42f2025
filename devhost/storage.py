"""Storage accounts for the host: connection strings, the local emulator, a small queue client.

The queue client covers the two calls the host needs (put, peek) with SharedKey auth, so no
queue SDK is required.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape, unescape

import aiohttp

from devhost.errors import ConfigError, ServiceError
from devhost.services import AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY

QUEUE_API_VERSION = "2021-02-12"
QUEUE_TIMEOUT_S = 10.0
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_XML_QUOTES = {"&quot;": '"', "&apos;": "'"}
_MESSAGE_TEXT = re.compile(r"<MessageText>(.*?)</MessageText>", re.DOTALL)


def parse_connection_string(value: str) -> dict[str, str]:
    """Split ``Key=Value;...`` into a dict with upper-case keys.

    Raises:
        ConfigError: a part has no ``=``.
    """
    result: dict[str, str] = {}
    for part in value.strip().strip(";").split(";"):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep:
            raise ConfigError("storage connection string is malformed (a part has no '=')")
        result[key.strip().upper()] = val.strip()
    return result


def is_development_storage(value: str | None) -> bool:
    """Tell whether a connection string names the local emulator (or is unset)."""
    if not value:
        return True
    parts = parse_connection_string(value)
    if parts.get("USEDEVELOPMENTSTORAGE", "").lower() == "true":
        return True
    if parts.get("ACCOUNTNAME") != AZURITE_ACCOUNT:
        return False
    endpoints = [parts[k] for k in ("BLOBENDPOINT", "QUEUEENDPOINT") if k in parts]
    return bool(endpoints) and all(urlsplit(e).hostname in _LOCAL_HOSTS for e in endpoints)


def development_storage_ports(value: str | None) -> tuple[int | None, int | None]:
    """The blob and queue ports a local-emulator connection string names, if any."""
    if not value:
        return None, None
    parts = parse_connection_string(value)
    blob = urlsplit(parts["BLOBENDPOINT"]).port if "BLOBENDPOINT" in parts else None
    queue = urlsplit(parts["QUEUEENDPOINT"]).port if "QUEUEENDPOINT" in parts else None
    return blob, queue


@dataclass(frozen=True, slots=True)
class StorageAccount:
    """An account the host can reach with a shared key (the emulator's or a real one)."""

    name: str
    key: str
    blob_endpoint: str
    queue_endpoint: str | None

    @classmethod
    def from_connection_string(cls, value: str) -> StorageAccount:
        """Parse a key-based connection string (also ``UseDevelopmentStorage=true``).

        Raises:
            ConfigError: the string has no account name and key, or no blob endpoint.
        """
        parts = parse_connection_string(value)
        if parts.get("USEDEVELOPMENTSTORAGE", "").lower() == "true":
            return cls(
                AZURITE_ACCOUNT,
                AZURITE_ACCOUNT_KEY,
                f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}",
                f"http://127.0.0.1:10001/{AZURITE_ACCOUNT}",
            )
        name, key = parts.get("ACCOUNTNAME"), parts.get("ACCOUNTKEY")
        if not name or not key:
            # Limitation: identity-based (__serviceUri) and SAS connections are not served.
            raise ConfigError("storage connection string needs AccountName and AccountKey")
        protocol = parts.get("DEFAULTENDPOINTSPROTOCOL", "https")
        suffix = parts.get("ENDPOINTSUFFIX", "core.windows.net")
        blob = parts.get("BLOBENDPOINT") or f"{protocol}://{name}.blob.{suffix}"
        queue = parts.get("QUEUEENDPOINT")
        if queue is None and "BLOBENDPOINT" not in parts:
            queue = f"{protocol}://{name}.queue.{suffix}"
        return cls(name, key, blob.rstrip("/"), queue.rstrip("/") if queue else None)


class QueueClient:
    """Put and peek messages on the storage queues of one account (SharedKey auth)."""

    def __init__(self, account: StorageAccount, session: aiohttp.ClientSession) -> None:
        if account.queue_endpoint is None:
            raise ConfigError(f"storage account {account.name} has no queue endpoint")
        self._account = account
        self._endpoint = account.queue_endpoint
        self._session = session

    async def put_message(self, queue: str, text: str) -> None:
        """Create ``queue`` if needed and add ``text`` as one message (sent as given).

        Raises:
            ServiceError: the queue service answered an error.
        """
        await self._request("PUT", f"/{queue}", ok=(201, 204))
        body = f"<QueueMessage><MessageText>{escape(text)}</MessageText></QueueMessage>"
        await self._request("POST", f"/{queue}/messages", body=body.encode(), ok=(201,))

    async def peek_messages(self, queue: str, count: int = 32) -> list[str]:
        """Return the texts of up to ``count`` visible messages without dequeuing them.

        Raises:
            ServiceError: the queue service answered an error other than 404.
        """
        text = await self._request(
            "GET", f"/{queue}/messages?peekonly=true&numofmessages={count}", ok=(200, 404)
        )
        return [unescape(m, _XML_QUOTES) for m in _MESSAGE_TEXT.findall(text)]

    async def _request(
        self, method: str, path: str, *, body: bytes = b"", ok: tuple[int, ...]
    ) -> str:
        url = self._endpoint + path
        # Always sent (and signed): aiohttp would otherwise add one of its own to PUT/POST.
        headers = {
            "x-ms-date": formatdate(usegmt=True),
            "x-ms-version": QUEUE_API_VERSION,
            "Content-Type": "application/xml; charset=utf-8",
        }
        headers["Authorization"] = self._authorization(method, url, headers, len(body))
        timeout = aiohttp.ClientTimeout(total=QUEUE_TIMEOUT_S)
        async with self._session.request(
            method, url, data=body or None, headers=headers, timeout=timeout
        ) as resp:
            text = await resp.text()
            if resp.status not in ok:
                raise ServiceError(
                    f"queue service answered {resp.status} to {method} {path}: {text[:200]}"
                )
            return text

    def _authorization(
        self, method: str, url: str, headers: dict[str, str], content_length: int
    ) -> str:
        parts = urlsplit(url)
        canonical_headers = "".join(
            f"{k.lower()}:{v}\n" for k, v in sorted(headers.items()) if k.startswith("x-ms-")
        )
        resource = f"/{self._account.name}{parts.path}"
        for name, value in sorted(parse_qsl(parts.query)):
            resource += f"\n{name.lower()}:{value}"
        to_sign = "\n".join(
            [
                method,
                "",  # Content-Encoding
                "",  # Content-Language
                str(content_length) if content_length else "",
                "",  # Content-MD5
                headers.get("Content-Type", ""),
                "",  # Date: x-ms-date is used instead
                "", "", "", "", "",  # If-* and Range
                canonical_headers + resource,
            ]
        )  # fmt: skip
        digest = hmac.new(
            base64.b64decode(self._account.key), to_sign.encode(), hashlib.sha256
        ).digest()
        return f"SharedKey {self._account.name}:{base64.b64encode(digest).decode()}"
