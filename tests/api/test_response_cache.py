"""The response cache: a repeated deterministic question is answered from it (no request reaches the
model server: the recording stand-in counts them), durably and replayably; a changed document, another
tenant, a temperature above 0 or a tenant that turned it off never hit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from infra.config.endpoints import default_gguf
from tests.support.api_harness import ApiServer, api_with_ingest, isolated_settings, model_entry
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services, db_rows, set_tenant_policy
from tests.support.sse import collect

pytestmark = pytest.mark.timeout(300)

QUESTION = "When does the Quillon ferry leave?"
GUIDE = "The Quillon ferry leaves at nine every morning. It returns at six. Tickets are sold on board."


@dataclass
class Site:
    api: ApiServer
    model: ScriptedModelServer
    services: Services

    async def tenant(self, *, admin: bool = False, name: str | None = None) -> dict[str, str]:
        scopes = ("chat", "ingest", "admin") if admin else ("chat", "ingest")
        return await self.api.headers_for(name or f"cache-{uuid.uuid4().hex[:8]}", scopes)

    async def ask(self, headers: dict[str, str], **extra: Any) -> dict[str, Any]:
        """The question in a new conversation (no history: the prompt repeats), answered in full."""
        conv = await self.api.conversation(headers)
        body = {"content": QUESTION, "stream": False, "temperature": 0, "max_tokens": 16, **extra}
        resp = await self.api.client.post(f"/v1/conversations/{conv}/messages", json=body, headers=headers)
        assert resp.status_code == 200, resp.text
        result: dict[str, Any] = resp.json()
        return result

    def reply_row(self, turn_id: str) -> tuple[Any, ...]:
        sql = (
            "SELECT route, input_tokens, output_tokens, cost_usd, finish_reason FROM messages"
            " WHERE turn_id = %s AND role = 'assistant'"
        )
        (row,) = db_rows(self.services, sql, turn_id)
        return tuple(row)


@pytest_asyncio.fixture
async def site(services: Services, tmp_path: Path) -> AsyncIterator[Site]:
    async with ScriptedModelServer("recorder") as model:
        model.script.reply = ["At", " nine", "."]
        settings = isolated_settings(
            services,
            tmp_path,
            models={"recorder": model_entry(model.url)},
            model_path=default_gguf(),
            response_cache=True,  # off for the other tests (tests/conftest.py)
        )
        async with api_with_ingest(settings) as api:
            yield Site(api, model, services)


async def ingest(site: Site, headers: dict[str, str], text: str) -> None:
    doc = await site.api.client.post(
        "/v1/documents", json={"text": text, "source": "ferry.txt", "title": "Ferry guide"}, headers=headers
    )
    assert doc.status_code == 201, doc.text


async def test_a_repeated_deterministic_question_is_a_durable_replayable_hit(site: Site) -> None:
    headers = await site.tenant(admin=True)
    await ingest(site, headers, GUIDE)
    first = await site.ask(headers)
    asked = site.model.requests

    # A new conversation, the same question: the same prompt, so the cached reply, and no model call.
    conv = await site.api.conversation(headers)
    body = {"content": QUESTION, "temperature": 0, "max_tokens": 16}
    async with site.api.client.stream(
        "POST", f"/v1/conversations/{conv}/messages", json=body, headers=headers
    ) as resp:
        assert resp.status_code == 200
        seen = await collect(resp)
    assert site.model.requests == asked
    kinds = [e.event for e in seen]
    assert kinds[0] == "turn" and kinds[-1] == "done" and "moderated" not in kinds
    assert seen[0].data["cached"] == {"turn_id": first["turn_id"], "message_id": first["message_id"]}
    assert "".join(e.data["text"] for e in seen if e.event == "token") == first["text"] == "At nine."
    done = seen[-1].data
    assert done["moderation"] == "carried" and done["cached"]["turn_id"] == first["turn_id"]
    assert done["usage"] == {"input_tokens": 0, "output_tokens": 0}

    # Recorded like any turn, with where it came from, at no model tokens and no cost.
    hit = done["message_id"]
    (turn_id,) = db_rows(site.services, "SELECT turn_id FROM messages WHERE id = %s", hit)[0]
    route, input_tokens, output_tokens, cost, finish = site.reply_row(turn_id)
    assert route["cache"] == {"hit": True, "turn_id": first["turn_id"], "message_id": first["message_id"]}
    assert (input_tokens, output_tokens, float(cost), finish) == (0, 0, 0.0, "stop")
    # Compliance replay shows that it was a hit: the turn's history replays, its reply from the cache.
    audit = await site.api.client.get(f"/v1/turns/{turn_id}/audit", headers=headers)
    assert audit.status_code == 200, audit.text
    audited = audit.json()
    assert audited["replay"]["reproduced"] is True, audited["replay"]
    assert audited["reply_from"]["source"] == "response_cache"
    assert audited["cache"]["hit"]["turn_id"] == first["turn_id"]


async def test_what_never_hits(site: Site) -> None:
    headers = await site.tenant()
    await ingest(site, headers, GUIDE)
    await site.ask(headers)
    asked = site.model.requests
    # A temperature above 0 asks the model every time.
    await site.ask(headers, temperature=0.7)
    await site.ask(headers, temperature=0.7)
    assert site.model.requests == asked + 2
    # Another tenant with the same document and question: its own cache, empty.
    other = await site.tenant()
    await ingest(site, other, GUIDE)
    await site.ask(other)
    assert site.model.requests == asked + 3
    # The document changes: its chunks' versions and text change, so the old entry is never reached.
    await ingest(site, headers, GUIDE.replace("nine", "ten"))
    await site.ask(headers)
    assert site.model.requests == asked + 4
    await site.ask(headers)  # and the new answer is cached in turn
    assert site.model.requests == asked + 4


async def test_a_tenant_can_turn_it_off(site: Site) -> None:
    name = f"cache-off-{uuid.uuid4().hex[:8]}"
    headers = await site.tenant(name=name)
    set_tenant_policy(site.services, name, response_cache="off")
    asked = site.model.requests
    await site.ask(headers)
    await site.ask(headers)
    assert site.model.requests == asked + 2
