"""Erasure on request: after a conversation is erased, none of its text or turns is left in Postgres,
Redis, the trace store or Temporal; the audit trail records counts, never content; asking again finds
nothing more; another tenant cannot erase it; an operator erases one end user's data from the CLI."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from opentelemetry import trace
from temporalio.service import RPCError, RPCStatusCode

from activities.adapters.context_cache import recent_key
from activities.adapters.turn_events import stream_key
from activities.contracts.maintenance import ErasureCounts
from api.services.erasure import start_erasure
from infra.runtime.resources import Resources
from tests.support.api_harness import ApiServer, isolated_settings, run_cli
from tests.support.services import Services, db_rows, opened
from workers.ingest import build_ingest_worker


async def _turn(api: ApiServer, conv: str, text: str, headers: dict[str, str]) -> str:
    resp = await api.client.post(
        f"/v1/conversations/{conv}/messages",
        json={"content": text, "stream": False, "max_tokens": 6},
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    turn_id = str(resp.json()["turn_id"])
    # Moderation runs after the reply: let the turn's workflow end, so every span of it is written.
    await api.app.state.resources.temporal.get_workflow_handle(turn_id).result()
    return turn_id


async def _conversation(api: ApiServer, headers: dict[str, str], end_user: str | None = None) -> str:
    resp = await api.client.post("/v1/conversations", json={"end_user": end_user}, headers=headers)
    assert resp.status_code == 201, resp.text
    assert resp.json()["end_user"] == end_user
    return str(resp.json()["id"])


async def _gone_from_temporal(res: Resources, workflow_id: str) -> bool:
    try:
        await res.temporal.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        return exc.status == RPCStatusCode.NOT_FOUND
    return False


async def test_an_erased_conversation_leaves_no_trace(services: Services, tmp_path: Path) -> None:
    settings = isolated_settings(services, tmp_path)
    res = await Resources.open(settings)
    marker, kept_marker = f"quokka{uuid.uuid4().hex[:6]}", f"wombat{uuid.uuid4().hex[:6]}"
    try:
        async with build_ingest_worker(res), ApiServer(settings) as api:
            tenant = f"erase-{uuid.uuid4().hex[:8]}"
            headers = await api.headers_for(tenant)
            conv, kept = await _conversation(api, headers), await _conversation(api, headers)
            turns = [await _turn(api, conv, f"Remember {marker}, please.", headers) for _ in range(2)]
            await _turn(api, kept, f"Remember {kept_marker}.", headers)
            # A worker's last span of a turn can end just after its client saw the result: wait until
            # every span of these turns is stored (erasure takes what is stored; docs/compliance.md).
            spans_before, seen = [(0,)], -1
            while spans_before[0][0] != seen:
                seen = spans_before[0][0]
                trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
                await asyncio.sleep(1)
                spans_before = db_rows(
                    services, "SELECT count(*) FROM trace_spans WHERE turn_id = ANY(%s)", turns
                )
            assert spans_before[0][0] > 0 and await res.redis.exists(stream_key(turns[0]), recent_key(conv))

            other = await api.headers_for(f"other-{uuid.uuid4().hex[:8]}")
            assert (await api.client.delete(f"/v1/conversations/{conv}", headers=other)).status_code == 404

            erased = await api.client.delete(f"/v1/conversations/{conv}", headers=headers)
            assert erased.status_code in (200, 202), erased.text
            if erased.status_code == 202:  # a slow one goes on: wait for it, as a client would poll
                erasure = res.temporal.get_workflow_handle(
                    erased.json()["erasure_id"], result_type=ErasureCounts
                )
                counts = (await erasure.result()).model_dump()
            else:
                counts = erased.json()
            assert counts["conversations"] == 1 and counts["messages"] == 4 and counts["turns"] == 2
            assert (
                counts["workflow_executions"] >= 2 and counts["redis_keys"] >= 3 and counts["trace_spans"] > 0
            )

            # Nowhere: Postgres, Redis, the trace store, Temporal.
            # (The text is sealed at rest: each of the tenant's messages is opened to look for it.)
            texts = opened(
                services,
                "SELECT m.tenant_id, m.content FROM messages m JOIN tenants t ON t.id = m.tenant_id"
                " WHERE t.name = %s AND m.role = 'user'",
                tenant,
            )
            assert not [t for t in texts if marker in t]
            assert db_rows(services, "SELECT count(*) FROM conversations WHERE id = %s", conv) == [(0,)]
            assert db_rows(services, "SELECT count(*) FROM trace_spans WHERE turn_id = ANY(%s)", turns) == [
                (0,)
            ]
            assert not await res.redis.exists(*[stream_key(t) for t in turns], recent_key(conv))
            for turn in turns:
                assert await _gone_from_temporal(res, turn)
            # What was not asked for stays.
            # The question (the reply may or may not echo it).
            assert [t for t in texts if kept_marker in t] == [f"Remember {kept_marker}."]

            # The audit trail: that it happened, who asked, how much; never the text.
            [(actor, details)] = db_rows(
                services,
                "SELECT actor, details FROM audit_events WHERE action = 'erasure.completed'"
                " AND details->'scope'->'conversations' ? %s",
                conv,
            )
            assert actor.startswith("key:") and details["messages"] == 4 and marker not in str(details)

            # Again: the conversation is gone (404); the erasure itself run again finds nothing more.
            assert (await api.client.delete(f"/v1/conversations/{conv}", headers=headers)).status_code == 404
            [(tenant_id,)] = db_rows(services, "SELECT id FROM tenants WHERE name = %s", tenant)
            again = await start_erasure(res, tenant_id, "test", conversation_ids=[conv])
            assert (await again.result()).model_dump() == dict.fromkeys(counts, 0)
    finally:
        await res.close()


@pytest.mark.parametrize("refused", [["--conversation", "not-a-uuid"], []])
async def test_the_cli_refuses_unclear_requests(
    services: Services, tmp_path: Path, refused: list[str]
) -> None:
    async with ApiServer(isolated_settings(services, tmp_path)) as api:
        code, out = await run_cli(api, "erase", "--tenant", "default", *refused)
    assert code == 2 and ("not a conversation id" in out or "--yes" in out)


async def test_an_operator_erases_one_end_users_data(services: Services, tmp_path: Path) -> None:
    settings = isolated_settings(services, tmp_path)
    res = await Resources.open(settings)
    try:
        async with build_ingest_worker(res), ApiServer(settings) as api:
            tenant = f"enduser-{uuid.uuid4().hex[:8]}"
            headers = await api.headers_for(tenant)
            mine = [await _conversation(api, headers, end_user="user-17") for _ in range(2)]
            theirs = await _conversation(api, headers, end_user="user-18")
            for conv in [*mine, theirs]:
                await _turn(api, conv, "Hello!", headers)
            code, out = await run_cli(api, "erase", "--tenant", tenant, "--end-user", "user-17")
            assert code == 0, out
            left = db_rows(
                services, "SELECT id::text FROM conversations WHERE id::text = ANY(%s)", [*mine, theirs]
            )
            assert left == [(theirs,)]
    finally:
        await res.close()
