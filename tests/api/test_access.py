"""API keys and tenant scoping on every route: the table covers each operation of the OpenAPI schema
(a new route without a row fails the test); another tenant's objects answer 404, never data."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.core.principals import TTL_S
from db.access import create_key, ensure_tenant, revoke_key
from infra.cli.access import revoke
from infra.config.residency import StoreName, StoreSpec, describe_gaps, residency_gaps
from tests.support.api_harness import ApiServer, isolated_settings
from tests.support.services import Services, db_rows, psycopg_url

# Routes that need no key (probes, the schema itself).
OPEN = {"/livez", "/readyz", "/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}

# What tenant B's key gets for each route when it names (or would list) tenant A's objects.
CROSS_TENANT: dict[tuple[str, str], tuple[int, Any]] = {
    ("POST", "/v1/conversations"): (201, {}),  # creates B's own: nothing of A's involved
    ("GET", "/v1/conversations"): (200, None),  # B's own (tests/api/test_conversations.py: none of A's)
    ("PATCH", "/v1/conversations/{conversation_id}"): (404, {"title": "B was here"}),
    ("GET", "/v1/conversations/{conversation_id}"): (404, None),
    ("GET", "/v1/conversations/{conversation_id}/messages"): (404, None),
    ("DELETE", "/v1/conversations/{conversation_id}"): (404, None),  # erasing A's: not found for B
    ("POST", "/v1/conversations/{conversation_id}/messages"): (404, {"content": "hi", "stream": False}),
    ("POST", "/v1/messages"): (
        404,
        {"content": "hi", "stream": False, "conversation_id": "{conversation_id}"},
    ),
    ("GET", "/v1/turns/{turn_id}"): (404, None),
    ("GET", "/v1/turns/{turn_id}/events"): (404, None),
    ("GET", "/v1/turns/{turn_id}/audit"): (403, None),  # admin keys only (and then 404)
    ("POST", "/v1/turns/{turn_id}/cancel"): (404, None),
    ("POST", "/v1/chat/completions"): (
        200,
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    ),
    ("GET", "/v1/models"): (200, None),
    ("POST", "/v1/documents"): (201, {"text": "B's own note.", "source": "b-note"}),
    ("GET", "/v1/documents"): (200, None),
    ("GET", "/v1/documents/{document_id}"): (404, None),
    ("DELETE", "/v1/documents/{document_id}"): (404, None),
    ("POST", "/v1/search"): (200, {"query": "Quillon lighthouse"}),
    ("GET", "/v1/usage"): (200, None),
    ("POST", "/codec/encode"): (403, {"payloads": []}),  # operators' (admin keys) only
    ("POST", "/codec/decode"): (403, {"payloads": []}),
    ("GET", "/v1/slo"): (200, None),  # its own tenant's
    ("GET", "/v1/drift"): (403, None),  # platform-wide: operator keys only
    ("GET", "/v1/dashboard/summary"): (403, None),
    ("POST", "/v1/messages/{message_id}/feedback"): (404, {"score": -1}),  # A's reply: not found for B
    ("DELETE", "/v1/messages/{message_id}/feedback"): (404, None),
    ("GET", "/v1/experiments"): (403, None),  # operator keys only
    ("GET", "/v1/experiments/{name}"): (403, None),
    ("POST", "/v1/ws/tickets"): (201, None),  # a ticket for B's own key
}


async def a_objects(api: ApiServer) -> dict[str, str]:
    """Tenant A (the default tenant of the server's client): a conversation, a turn, a document."""
    conv = await api.conversation()
    turn = await api.client.post(
        f"/v1/conversations/{conv}/messages", json={"content": "Hi", "stream": False, "max_tokens": 2}
    )
    doc = await api.client.post(
        "/v1/documents", json={"text": "The Quillon lighthouse keeper is Ada.", "source": f"a-{uuid.uuid4()}"}
    )
    assert turn.status_code == 200 and doc.status_code in (201, 202), (turn.text, doc.text)
    return {
        "conversation_id": conv,
        "turn_id": turn.json()["turn_id"],
        "message_id": turn.json()["message_id"],
        "document_id": doc.json()["id"],
        "name": "any-canary",
    }


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


def operations(api: ApiServer) -> set[tuple[str, str]]:
    schema = api.app.openapi()
    return {(method.upper(), path) for path, item in schema["paths"].items() for method in item} - {
        (m, p) for m in ("GET", "POST") for p in OPEN
    }


async def test_every_route_needs_a_key(api: ApiServer) -> None:
    ids = {
        "conversation_id": str(uuid.uuid4()),
        "turn_id": "turn-x",
        "message_id": str(uuid.uuid4()),
        "document_id": str(uuid.uuid4()),
        "name": "any-canary",
    }
    for method, path in sorted(operations(api)):
        resp = await api.client.request(
            method,
            fill(path, ids),
            json=fill(CROSS_TENANT.get((method, path), (0, None))[1], ids),
            headers={"Authorization": ""},
        )
        assert resp.status_code == 401, (method, path, resp.text)
        assert resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["error"]["code"] == "401"


async def test_another_tenants_objects_do_not_exist_on_any_route(api: ApiServer) -> None:
    assert operations(api) == set(CROSS_TENANT), "every route needs a row in CROSS_TENANT"
    ids = await a_objects(api)
    b = await api.headers_for(f"b-{uuid.uuid4().hex[:8]}")
    for (method, path), (status, body) in CROSS_TENANT.items():
        resp = await api.client.request(method, fill(path, ids), json=fill(body, ids), headers=b)
        assert resp.status_code == status, (method, path, resp.text)
        # A's content never shows; a 404 may echo the id the caller sent, a success names none of A's.
        assert "Quillon lighthouse keeper" not in resp.text, (method, path)
        if status < 300:
            assert not any(value in resp.text for value in ids.values()), (method, path)
    # And A still sees its own.
    mine = await api.client.get(f"/v1/documents/{ids['document_id']}")
    assert mine.status_code == 200


async def test_revoked_expired_and_unscoped_keys(api: ApiServer) -> None:
    sessions = api.app.state.resources.sessions
    tenant = await ensure_tenant(sessions, f"keys-{uuid.uuid4().hex[:8]}")
    live, row = await create_key(sessions, tenant, "live", ["chat"])
    expired, _ = await create_key(sessions, tenant, "old", ["chat"], datetime.now(UTC) - timedelta(seconds=1))
    ingest_only, _ = await create_key(sessions, tenant, "ingest", ["ingest"])

    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    assert (await api.client.post("/v1/conversations", json={}, headers=auth(live))).status_code == 201
    assert (await api.client.post("/v1/conversations", json={}, headers=auth(expired))).status_code == 401
    tampered = live[:-4] + ("AAAA" if not live.endswith("AAAA") else "BBBB")
    assert (await api.client.post("/v1/conversations", json={}, headers=auth(tampered))).status_code == 401
    # Scopes: an ingest key cannot chat, a chat key cannot upload; both may search.
    refused = await api.client.post("/v1/conversations", json={}, headers=auth(ingest_only))
    assert refused.status_code == 403 and "scope" in refused.json()["error"]["message"]
    upload = await api.client.post("/v1/documents", json={"text": "x", "source": "s"}, headers=auth(live))
    assert upload.status_code == 403
    for key in (live, ingest_only):
        found = await api.client.post("/v1/search", json={"query": "x"}, headers=auth(key))
        assert found.status_code == 200

    # `turnflow keys revoke` announces it: every API process forgets the key (its cached principal) at once.
    assert await revoke(api.app.state.resources, row.prefix) == f"revoked key {row.prefix}"
    deadline = time.monotonic() + 1.0
    while (await api.client.post("/v1/conversations", json={}, headers=auth(live))).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still worked a second after its announcement"
        await asyncio.sleep(0.05)
    assert not await revoke_key(sessions, row.prefix)  # already revoked


async def test_a_key_revoked_unannounced_stops_working_within_the_cache_bound(api: ApiServer) -> None:
    """Revoked in the database only (the announcement lost): the cached principal expires by itself."""
    sessions = api.app.state.resources.sessions
    tenant = await ensure_tenant(sessions, f"keys-{uuid.uuid4().hex[:8]}")
    key, row = await create_key(sessions, tenant, "live", ["chat"])
    headers = {"Authorization": f"Bearer {key}"}
    assert (await api.client.post("/v1/conversations", json={}, headers=headers)).status_code == 201
    assert await revoke_key(sessions, row.prefix)
    revoked_at = time.monotonic()
    while (await api.client.post("/v1/conversations", json={}, headers=headers)).status_code != 401:
        assert time.monotonic() - revoked_at <= TTL_S + 0.5, f"still accepted {TTL_S:g} s after revocation"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("scopes", [[], ["root"]])
async def test_keys_need_known_scopes(api: ApiServer, scopes: list[str]) -> None:
    sessions = api.app.state.resources.sessions
    tenant = await ensure_tenant(sessions, "default")
    with pytest.raises(ValueError, match="scopes must be some of chat, ingest, admin, operator"):
        await create_key(sessions, tenant, "bad", scopes)


async def test_rate_limits_answer_429_with_retry_after_then_recover(
    services: Services, tmp_path: Path
) -> None:
    settings = isolated_settings(services, tmp_path)
    settings = settings.model_copy(update={"rate_limit_window_s": 3.0})
    async with ApiServer(settings) as api:
        name = f"limited-{uuid.uuid4().hex[:8]}"
        headers = await api.headers_for(name)
        with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
            limits = '{"requests_per_min": 4, "tokens_per_min": 5}'
            conn.execute("UPDATE tenants SET settings = %s::jsonb WHERE name = %s", (limits, name))
        conv = await api.conversation(headers)  # request 1
        first = await api.client.post(  # request 2: under both limits; it uses far more than 5 tokens
            f"/v1/conversations/{conv}/messages",
            json={"content": "Hi", "stream": False, "max_tokens": 3},
            headers=headers,
        )
        assert first.status_code == 200, first.text
        over_tokens = await api.client.post(  # request 3: refused for tokens
            f"/v1/conversations/{conv}/messages", json={"content": "Hi", "stream": False}, headers=headers
        )
        assert over_tokens.status_code == 429 and "tokens" in over_tokens.json()["error"]["message"]
        assert 1 <= int(over_tokens.headers["Retry-After"]) <= 3
        await api.client.get(f"/v1/conversations/{conv}", headers=headers)  # request 4
        over_requests = await api.client.get(f"/v1/conversations/{conv}", headers=headers)  # 5: over
        assert over_requests.status_code == 429 and "requests" in over_requests.json()["error"]["message"]
        assert 1 <= int(over_requests.headers["Retry-After"]) <= 3
        # Another tenant is not held back by this one's limits.
        assert (await api.client.get("/v1/models")).status_code == 200

        await asyncio.sleep(3.2)  # the window slides past both
        again = await api.client.post(
            f"/v1/conversations/{conv}/messages",
            json={"content": "Hi", "stream": False, "max_tokens": 3},
            headers=headers,
        )
        assert again.status_code == 200, again.text


def audit_rows(services: Services, request_id: str) -> list[tuple[Any, ...]]:
    return db_rows(
        services,
        "SELECT actor, action, object_type, object_id, details, tenant_id::text FROM audit_events"
        " WHERE request_id = %s ORDER BY id",
        request_id,
    )


async def test_writes_and_refusals_are_audited_with_key_tenant_object_and_request(
    api: ApiServer, services: Services
) -> None:
    name = f"audited-{uuid.uuid4().hex[:8]}"
    headers = await api.headers_for(name)
    prefix = headers["Authorization"].removeprefix("Bearer tf_").split("_")[0]
    rid = uuid.uuid4().hex

    made = await api.client.post("/v1/conversations", json={}, headers={**headers, "X-Request-ID": rid})
    conv = made.json()["id"]
    [(actor, action, _, _, details, tenant)] = audit_rows(services, rid)
    assert actor == f"key:{prefix}" and action == "POST /v1/conversations" and details == {"status": 201}
    assert tenant is not None

    rid = uuid.uuid4().hex
    said = await api.client.post(
        f"/v1/conversations/{conv}/messages",
        json={"content": "Mail me at jane.doe@example.com", "stream": False, "max_tokens": 2},
        headers={**headers, "X-Request-ID": rid},
    )
    assert said.status_code == 200
    [(_, action, object_type, object_id, details, _)] = audit_rows(services, rid)
    assert action == "POST /v1/conversations/{conversation_id}/messages"
    assert (object_type, object_id) == ("conversation", conv)
    assert details["pii_redacted"] == {"EMAIL": 1} and "jane.doe" not in str(details)

    rid = uuid.uuid4().hex
    other = await api.client.get(f"/v1/conversations/{conv}", headers={"X-Request-ID": rid})  # default tenant
    assert other.status_code == 404
    [(actor, action, _, object_id, details, _)] = audit_rows(services, rid)
    assert action == "GET /v1/conversations/{conversation_id}" and details == {"status": 404}
    assert object_id == conv and actor != f"key:{prefix}"

    rid = uuid.uuid4().hex
    await api.client.get("/v1/models", headers={"Authorization": "Bearer tf_bad_key", "X-Request-ID": rid})
    [(actor, _, _, _, details, tenant)] = audit_rows(services, rid)
    assert actor == "anonymous" and details == {"status": 401} and tenant is None

    rid = uuid.uuid4().hex
    assert (await api.client.get("/v1/models", headers={"X-Request-ID": rid})).status_code == 200
    assert audit_rows(services, rid) == []  # a successful read is not a write


def test_residency_gaps_name_each_store_and_what_it_lacks() -> None:
    stores: dict[StoreName, StoreSpec] = {
        "postgres": StoreSpec(residency=["eu", "on-prem"]),
        "redis": StoreSpec(residency=["on-prem"]),
        "embedder": StoreSpec(),
    }
    assert residency_gaps([], stores) == {}
    assert residency_gaps(["on-prem"], stores) == {"embedder": ["on-prem"]}
    gaps = residency_gaps(["eu", "on-prem"], stores)
    assert gaps == {"embedder": ["eu", "on-prem"], "redis": ["eu"]}
    assert describe_gaps(gaps) == "embedder lacks eu, on-prem; redis lacks eu"


async def test_a_tenant_whose_residency_the_stores_lack_is_refused_and_audited(
    api: ApiServer, services: Services
) -> None:
    """The stores are on-prem (temporal.yaml); a tenant moved to `eu` after its keys were made (or a
    store re-tagged) is refused on every route, not served from a store its residency excludes."""
    served, moved = f"onprem-{uuid.uuid4().hex[:8]}", f"eu-{uuid.uuid4().hex[:8]}"
    ok, refused = await api.headers_for(served), await api.headers_for(moved)
    with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
        conn.execute("UPDATE tenants SET residency_tags = '{on-prem}' WHERE name = %s", (served,))
        conn.execute("UPDATE tenants SET residency_tags = '{eu,on-prem}' WHERE name = %s", (moved,))
    assert (await api.client.post("/v1/conversations", json={}, headers=ok)).status_code == 201
    rid = uuid.uuid4().hex
    for method, path in (("POST", "/v1/conversations"), ("GET", "/v1/documents"), ("GET", "/v1/usage")):
        resp = await api.client.request(method, path, json={}, headers={**refused, "X-Request-ID": rid})
        assert resp.status_code == 403, resp.text
        error = resp.json()["error"]
        assert error["code"] == "residency_violation" and "postgres lacks eu" in error["message"]
    rows = audit_rows(services, rid)
    assert len(rows) == 3
    for _, _, _, _, details, tenant in rows:
        assert details["refused"] == "residency_violation" and details["status"] == 403
        assert details["stores"]["postgres"] == ["eu"] and tenant is not None
    # Nothing was written for the refused tenant.
    assert db_rows(
        services,
        "SELECT count(*) FROM conversations c JOIN tenants t ON t.id = c.tenant_id WHERE t.name = %s",
        moved,
    ) == [(0,)]


async def test_a_key_records_when_it_was_last_used_to_the_minute(api: ApiServer, services: Services) -> None:
    tenant = f"used-{uuid.uuid4().hex[:8]}"
    headers = await api.headers_for(tenant)
    prefix = headers["Authorization"].removeprefix("Bearer tf_").split("_")[0]
    query = "SELECT last_used_at FROM api_keys WHERE prefix = %s"
    assert db_rows(services, query, prefix) == [(None,)]
    assert (await api.client.get("/v1/models", headers=headers)).status_code == 200
    [(first,)] = db_rows(services, query, prefix)
    assert first is not None and (datetime.now(UTC) - first) < timedelta(minutes=1)
    # Within the minute, requests do not write again (one write per key per minute).
    assert (await api.client.get("/v1/models", headers=headers)).status_code == 200
    assert db_rows(services, query, prefix) == [(first,)]
