"""Encrypted Temporal payloads: the server never holds a message in plaintext; keys rotate; the codec
endpoint decodes for operators with an admin key, and for nobody else."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta

import pytest
from google.protobuf import json_format
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

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


@activity.defn(name="leaky_step")
async def leaky_step(marker: str) -> None:
    # Like a model server's error body quoted in an activity's error: what history must not show.
    raise ApplicationError(f"the model server said: {marker}", non_retryable=True)


@workflow.defn(name="leaky_workflow", sandboxed=False)
class LeakyWorkflow:
    @workflow.run
    async def run(self, marker: str) -> None:
        await workflow.execute_activity(leaky_step, marker, start_to_close_timeout=timedelta(seconds=10))


async def test_failure_messages_are_encrypted_in_history(api: ApiServer) -> None:
    res = api.app.state.resources
    marker, queue = f"okapi-{uuid.uuid4().hex[:8]}", f"leaky-{uuid.uuid4()}"
    workflow_id = f"leaky-{uuid.uuid4()}"
    async with Worker(res.temporal, task_queue=queue, workflows=[LeakyWorkflow], activities=[leaky_step]):
        with pytest.raises(WorkflowFailureError) as failed:
            await res.temporal.execute_workflow(LeakyWorkflow.run, marker, id=workflow_id, task_queue=queue)
    # The deployment's own client (and workflow code) sees the whole message.
    cause = failed.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
    assert marker in cause.cause.message

    # Straight from the server, with no keys: the message and stack trace are ciphertext.
    raw_client = await Client.connect(api.settings.temporal_address or "")
    raw = await raw_client.get_workflow_handle(workflow_id).fetch_history()
    assert marker not in raw.to_json() and "model server said" not in raw.to_json()
    failures = [
        e.activity_task_failed_event_attributes.failure
        for e in raw.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert failures and all(f.message == "Encoded failure" and not f.stack_trace for f in failures)
    assert all(f.encoded_attributes.metadata["encryption-key-id"] for f in failures)

    # An operator reads it through the codec endpoint, as the web UI does.
    admin = await api.headers_for("default", scopes=("admin",))
    body = json_format.MessageToJson(Payloads(payloads=[failures[0].encoded_attributes]))
    decoded = await api.client.post("/codec/decode", content=body, headers=admin)
    assert decoded.status_code == 200
    [opened] = json_format.Parse(decoded.text, Payloads()).payloads
    assert marker in json.loads(opened.data)["message"]
