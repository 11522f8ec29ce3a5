"""Answers from the sources: with every model down and a tenant with documents, the turn ends `done`
with `degraded: "extractive"` and cited sentences of the documents; without documents (or with the
tenant's policy against it), the explicit `error` stays. A turn shed at capacity is answered the same
way instead of a 503."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from activities.logic.extractive import NOTE
from infra.config.endpoints import default_gguf
from tests.support.api_harness import ApiServer, api_with_ingest, isolated_settings, model_entry
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services, db_rows, set_tenant_policy
from tests.support.sse import Event, collect

pytestmark = pytest.mark.timeout(300)

QUESTION = "When does the Quillon ferry leave in the morning?"
GUIDE = (
    "Welcome aboard. The Quillon ferry leaves at nine every morning from the north pier. "
    "It returns at six. Dogs travel free."
)


def dead_url() -> str:
    """A port nothing listens on: the model server is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def turn(api: ApiServer, headers: dict[str, str]) -> list[Event]:
    conv = await api.conversation(headers)
    async with api.client.stream(
        "POST", f"/v1/conversations/{conv}/messages", json={"content": QUESTION}, headers=headers
    ) as resp:
        assert resp.status_code == 200, await resp.aread()
        return await collect(resp)


async def with_guide(
    api: ApiServer, name: str | None = None, headers: dict[str, str] | None = None
) -> dict[str, str]:
    headers = headers or await api.headers_for(name or f"sources-{uuid.uuid4().hex[:8]}")
    doc = await api.client.post(
        "/v1/documents", json={"text": GUIDE, "source": "ferry.txt", "title": "Ferry guide"}, headers=headers
    )
    assert doc.status_code == 201, doc.text
    return headers


@pytest_asyncio.fixture
async def down(services: Services, tmp_path: Path) -> AsyncIterator[ApiServer]:
    """Every model of the chain down (a GPU model and its CPU fallback, both unreachable)."""
    models = {
        "gpu": model_entry(dead_url(), fidelity=2, fallback=["cpu"]),
        "cpu": model_entry(dead_url(), tier="cpu-quantized"),
    }
    settings = isolated_settings(services, tmp_path, models=models, model_path=default_gguf())
    async with api_with_ingest(settings) as api:
        yield api


async def test_with_every_model_down_a_tenant_with_documents_gets_cited_sentences(
    down: ApiServer, services: Services
) -> None:
    seen = await turn(down, await with_guide(down))
    kinds = [e.event for e in seen]
    assert "error" not in kinds and kinds[-1] in ("done", "moderated"), kinds
    # The failed model attempts' place is taken by a `reset` announcing the extractive answer.
    announced = next(
        e for e in seen if e.event in ("turn", "reset") and e.data.get("degraded") == "extractive"
    )
    assert announced.data["note"] == NOTE
    done = next(e for e in seen if e.event == "done").data
    assert done["degraded"] == "extractive" and done["finish_reason"] == "extractive"
    assert done["note"] == NOTE and done["usage"] == {"input_tokens": 0, "output_tokens": 0}
    text = "".join(e.data["text"] for e in seen[seen.index(announced) :] if e.event == "token")
    first = text.splitlines()[0]
    # The sentence closest to the question comes first, cited by its document's title.
    assert first == "The Quillon ferry leaves at nine every morning from the north pier. [Ferry guide]"
    assert "Dogs travel free" not in text  # nothing in it answers the question
    sql = "SELECT content, finish_reason, route FROM messages WHERE id = %s"
    ((content, finish, route),) = db_rows(services, sql, done["message_id"])
    assert finish == "extractive" and route["degraded"] == "extractive"
    assert [f["model"] for f in route["fallbacks"]] == ["gpu", "cpu"]
    assert content.startswith("tf1:") or content == text  # sealed at rest where encryption is on


async def open_every_circuit(api: ApiServer) -> None:
    breakers = api.app.state.resources.breakers
    for url in api.app.state.resources.registry.endpoints():
        for _ in range(8):
            await breakers.record(url, "failed")


async def test_with_every_circuit_open_the_turn_is_answered_from_the_sources_without_a_model_call(
    down: ApiServer, services: Services
) -> None:
    headers = await with_guide(down)
    await open_every_circuit(down)
    seen = await turn(down, headers)
    done = next(e for e in seen if e.event == "done").data
    assert done["degraded"] == "extractive" and done["finish_reason"] == "extractive"
    ((route,),) = db_rows(services, "SELECT route FROM messages WHERE id = %s", done["message_id"])
    assert route["fallbacks"] == [] and route["degraded"] == "extractive"  # no model was tried
    # Without documents the refusal stands, as before: the circuits are open, try again shortly.
    seen = await turn(down, await down.headers_for(f"empty-{uuid.uuid4().hex[:8]}"))
    assert seen[-1].event == "error" and seen[-1].data["code"] == "model_unavailable"
    assert "circuit open" in seen[-1].data["message"]


async def test_without_documents_or_against_the_policy_the_error_stays(
    down: ApiServer, services: Services
) -> None:
    seen = await turn(down, await down.headers_for(f"empty-{uuid.uuid4().hex[:8]}"))
    assert seen[-1].event == "error" and seen[-1].data["code"] == "model_unavailable"
    name = f"strict-{uuid.uuid4().hex[:8]}"
    headers = await with_guide(down, name)
    set_tenant_policy(services, name, degraded_answers=False)
    seen = await turn(down, headers)
    assert seen[-1].event == "error" and seen[-1].data["code"] == "model_unavailable"


async def test_a_turn_shed_at_capacity_is_answered_from_the_sources(
    services: Services, tmp_path: Path
) -> None:
    async with ScriptedModelServer("slow") as slow:
        slow.script.reply = [f" w{i}" for i in range(40)]
        slow.script.token_delay_s = 0.1
        settings = isolated_settings(
            services,
            tmp_path,
            models={"slow": model_entry(slow.url)},
            model_path=default_gguf(),
            max_inflight_turns=1,
        )
        async with api_with_ingest(settings) as api:
            # The policy first: a key's principal is cached for seconds once used.
            name = f"shed-{uuid.uuid4().hex[:8]}"
            headers = await api.headers_for(name)
            set_tenant_policy(services, name, answer_when_shed=True)
            await with_guide(api, headers=headers)
            # One turn holds the only place; the next is shed.
            conv = await api.conversation(headers)
            busy = asyncio.create_task(
                api.client.post(
                    f"/v1/conversations/{conv}/messages",
                    json={"content": "Count.", "stream": False},
                    headers=headers,
                )
            )
            while slow.requests == 0:
                await asyncio.sleep(0.05)
            asked = slow.requests
            seen = await turn(api, headers)
            done = next(e for e in seen if e.event == "done").data
            assert done["degraded"] == "extractive"
            assert slow.requests == asked  # no model was asked for the shed turn
            # A tenant that did not ask for such answers (the default) gets the 503 instead.
            strict = await with_guide(api)
            conv = await api.conversation(strict)
            refused = await api.client.post(
                f"/v1/conversations/{conv}/messages", json={"content": QUESTION}, headers=strict
            )
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
            assert (await busy).status_code == 200
