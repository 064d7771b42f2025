"""Sensitive field values (tax ids, account numbers) sealed with AES-GCM before they reach the
database. The key is DOCUMENTS_FIELD_KEY; each value is bound to its document and field name,
so a sealed value copied to another row does not open."""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import ConfigError

# First byte of every sealed value: the format (AES-256-GCM, 96-bit nonce).
FORMAT_V1 = b"\x01"
NONCE_BYTES = 12


def _aead(key: str | None) -> AESGCM:
    if not key:
        raise ConfigError(
            "DOCUMENTS_FIELD_KEY is not set: sensitive document fields cannot be stored"
        )
    try:
        raw = base64.urlsafe_b64decode(key.encode())
    except (binascii.Error, ValueError):
        raise ConfigError("DOCUMENTS_FIELD_KEY is not URL-safe base64") from None
    if len(raw) != 32:
        raise ConfigError(f"DOCUMENTS_FIELD_KEY must be 32 bytes, not {len(raw)}")
    return AESGCM(raw)


def seal(key: str | None, value: str, context: str) -> bytes:
    """Encrypt ``value``, bound to ``context`` (``<document id>/<field name>``).

    Raises:
        ConfigError: the key is missing or malformed.
    """
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_V1 + nonce + _aead(key).encrypt(nonce, value.encode(), context.encode())


def unseal(key: str | None, sealed: bytes, context: str) -> str:
    """Decrypt a value sealed by ``seal`` under the same context.

    Raises:
        ConfigError: the key is missing or malformed, or is not the one that sealed it.
    """
    if sealed[:1] != FORMAT_V1:
        raise ConfigError("sealed document field has an unknown format")
    nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
    try:
        return _aead(key).decrypt(nonce, body, context.encode()).decode()
    except InvalidTag:
        raise ConfigError(
            f"sealed document field {context} does not open with DOCUMENTS_FIELD_KEY"
        ) from None
