"""Secrets the app writes at run time (QuickBooks refresh tokens): Key Vault in Azure, a
local encrypted file on the devhost, behind one interface.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken

from shared.config import get_settings
from shared.errors import ConfigError, UpstreamError


class SecretStore(Protocol):
    """Named secrets. ``get`` answers None for a name never set (or deleted)."""

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, value: str) -> None: ...

    def delete(self, name: str) -> None: ...


class KeyVaultSecretStore:
    """Secrets in Azure Key Vault, reached with the managed identity."""

    def __init__(self, vault_url: str) -> None:
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient

        self._client = SecretClient(vault_url=vault_url, credential=DefaultAzureCredential())

    def get(self, name: str) -> str | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return self._client.get_secret(name).value
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise UpstreamError(
                f"Key Vault read failed: {exc}", provider="keyvault", retryable=True
            ) from None

    def set(self, name: str, value: str) -> None:
        from azure.core.exceptions import AzureError

        try:
            self._client.set_secret(name, value)
        except AzureError as exc:
            raise UpstreamError(
                f"Key Vault write failed: {exc}", provider="keyvault", retryable=True
            ) from None

    def delete(self, name: str) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            self._client.begin_delete_secret(name)
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise UpstreamError(
                f"Key Vault delete failed: {exc}", provider="keyvault", retryable=True
            ) from None


class LocalSecretStore:
    """Secrets in one file, each value encrypted with a Fernet key; written atomically."""

    def __init__(self, path: Path, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode())
        except ValueError:
            raise ConfigError(
                "LOCAL_SECRET_STORE_KEY: not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
        self._path = path
        self._lock = threading.Lock()

    def _read(self) -> dict[str, str]:
        if not self._path.exists():
            return {}
        data: dict[str, str] = json.loads(self._path.read_text())
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Threads of this process, then other processes (several devhost workers) in turn.
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self._path.with_suffix(".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get(self, name: str) -> str | None:
        with self._locked():
            sealed = self._read().get(name)
        if sealed is None:
            return None
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                f"local secret {name!r} cannot be decrypted with LOCAL_SECRET_STORE_KEY"
            ) from None

    def set(self, name: str, value: str) -> None:
        with self._locked():
            data = self._read()
            data[name] = self._fernet.encrypt(value.encode()).decode()
            self._write(data)

    def delete(self, name: str) -> None:
        with self._locked():
            data = self._read()
            if data.pop(name, None) is not None:
                self._write(data)

    def _write(self, data: dict[str, str]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data))
        os.chmod(temporary, 0o600)
        os.replace(temporary, self._path)


_store: SecretStore | None = None
_store_lock = threading.Lock()


def secret_store() -> SecretStore:
    """The worker's secret store: Key Vault when ``KEY_VAULT_URL`` is set, else the local one.

    Raises:
        ConfigError: neither is configured.
    """
    global _store
    with _store_lock:
        if _store is None:
            settings = get_settings()
            if settings.key_vault_url:
                _store = KeyVaultSecretStore(settings.key_vault_url)
            elif settings.local_secret_store_key:
                _store = LocalSecretStore(
                    Path(settings.local_secret_store_path), settings.local_secret_store_key
                )
            else:
                raise ConfigError(
                    "set KEY_VAULT_URL, or LOCAL_SECRET_STORE_KEY for the local secret store"
                )
        return _store


def reset_secret_store() -> None:
    """Forget the store (tests, after changing settings)."""
    global _store
    with _store_lock:
        _store = None
