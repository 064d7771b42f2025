"""Blob storage through azure-storage-blob: Azurite locally, a storage account in Azure.

Returns plain values; no SDK object leaves this module.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from dataclasses import dataclass
from typing import IO, Literal

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContentSettings,
    generate_blob_sas,
)

from shared.config import get_settings
from shared.errors import NotFound, UpstreamError

log = logging.getLogger(__name__)

# The SDK's first GET fetches up to 32 MiB into memory by default; every piece is kept at
# this size instead. A download holds a few pieces at once (the first one stays referenced
# until the end), so the piece is small enough for that to stay a few MiB whatever the
# blob's size.
DOWNLOAD_CHUNK_BYTES = 1024 * 1024

_client: BlobServiceClient | None = None
_client_lock = threading.Lock()
_known_containers: set[str] = set()


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What was downloaded: its version tag, size and sha256 of the exact bytes."""

    etag: str
    size: int
    sha256: str


def _service() -> BlobServiceClient:
    global _client
    with _client_lock:
        if _client is None:
            settings = get_settings()
            if settings.storage_connection_string:
                _client = BlobServiceClient.from_connection_string(
                    settings.storage_connection_string,
                    max_single_get_size=DOWNLOAD_CHUNK_BYTES,
                    max_chunk_get_size=DOWNLOAD_CHUNK_BYTES,
                )
            else:
                from azure.identity import DefaultAzureCredential

                url = f"https://{settings.storage_account_name}.blob.core.windows.net"
                _client = BlobServiceClient(
                    url,
                    credential=DefaultAzureCredential(),
                    max_single_get_size=DOWNLOAD_CHUNK_BYTES,
                    max_chunk_get_size=DOWNLOAD_CHUNK_BYTES,
                )
        return _client


def _upstream(operation: str, container: str, name: str, exc: AzureError) -> UpstreamError:
    log.error(
        "blob %s failed for %s/%s: %s",
        operation,
        container,
        name,
        exc,
        extra={"system": "blob", "operation": operation},
    )
    return UpstreamError(
        f"blob {operation} of {container}/{name} failed", provider="blob", retryable=True
    )


def download(container: str, name: str, into: IO[bytes]) -> BlobInfo:
    """Stream a blob into ``into``, hashing it on the way.

    Raises:
        NotFound: the blob does not exist (any more).
        UpstreamError: storage failed (retryable).
    """
    blob = _service().get_blob_client(container, name)
    digest = hashlib.sha256()
    size = 0
    try:
        stream = blob.download_blob(max_concurrency=1)
        for chunk in stream.chunks():
            digest.update(chunk)
            into.write(chunk)
            size += len(chunk)
        etag = str(stream.properties.etag).strip('"')
    except ResourceNotFoundError:
        raise NotFound(f"blob {container}/{name} does not exist") from None
    except AzureError as exc:
        raise _upstream("download", container, name, exc) from exc
    into.flush()
    into.seek(0)
    return BlobInfo(etag=etag, size=size, sha256=digest.hexdigest())


def upload(container: str, name: str, data: bytes | IO[bytes], *, content_type: str) -> None:
    """Write a blob, replacing any blob of that name; the container is created if missing.

    Raises:
        UpstreamError: storage failed (retryable).
    """
    _ensure_container(container)
    try:
        _service().get_blob_client(container, name).upload_blob(
            data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
        )
    except AzureError as exc:
        raise _upstream("upload", container, name, exc) from exc


def read(container: str, name: str) -> bytes:
    """Return a (small) blob's bytes.

    Raises:
        NotFound: no such blob.
        UpstreamError: storage failed (retryable).
    """
    try:
        return _service().get_blob_client(container, name).download_blob().readall()
    except ResourceNotFoundError:
        raise NotFound(f"blob {container}/{name} does not exist") from None
    except AzureError as exc:
        raise _upstream("read", container, name, exc) from exc


def delete(container: str, name: str) -> None:
    """Delete a blob; one already gone is not an error."""
    try:
        _service().get_blob_client(container, name).delete_blob()
    except ResourceNotFoundError:
        return
    except AzureError as exc:
        raise _upstream("delete", container, name, exc) from exc


def _ensure_container(container: str) -> None:
    if container in _known_containers:
        return
    try:
        _service().create_container(container)
    except ResourceExistsError:
        pass
    except AzureError as exc:
        raise _upstream("create container", container, "", exc) from exc
    _known_containers.add(container)


def sas_url(
    container: str, name: str, *, access: Literal["read", "write"], expires_s: int
) -> tuple[str, dt.datetime]:
    """A URL that lets its holder read one blob, or create and write it, until it expires.

    With a connection string the link is signed with the account key; with the managed
    identity it is a user-delegation SAS, which the app's data-plane role may ask for.

    Args:
        access: ``read`` (download) or ``write`` (create and write, nothing else).
        expires_s: seconds from now until the link stops working.

    Returns:
        The URL and the moment it expires (UTC).

    Raises:
        UpstreamError: storage refused the delegation key (retryable).
    """
    service = _service()
    now = dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(seconds=expires_s)
    # Clocks of the caller and the storage service differ a little; start a minute back.
    starts = now - dt.timedelta(minutes=1)
    permission = (
        BlobSasPermissions(read=True)
        if access == "read"
        else BlobSasPermissions(create=True, write=True)
    )
    account_key = getattr(service.credential, "account_key", None)
    if account_key:
        token = generate_blob_sas(
            service.account_name or "",
            container,
            name,
            account_key=account_key,
            permission=permission,
            start=starts,
            expiry=expires,
        )
    else:
        try:
            delegation = service.get_user_delegation_key(starts, expires)
        except AzureError as exc:
            raise _upstream("delegation key", container, name, exc) from exc
        token = generate_blob_sas(
            service.account_name or "",
            container,
            name,
            user_delegation_key=delegation,
            permission=permission,
            start=starts,
            expiry=expires,
        )
    url = service.get_blob_client(container, name).url
    return f"{url}?{token}", expires


def ping() -> None:
    """Ask for one page of one container name (a cheap reachability probe).

    Listing containers is within Storage Blob Data Contributor, the app's role in Azure;
    reading the account's service properties is not.

    Raises:
        UpstreamError: storage did not answer.
    """
    try:
        next(iter(_service().list_containers(results_per_page=1).by_page()), None)
    except AzureError as exc:
        raise _upstream("ping", "", "", exc) from exc
