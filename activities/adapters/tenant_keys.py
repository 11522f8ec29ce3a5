"""Envelope encryption per tenant: each tenant's Temporal payloads, and its text at rest in Postgres and
Redis (sealed_text.py), are sealed with a data key of its own, stored in Postgres wrapped by a
key-encryption key (KEK) that never enters the database.

The KEK is behind `KeyWrapper` (wrap, unwrap, its id): here the deployment's payload keys
(TURNFLOW_PAYLOAD_KEYS or the data dir's file; `turnflow codec rotate` adds one, `turnflow codec rewrap`
re-wraps every data key under it without re-encrypting any data); Vault Transit or a cloud KMS fit the
same three calls. Destroying a tenant's key (`turnflow codec shred`, or erasing the whole tenant) makes
every copy of what it sealed unreadable, old histories and backups included: crypto-shredding.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.tenant_keys import add_first_key, current_key, key_version

NONCE_BYTES = 12


class KeyShredded(ValueError):
    """The tenant's key was destroyed: what it encrypted can never be read again."""


class KeyWrapper(Protocol):
    @property
    def kek_id(self) -> str: ...

    def wrap(self, key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, kek_id: str) -> bytes: ...


class LocalKeyWrapper:
    """The deployment's payload keys as KEKs: the first wraps, any of them unwraps what it wrapped."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        self._current = keys[0][0]
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}

    @property
    def kek_id(self) -> str:
        return self._current

    def wrap(self, key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._ciphers[self._current].encrypt(nonce, key, b"turnflow tenant key")

    def unwrap(self, wrapped: bytes, kek_id: str) -> bytes:
        cipher = self._ciphers.get(kek_id)
        if cipher is None:
            raise ValueError(f"a tenant key is wrapped by KEK {kek_id!r}, which this process lacks")
        return cipher.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"turnflow tenant key")


# The workflows whose payloads are a tenant's: its turns and their children (webhook, moderation).
# Erasures carry only ids and counts, under the deployment's key: the one that shreds a tenant's key
# must still write its own record afterwards.
_TENANT_WORKFLOW = re.compile(r"^turn-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-")


def tenant_of_workflow(workflow_id: str | None) -> uuid.UUID | None:
    found = _TENANT_WORKFLOW.match(workflow_id or "")
    return uuid.UUID(found.group(1)) if found else None


def key_id(tenant: uuid.UUID, version: int) -> str:
    """How a payload names its tenant key (`encryption-key-id`)."""
    return f"tenant/{tenant}/{version}"


def parse_key_id(value: str) -> tuple[uuid.UUID, int] | None:
    parts = value.split("/")
    if len(parts) != 3 or parts[0] != "tenant":
        return None
    try:
        return uuid.UUID(parts[1]), int(parts[2])
    except ValueError:
        return None


class TenantKeyring:
    """Unwrapped data keys, cached for ``cache_s`` (a key destroyed elsewhere stops working here
    within that bound; 0: no cache)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], wrapper: KeyWrapper, cache_s: float = 60.0
    ) -> None:
        self.sessions = sessions
        self.wrapper = wrapper
        self.cache_s = cache_s
        self._cache: dict[str, tuple[AESGCM, float]] = {}
        self._current: dict[uuid.UUID, tuple[str, float]] = {}

    def _cached(self, kid: str) -> AESGCM | None:
        found = self._cache.get(kid)
        return found[0] if found and found[1] > time.monotonic() else None

    def _keep(self, kid: str, cipher: AESGCM) -> AESGCM:
        if self.cache_s > 0:
            self._cache[kid] = (cipher, time.monotonic() + self.cache_s)
        return cipher

    async def for_encrypting(self, tenant: uuid.UUID) -> tuple[str, AESGCM]:
        """The tenant's current key (made on its first payload)."""
        current = self._current.get(tenant)
        if current and current[1] > time.monotonic() and (cipher := self._cached(current[0])):
            return current[0], cipher
        async with self.sessions.begin() as session:
            key = await current_key(session, tenant)
            if key is None:
                await add_first_key(
                    session, tenant, self.wrapper.wrap(AESGCM.generate_key(256)), self.wrapper.kek_id
                )
                key = await current_key(session, tenant)
        assert key is not None
        kid = key_id(tenant, key.version)
        if key.wrapped is None or key.kek_id is None:
            raise KeyShredded(f"tenant {tenant}'s key was destroyed: nothing of it can be written again")
        cipher = self._keep(kid, AESGCM(self.wrapper.unwrap(key.wrapped, key.kek_id)))
        if self.cache_s > 0:
            self._current[tenant] = (kid, time.monotonic() + self.cache_s)
        return kid, cipher

    async def for_decrypting(self, kid: str) -> AESGCM:
        if cipher := self._cached(kid):
            return cipher
        parsed = parse_key_id(kid)
        if parsed is None:
            raise ValueError(f"not a tenant key id: {kid!r}")
        async with self.sessions() as session:
            key = await key_version(session, *parsed)
        if key is None or key.wrapped is None or key.kek_id is None:
            raise KeyShredded(f"{kid} was destroyed: this payload can never be read again")
        return self._keep(kid, AESGCM(self.wrapper.unwrap(key.wrapped, key.kek_id)))
