"""Feedback on replies through the real API: record, replace, withdraw, tenant isolation, refusals,
PII redaction, the audit trail, the metric, the OpenAI-style route's ids, and the export."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pyarrow.parquet as pq
from openai import AsyncOpenAI

from db.messages import message_id_for
from tests.support.api_harness import ApiServer, api_key_of, run_cli
from tests.support.services import Services, db_rows, open_sealed


async def reply_id(api: ApiServer, headers: dict[str, str] | None = None) -> str:
    """A real turn on the real model; its reply's message id."""
    conv = await api.conversation(headers=headers)
    resp = await api.client.post(
        "/v1/messages",
        json={"conversation_id": conv, "content": "Say hi.", "stream": False, "max_tokens": 4},
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # Message ids follow from the turn (db/messages.py), so the API can name one before it is written.
    assert body["message_id"] == str(message_id_for(body["turn_id"], "assistant"))
    return str(body["message_id"])


async def test_feedback_is_recorded_replaced_and_withdrawn(api: ApiServer, services: Services) -> None:
    mid = await reply_id(api)
    url = f"/v1/messages/{mid}/feedback"
    first = await api.client.post(url, json={"score": 1})
    assert first.status_code == 200, first.text
    assert first.json()["score"] == 1 and first.json()["replaced"] is False

    comment = "Wrong, mail me at jane.doe@example.com"
    second = await api.client.post(url, json={"score": -1, "reason": "inaccurate", "comment": comment})
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["replaced"] is True and body["score"] == -1 and body["reason"] == "inaccurate"
    assert "jane.doe@example.com" not in body["comment"] and body["comment"].startswith("Wrong, mail me at")

    rows = db_rows(
        services, "SELECT score, reason, comment, tenant_id FROM feedback WHERE message_id = %s", mid
    )
    assert len(rows) == 1 and rows[0][:2] == (-1, "inaccurate")  # one current verdict per key
    stored = rows[0][2]
    assert stored.startswith("tf1:")  # sealed at rest, like any user text
    assert open_sealed(services, rows[0][3], stored) == body["comment"]

    # Another key of the same tenant has a verdict of its own.
    other_key = await api.headers_for("default", ("chat",))
    assert (await api.client.post(url, json={"score": 1}, headers=other_key)).status_code == 200
    assert len(db_rows(services, "SELECT 1 FROM feedback WHERE message_id = %s", mid)) == 2

    gone = await api.client.delete(url)
    assert gone.status_code == 204
    assert db_rows(services, "SELECT score FROM feedback WHERE message_id = %s", mid) == [(1,)]
    assert (await api.client.delete(url)).status_code == 404  # nothing left to withdraw

    audited = db_rows(
        services,
        "SELECT action, details->>'status', details->>'score', details->>'replaced' FROM audit_events"
        " WHERE object_type = 'message' AND object_id = %s ORDER BY id",
        mid,
    )
    assert audited[:3] == [
        ("POST /v1/messages/{message_id}/feedback", "200", "1", "false"),
        ("POST /v1/messages/{message_id}/feedback", "200", "-1", "true"),
        ("POST /v1/messages/{message_id}/feedback", "200", "1", "false"),
    ]
    assert audited[3][:2] == ("DELETE /v1/messages/{message_id}/feedback", "204")
    assert audited[4][:2] == ("DELETE /v1/messages/{message_id}/feedback", "404")

    scrape = (await api.client.get("/metrics")).text
    lines = [line for line in scrape.splitlines() if line.startswith("turnflow_feedback_total{")]
    assert any('score="-1"' in line and 'model="smollm2-135m-instruct-q4_1"' in line for line in lines), lines
    assert any('score="withdrawn"' in line for line in lines), lines


async def test_feedback_refusals(api: ApiServer, services: Services) -> None:
    mid = await reply_id(api)
    url = f"/v1/messages/{mid}/feedback"
    for bad in ({"score": 0}, {"score": 2}, {"score": "up"}, {"score": 1, "reason": "boring"}, {}):
        resp = await api.client.post(url, json=bad)
        assert resp.status_code == 422, (bad, resp.text)
    unknown = await api.client.post(f"/v1/messages/{uuid.uuid4()}/feedback", json={"score": 1})
    assert unknown.status_code == 404
    assert (await api.client.post("/v1/messages/not-an-id/feedback", json={"score": 1})).status_code == 404
    # Another tenant's message does not exist for this key, and its own verdict is untouched.
    stranger = await api.headers_for(f"other-{uuid.uuid4().hex[:8]}", ("chat",))
    assert (await api.client.post(url, json={"score": -1}, headers=stranger)).status_code == 404
    assert (await api.client.delete(url, headers=stranger)).status_code == 404
    # A question is not a reply.
    (turn_id,) = db_rows(services, "SELECT turn_id FROM messages WHERE id = %s", mid)[0]
    question = message_id_for(turn_id, "user")
    assert (await api.client.post(f"/v1/messages/{question}/feedback", json={"score": 1})).status_code == 404


async def test_openai_clients_get_the_message_id_and_can_send_feedback(
    api: ApiServer, services: Services
) -> None:
    client = AsyncOpenAI(base_url=f"{api.url}/v1", api_key=api_key_of(api), max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="any", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
    )
    completion = raw.parse()
    mid = raw.headers["x-message-id"]
    assert completion.id == f"chatcmpl-{mid}"
    async with client.chat.completions.with_streaming_response.create(
        model="any", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4, stream=True
    ) as streamed:
        streamed_mid = streamed.headers["x-message-id"]
        ids = {chunk.id async for chunk in await streamed.parse()}
    assert ids == {f"chatcmpl-{streamed_mid}"}
    # The completion's id itself is accepted, prefix and all.
    resp = await api.client.post(
        f"/v1/messages/{completion.id}/feedback", json={"score": -1, "reason": "unhelpful"}
    )
    assert resp.status_code == 200, resp.text
    assert (
        await api.client.post(f"/v1/messages/{streamed_mid}/feedback", json={"score": 1})
    ).status_code == 200
    rows = db_rows(
        services,
        "SELECT m.role, f.score FROM feedback f JOIN messages m ON m.id = f.message_id WHERE m.id = %s",
        mid,
    )
    assert rows == [("assistant", -1)]


async def test_export_has_each_verdict_with_the_replys_provenance(
    api: ApiServer, services: Services, tmp_path: Path
) -> None:
    tenant = f"export-{uuid.uuid4().hex[:8]}"
    headers = await api.headers_for(tenant, ("chat",))
    mids = [await reply_id(api, headers) for _ in range(2)]
    await api.client.post(f"/v1/messages/{mids[0]}/feedback", json={"score": 1}, headers=headers)
    await api.client.post(
        f"/v1/messages/{mids[1]}/feedback",
        json={"score": -1, "reason": "unsafe", "comment": "call 415-555-0134"},
        headers=headers,
    )
    code, out = await run_cli(api, "feedback", "export", "--tenant", tenant)
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["message_id"] for r in rows] == mids and [r["score"] for r in rows] == [1, -1]
    assert all(r["tenant"] == tenant and r["model"] == "smollm2-135m-instruct-q4_1" for r in rows)
    assert rows[0]["prompt_template_version"] == "chat-v1" and json.loads(rows[0]["route"])["rule"]
    assert rows[1]["reason"] == "unsafe" and "415-555-0134" not in rows[1]["comment"]  # opened, redacted

    target = tmp_path / "feedback.parquet"
    code, out = await run_cli(
        api, "feedback", "export", "--tenant", tenant, "--format", "parquet", "-o", str(target)
    )
    assert code == 0, out
    table = pq.read_table(target).to_pylist()
    assert [(r["message_id"], r["score"], r["reason"]) for r in table] == [
        (mids[0], 1, None),
        (mids[1], -1, "unsafe"),
    ]
    code, out = await run_cli(api, "feedback", "export", "--format", "parquet")
    assert code != 0 and "--output" in out
    code, out = await run_cli(api, "feedback", "export", "--tenant", "nobody-at-all")
    assert code == 1 and "no tenant named" in out
