"""Temporal payloads encrypted with AES-256-GCM before they leave the process: the Temporal server and
its database hold only ciphertext. Each payload names its key (`encryption-key-id` in its metadata), so
keys rotate: new payloads use the first key, older ones decrypt with whichever key they name.

Keys come from TURNFLOW_PAYLOAD_KEYS (`id:base64,id:base64`, the current one first) or, on a local
stack, from `<data dir>/payload-keys` (made on first use, owner-only; `turnflow codec rotate` adds one).

A tenant's workflows (its turns, its erasures) are sealed with that tenant's own data key instead
(`TenantCodec`, activities/adapters/tenant_keys.py), which the deployment's keys only wrap: destroying it
shreds the tenant's histories. The tenant comes from the workflow id each payload belongs to (the
SDK's serialization context).
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ActivitySerializationContext,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

from activities.adapters.tenant_keys import TenantKeyring, parse_key_id, tenant_of_workflow
from infra.config.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class UnknownPayloadKey(ValueError):
    pass


def _seal(cipher: AESGCM, key_id: str, payload: Payload) -> Payload:
    nonce = os.urandom(NONCE_BYTES)
    sealed = cipher.encrypt(nonce, payload.SerializeToString(), None)
    return Payload(metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=nonce + sealed)


def _open(cipher: AESGCM, payload: Payload) -> Payload:
    nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
    return Payload.FromString(cipher.decrypt(nonce, sealed, None))


class AesGcmCodec(PayloadCodec):
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        """``keys``: (id, 32-byte key) pairs, the one to encrypt with first."""
        if not keys:
            raise ValueError("no payload keys")
        self.current = keys[0][0]
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self.current]
        return [_seal(cipher, self.current, payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                out.append(payload)  # written before encryption was on (recorded histories)
                continue
            key_id = payload.metadata.get(KEY_ID, b"").decode()
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise UnknownPayloadKey(f"payload encrypted with key {key_id!r}, which this process lacks")
            out.append(_open(cipher, payload))
        return out


class TenantCodec(PayloadCodec, WithSerializationContext):
    """A tenant's payloads under its own key; everything else under the deployment's. Decoding goes by
    the key each payload names, so one codec opens any payload (the codec endpoint, replay)."""

    def __init__(
        self, deployment: AesGcmCodec, keyring: TenantKeyring, tenant: uuid.UUID | None = None
    ) -> None:
        self.deployment = deployment
        self.keyring = keyring
        self.tenant = tenant

    def with_context(self, context: SerializationContext) -> TenantCodec:
        workflow_id = (
            context.workflow_id
            if isinstance(context, WorkflowSerializationContext | ActivitySerializationContext)
            else None
        )
        tenant = tenant_of_workflow(workflow_id)
        return self if tenant == self.tenant else TenantCodec(self.deployment, self.keyring, tenant)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if self.tenant is None:
            return await self.deployment.encode(payloads)
        kid, cipher = await self.keyring.for_encrypting(self.tenant)
        return [_seal(cipher, kid, payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            kid = payload.metadata.get(KEY_ID, b"").decode()
            if payload.metadata.get("encoding") != ENCODING or parse_key_id(kid) is None:
                out.extend(await self.deployment.decode([payload]))
                continue
            out.append(_open(await self.keyring.for_decrypting(kid), payload))
        return out


def parse_keys(text: str) -> list[tuple[str, bytes]]:
    keys = []
    for entry in text.replace("\n", ",").split(","):
        if not entry.strip():
            continue
        key_id, _, encoded = entry.strip().partition(":")
        key = base64.b64decode(encoded)
        if len(key) != 32:
            raise ValueError(f"payload key {key_id!r} must be 32 bytes (base64), not {len(key)}")
        keys.append((key_id, key))
    return keys


def new_key_line() -> str:
    key_id = f"k{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(2)}"
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def key_file_keys(path: Path) -> list[tuple[str, bytes]]:
    """The data dir's keys, made on first use (owner-only)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(new_key_line() + "\n")
    return parse_keys(path.read_text())


def rotate(path: Path) -> str:
    """Put a new key first (it encrypts from the next process start); older ones stay to decrypt."""
    existing = path.read_text() if path.exists() else ""
    line = new_key_line()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(line + "\n" + existing)
    return line.split(":", 1)[0]


def deployment_keys(settings: Settings) -> list[tuple[str, bytes]]:
    if settings.payload_keys:
        return parse_keys(settings.payload_keys)
    return key_file_keys(settings.payload_key_file)


def codec_for(settings: Settings) -> AesGcmCodec:
    """The deployment's own codec (payloads of no tenant: probes, schedules, maintenance)."""
    return AesGcmCodec(deployment_keys(settings))
