"""A tenant's text at rest, sealed with its own data key (tenant_keys.py): message content, conversation
titles, uploaded documents and chunk text in Postgres, and every copy in Redis (turn events, the recent
context, cached search results). AES-256-GCM, with the tenant's id as associated data, so a value copied
into another tenant's row does not open. Destroying the tenant's key (crypto-shredding) leaves every copy
unreadable, database backups and Redis snapshots included.

A sealed value is ``tf1:<key version>:<base64 of nonce and ciphertext>`` (bytes: the same prefix, then raw
nonce and ciphertext). Values without the prefix were written before sealing existed, or with it off
(TURNFLOW_AT_REST_ENCRYPTION=false), and read as they are; `turnflow codec seal-at-rest` seals them.
The empty string stays empty: it says nothing, and "no reply" must stay visible to queries.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Sequence
from typing import Any

from activities.adapters.tenant_keys import TenantKeyring, key_id, parse_key_id

PREFIX = "tf1:"
_BYTES_PREFIX = PREFIX.encode()
NONCE_BYTES = 12


class SealedText:
    def __init__(self, keyring: TenantKeyring, *, enabled: bool = True) -> None:
        self.keyring = keyring
        # Off: new values are written in the clear (sealed ones still open).
        self.enabled = enabled

    async def _seal_raw(self, tenant: uuid.UUID, data: bytes) -> tuple[int, bytes]:
        kid, cipher = await self.keyring.for_encrypting(tenant)
        parsed = parse_key_id(kid)
        assert parsed is not None
        nonce = os.urandom(NONCE_BYTES)
        return parsed[1], nonce + cipher.encrypt(nonce, data, tenant.bytes)

    async def _open_raw(self, tenant: uuid.UUID, version: int, sealed: bytes) -> bytes:
        cipher = await self.keyring.for_decrypting(key_id(tenant, version))
        return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], tenant.bytes)

    async def seal(self, tenant: uuid.UUID | str, text: str) -> str:
        if not self.enabled or not text:
            return text
        version, sealed = await self._seal_raw(_uuid(tenant), text.encode())
        return f"{PREFIX}{version}:{base64.b64encode(sealed).decode()}"

    async def open(self, tenant: uuid.UUID | str, value: str) -> str:
        if not value.startswith(PREFIX):
            return value
        version, _, encoded = value[len(PREFIX) :].partition(":")
        return (await self._open_raw(_uuid(tenant), int(version), base64.b64decode(encoded))).decode()

    async def seal_all(self, tenant: uuid.UUID | str, texts: Sequence[str]) -> list[str]:
        return [await self.seal(tenant, t) for t in texts]

    async def open_all(self, tenant: uuid.UUID | str, values: Sequence[str]) -> list[str]:
        return [await self.open(tenant, v) for v in values]

    async def seal_bytes(self, tenant: uuid.UUID | str, data: bytes) -> bytes:
        if not self.enabled or not data:
            return data
        version, sealed = await self._seal_raw(_uuid(tenant), data)
        return _BYTES_PREFIX + str(version).encode() + b":" + sealed

    async def open_bytes(self, tenant: uuid.UUID | str, data: bytes) -> bytes:
        if not data.startswith(_BYTES_PREFIX):
            return data
        version, _, sealed = data[len(_BYTES_PREFIX) :].partition(b":")
        return await self._open_raw(_uuid(tenant), int(version), sealed)


def is_sealed(value: str | bytes) -> bool:
    if isinstance(value, str):
        return value.startswith(PREFIX)
    return value.startswith(_BYTES_PREFIX)


def _uuid(tenant: uuid.UUID | str) -> uuid.UUID:
    return tenant if isinstance(tenant, uuid.UUID) else uuid.UUID(tenant)


async def seal_tool_calls(
    sealer: SealedText, tenant: uuid.UUID | str, calls: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Tool calls (OpenAI's shape) with their arguments sealed; names and ids stay readable."""
    return [_with_arguments(c, await sealer.seal(tenant, _arguments(c))) for c in calls]


async def open_tool_calls(
    sealer: SealedText, tenant: uuid.UUID | str, calls: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    return [_with_arguments(c, await sealer.open(tenant, _arguments(c))) for c in calls]


def _arguments(call: dict[str, Any]) -> str:
    return str((call.get("function") or {}).get("arguments") or "")


def _with_arguments(call: dict[str, Any], arguments: str) -> dict[str, Any]:
    return {**call, "function": {**(call.get("function") or {}), "arguments": arguments}}
