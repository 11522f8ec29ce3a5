"""Tenants' text at rest is sealed with their own keys: no table of Postgres and no value in Redis holds a
question, a reply, a title, a document or a chunk in the clear, while the API, the prompt's history and
search still read them; shredding one tenant's key leaves its rows unreadable and another's as they were."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from redis.asyncio import Redis

from activities.adapters.sealed_text import SealedText
from activities.adapters.tenant_keys import KeyShredded
from infra.runtime.resources import Resources
from tests.support.api_harness import ApiServer, isolated_settings, run_cli
from tests.support.services import Services, db_rows, opened

QUESTION = "My locker code is seven four nine two, please remember it."
TITLE = "Locker questions for Ada Lovelace"
DOCUMENT = "The vault behind the old bakery opens with the phrase amber lantern ninety."
# Tables a tenant's words could reach; each row is read whole, as text, as a backup would hold it.
TABLES = (
    "messages",
    "conversations",
    "chunks",
    "documents",
    "document_uploads",
    "audit_events",
    "trace_spans",
)


def _postgres_text(services: Services) -> str:
    rows = [db_rows(services, f"SELECT t::text FROM {table} t") for table in TABLES]
    return "\n".join(row[0] for table_rows in rows for row in table_rows).lower()


async def _redis_text(redis: Redis) -> str:
    """Every value of every key, whatever its type."""
    parts: list[Any] = []
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            parts.append(await redis.get(key))
        elif kind == "list":
            parts.extend(await redis.lrange(key, 0, -1))
        elif kind == "hash":
            parts.extend((await redis.hgetall(key)).values())
        elif kind == "stream":
            entries: list[Any] = await redis.xrange(key)
            parts.extend(v for _id, fields in entries for v in fields.values())
        elif kind in ("set", "zset"):
            parts.extend(await (redis.smembers(key) if kind == "set" else redis.zrange(key, 0, -1)))
    return "\n".join(p.decode(errors="replace") if isinstance(p, bytes) else str(p) for p in parts).lower()


async def _say(api: ApiServer, tenant: str, text: str) -> tuple[str, dict[str, str]]:
    """A short turn in a new conversation of ``tenant``: (the conversation, the tenant's headers)."""
    headers = await api.headers_for(tenant)
    conv = await api.conversation(headers)
    said = await api.client.post(
        f"/v1/conversations/{conv}/messages",
        json={"content": text, "stream": False, "max_tokens": 4},
        headers=headers,
    )
    assert said.status_code == 200, said.text
    return conv, headers


async def test_no_table_or_redis_value_holds_a_tenants_text_in_the_clear(
    api: ApiServer, services: Services, resources: Resources
) -> None:
    headers = await api.headers_for(f"rest-{uuid.uuid4().hex[:6]}")  # a tenant with this document only
    doc = await api.client.post(
        "/v1/documents", json={"text": DOCUMENT, "source": "vault.txt"}, headers=headers
    )
    assert doc.status_code == 201, doc.text
    made = await api.client.post("/v1/conversations", json={"title": TITLE}, headers=headers)
    conv = made.json()["id"]
    assert made.json()["title"] == TITLE
    said = await api.client.post(
        f"/v1/conversations/{conv}/messages",
        json={"content": QUESTION, "stream": False, "max_tokens": 24},
        headers=headers,
    )
    assert said.status_code == 200, said.text
    reply = said.json()["text"]
    # A second turn takes the first as its history from the recent context (Redis), sealed there too.
    again = await api.client.post(
        f"/v1/conversations/{conv}/messages",
        json={"content": "Which phrase opens the vault?", "stream": False, "max_tokens": 8},
        headers=headers,
    )
    assert again.status_code == 200, again.text

    stored = _postgres_text(services)
    cached = await _redis_text(resources.redis)
    secrets = [QUESTION, TITLE, DOCUMENT, *([reply] if len(reply) >= 16 else [])]
    for secret in secrets:
        assert secret.lower() not in stored
        assert secret.lower() not in cached
    # ... and yet every reader sees them: the API, the history of the prompt, search.
    listed = (await api.client.get(f"/v1/conversations/{conv}/messages", headers=headers)).json()
    assert [m["content"] for m in listed[:2]] == [QUESTION, reply]
    assert (await api.client.get(f"/v1/conversations/{conv}", headers=headers)).json()["title"] == TITLE
    [tenant] = {
        row[0] for row in db_rows(services, "SELECT tenant_id FROM conversations WHERE id = %s", conv)
    }
    for mode in ("vector", "text", "hybrid"):
        found = await resources.search.search(tenant, "amber lantern vault", 3, mode, use_cache=False)
        assert [c.text for c in found.chunks][:1] == [DOCUMENT], mode
    assert opened(services, "SELECT tenant_id, text FROM chunks WHERE document_id = %s", doc.json()["id"])


async def test_an_upload_waiting_for_ingestion_is_sealed(services: Services, tmp_path: Path) -> None:
    # No ingest worker here: the upload stays in Postgres, waiting.
    async with ApiServer(isolated_settings(services, tmp_path)) as api:
        doc = await api.client.post(
            "/v1/documents?wait=false", json={"text": DOCUMENT, "source": "later.txt"}
        )
        assert doc.status_code == 202, doc.text
        [(tenant, content)] = db_rows(
            services,
            "SELECT tenant_id, content FROM document_uploads WHERE document_id = %s",
            doc.json()["id"],
        )
        assert content.startswith(b"tf1:") and DOCUMENT.encode() not in content
        assert await api.app.state.resources.sealer.open_bytes(tenant, content) == DOCUMENT.encode()


async def test_shredding_one_tenant_leaves_its_rows_unreadable_and_spares_the_other(
    services: Services, tmp_path: Path
) -> None:
    settings = isolated_settings(services, tmp_path, tenant_key_cache_s=0)
    async with ApiServer(settings) as api:
        sealer: SealedText = api.app.state.resources.sealer
        names = [f"rest-a-{uuid.uuid4().hex[:6]}", f"rest-b-{uuid.uuid4().hex[:6]}"]
        convs = []
        for name in names:
            convs.append((await _say(api, name, QUESTION))[0])
        rows = [
            db_rows(
                services,
                "SELECT tenant_id, content FROM messages WHERE conversation_id = %s AND role = 'user'",
                conv,
            )[0]
            for conv in convs
        ]
        (tenant_a, sealed_a), (tenant_b, sealed_b) = rows
        assert sealed_a != sealed_b  # one text, two keys
        # A value moved into another tenant's row does not open there.
        with pytest.raises(InvalidTag):
            await sealer.open(tenant_b, sealed_a)

        code, out = await run_cli(api, "codec", "shred", "--tenant", names[0], "--yes")
        assert code == 0, out
        with pytest.raises(KeyShredded):
            await sealer.open(tenant_a, sealed_a)
        assert await sealer.open(tenant_b, sealed_b) == QUESTION


async def test_rows_written_in_the_clear_are_sealed_in_place(services: Services, tmp_path: Path) -> None:
    # Written with sealing off (as before it existed), then sealed by the operator's command.
    clear = isolated_settings(services, tmp_path, at_rest_encryption=False)
    note = "An old note, written before text was sealed at rest."
    name = f"legacy-{uuid.uuid4().hex[:6]}"
    async with ApiServer(clear) as api:
        conv, headers = await _say(api, name, note)
    query = "SELECT content FROM messages WHERE conversation_id = %s AND role = 'user'"
    assert db_rows(services, query, conv) == [(note,)]
    [(written,)] = db_rows(
        services, "SELECT count(*) FROM messages WHERE conversation_id = %s AND content <> ''", conv
    )

    async with ApiServer(isolated_settings(services, tmp_path)) as api:
        code, out = await run_cli(api, "codec", "seal-at-rest", "--tenant", name)
        assert code == 0, out
        assert f"{written} messages, 1 conversations" in out, out
        [(content,)] = db_rows(services, query, conv)
        assert content.startswith("tf1:") and note not in content
        listed = (await api.client.get(f"/v1/conversations/{conv}/messages", headers=headers)).json()
        assert listed[0]["content"] == note
        code, out = await run_cli(api, "codec", "seal-at-rest", "--tenant", name)
        assert code == 0 and "0 messages" in out, out  # nothing left to seal
