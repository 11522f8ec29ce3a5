"""Envelope encryption per tenant: each tenant's turns are sealed with its own data key (wrapped by the
deployment's key); destroying one tenant's key leaves its histories unreadable for good while another
tenant's open as before; re-wrapping under a new key-encryption key re-encrypts no payload."""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from activities.adapters.tenant_keys import KeyShredded, LocalKeyWrapper, TenantKeyring
from db.tenant_keys import rewrap_all
from infra.runtime.payload_codec import AesGcmCodec, TenantCodec, new_key_line, parse_keys
from tests.support.api_harness import ApiServer, isolated_settings, run_cli
from tests.support.services import Services, db_rows

KEY_IDS = re.compile(r'"encryption-key-id":\s*"([^"]+)"')


async def _turn(api: ApiServer, headers: dict[str, str]) -> str:
    conv = await api.conversation(headers)
    resp = await api.client.post(
        f"/v1/conversations/{conv}/messages",
        json={"content": "Hello!", "stream": False, "max_tokens": 4},
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    turn_id = str(resp.json()["turn_id"])
    await api.app.state.resources.temporal.get_workflow_handle(turn_id).result()
    return turn_id


async def _raw_history(api: ApiServer, turn_id: str) -> tuple[set[str], list[Payload]]:
    """The key ids its payloads name, and its first payload (the workflow's input), as stored."""
    raw = (
        await (await Client.connect(api.settings.temporal_address or ""))
        .get_workflow_handle(turn_id)
        .fetch_history()
    )
    ids = {base64.b64decode(k).decode() for k in KEY_IDS.findall(raw.to_json())}
    started = raw.events[0].workflow_execution_started_event_attributes.input.payloads
    return ids, list(started)


async def test_each_tenant_has_its_own_key_and_shredding_one_spares_the_other(
    services: Services, tmp_path: Path
) -> None:
    # No key cache: a destroyed key stops working in this process at once (else within the bound).
    settings = isolated_settings(services, tmp_path, tenant_key_cache_s=0)
    async with ApiServer(settings) as api:
        names = [f"keys-a-{uuid.uuid4().hex[:6]}", f"keys-b-{uuid.uuid4().hex[:6]}"]
        headers = [await api.headers_for(name) for name in names]
        turn_a, turn_b = [await _turn(api, h) for h in headers]
        tenant_a, tenant_b = (
            db_rows(services, "SELECT id::text FROM tenants WHERE name = %s", name)[0][0] for name in names
        )
        ids_a, input_a = await _raw_history(api, turn_a)
        ids_b, input_b = await _raw_history(api, turn_b)
        # Every payload of a tenant's turn, activities' included, under that tenant's own key.
        assert ids_a == {f"tenant/{tenant_a}/1"} and ids_b == {f"tenant/{tenant_b}/1"}
        [(wrapped, kek_id)] = db_rows(
            services, "SELECT wrapped, kek_id FROM tenant_keys WHERE tenant_id = %s", tenant_a
        )
        assert wrapped and kek_id  # stored wrapped, naming the key that wraps it

        code, out = await run_cli(api, "codec", "shred", "--tenant", names[0], "--yes")
        assert code == 0, out
        codec = api.app.state.resources.codec
        with pytest.raises(KeyShredded):
            await codec.decode(input_a)
        assert await codec.decode(input_b)  # the other tenant's history opens as before
        assert (await api.app.state.resources.temporal.get_workflow_handle(turn_b).result())["text"]
        gone = await api.client.post(
            "/codec/decode",
            content='{"payloads": [' + _json_payload(input_a[0]) + "]}",
            headers=await api.headers_for(names[1], scopes=("admin",)),
        )
        assert gone.status_code == 410 and "destroyed" in gone.json()["error"]["message"]
        [(details,)] = db_rows(
            services,
            "SELECT details FROM audit_events WHERE action = 'tenant_keys.shred' AND tenant_id = %s",
            tenant_a,
        )
        assert details == {"keys_destroyed": 1}


def _json_payload(payload: Payload) -> str:
    return json_format.MessageToJson(payload)


async def test_rewrapping_retires_the_old_key_encryption_key(services: Services, tmp_path: Path) -> None:
    settings = isolated_settings(services, tmp_path)
    async with ApiServer(settings) as api:
        sessions = api.app.state.resources.sessions
        old = parse_keys(new_key_line())
        keyring = TenantKeyring(sessions, LocalKeyWrapper(old), cache_s=0)
        tenant = uuid.uuid4()
        db_rows(
            services,
            "INSERT INTO tenants (id, name) VALUES (%s, %s) RETURNING id",
            tenant,
            f"rw-{tenant.hex[:6]}",
        )
        codec = TenantCodec(AesGcmCodec(old), keyring, tenant)
        sealed = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"kept"')])

        new = parse_keys(new_key_line())
        both = LocalKeyWrapper(new + old)
        async with sessions.begin() as session:
            # This tenant's only: the others' in the shared test database are wrapped by the session's.
            changed = await rewrap_all(
                session, lambda w, k: (both.wrap(both.unwrap(w, k)), both.kek_id), tenant=tenant
            )
        assert changed == 1
        # Only the new key-encryption key now: the payload, never re-encrypted, still opens.
        retired = TenantCodec(AesGcmCodec(new), TenantKeyring(sessions, LocalKeyWrapper(new), cache_s=0))
        assert [p.data for p in await retired.decode(sealed)] == [b'"kept"']
