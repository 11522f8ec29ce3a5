"""Encrypted Temporal payloads: the server never holds a message in plaintext; keys rotate; the codec
endpoint decodes for operators with an admin key, and for nobody else."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client

from infra.runtime.payload_codec import AesGcmCodec, UnknownPayloadKey, parse_keys, rotate
from tests.support.api_harness import ApiServer
from tests.support.sse import collect


def key(n: int) -> tuple[str, bytes]:
    return f"k{n}", bytes([n]) * 32


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


async def test_round_trip_rotation_and_unknown_keys() -> None:
    old, new = AesGcmCodec([key(1)]), AesGcmCodec([key(2), key(1)])
    [sealed] = await old.encode([plain("secret words")])
    assert b"secret words" not in sealed.SerializeToString()
    assert sealed.metadata["encryption-key-id"] == b"k1"
    assert await new.decode([sealed]) == [plain("secret words")]  # rotated: old payloads still open
    [resealed] = await new.encode([plain("more")])
    assert resealed.metadata["encryption-key-id"] == b"k2"
    with pytest.raises(UnknownPayloadKey):
        await old.decode([resealed])
    assert await new.decode([plain("recorded before encryption")]) == [plain("recorded before encryption")]


def test_key_file_rotation_puts_the_new_key_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "payload-keys"
    first = rotate(path)
    second = rotate(path)
    ids = [key_id for key_id, _ in parse_keys(path.read_text())]
    assert ids == [second, first] and path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="32 bytes"):
        parse_keys("k:" + base64.b64encode(b"short").decode())


async def test_the_server_holds_no_plaintext_of_a_turn(api: ApiServer) -> None:
    marker = f"zebra-{uuid.uuid4().hex[:8]}"
    conv = await api.conversation()
    async with api.client.stream(
        "POST", f"/v1/conversations/{conv}/messages", json={"content": f"Repeat: {marker}", "max_tokens": 8}
    ) as resp:
        turn_id = resp.headers["x-turn-id"]
        events = await collect(resp)
    reply = "".join(e.data["text"] for e in events if e.event == "token")
    assert reply

    # Read straight from the server, with no keys: every payload is ciphertext.
    raw_client = await Client.connect(api.settings.temporal_address or "")
    raw = (await raw_client.get_workflow_handle(turn_id).fetch_history()).to_json()
    assert marker not in raw and reply not in raw and "Repeat" not in raw
    assert "encryption-key-id" in raw
    # The deployment's client opens them.
    res = api.app.state.resources
    opened = await res.temporal.get_workflow_handle(turn_id).result()
    assert opened["text"] == reply


async def test_codec_endpoint_decodes_for_admins_only(api: ApiServer) -> None:
    res = api.app.state.resources
    sealed = Payloads(payloads=await res.codec.encode([plain("for operators")]))
    body = json_format.MessageToJson(sealed)
    admin = await api.headers_for("default", scopes=("admin",))
    chat = await api.headers_for("default", scopes=("chat",))

    assert (
        await api.client.post("/codec/decode", content=body, headers={"Authorization": ""})
    ).status_code == 401
    assert (await api.client.post("/codec/decode", content=body, headers=chat)).status_code == 403
    garbage = await api.client.post("/codec/decode", content=b"{not proto json", headers=admin)
    assert garbage.status_code == 422 and garbage.json()["error"]["code"] == "422"
    decoded = await api.client.post("/codec/decode", content=body, headers=admin)
    assert decoded.status_code == 200
    assert list(json_format.Parse(decoded.text, Payloads()).payloads) == [plain("for operators")]
    encoded = await api.client.post(
        "/codec/encode", content=json_format.MessageToJson(Payloads(payloads=[plain("x")])), headers=admin
    )
    assert "encryption-key-id" in encoded.text and base64.b64encode(b'"x"').decode() not in encoded.text

    # The Temporal web UI's origin may call it from the browser (CORS preflight, then the key).
    preflight = await api.client.options(
        "/codec/decode",
        headers={
            "Origin": "http://127.0.0.1:8233",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://127.0.0.1:8233"
    elsewhere = await api.client.options(
        "/codec/decode", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert elsewhere.headers.get("access-control-allow-origin") is None
