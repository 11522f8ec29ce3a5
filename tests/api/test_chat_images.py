"""Image parts in chat completions: taken only when every model that may answer declares vision,
passed to it after the message's text, counted, and kept in the transcript by reference."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from api.core.tenancy import DEFAULT_TENANT
from infra.config.endpoints import default_gguf
from tests.support.api_harness import ApiServer, isolated_settings, model_entry
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services

pytestmark = pytest.mark.timeout(300)

# A 1x1 PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
INLINE = "data:image/png;base64," + base64.b64encode(PIXEL).decode()
LINK = "https://images.example.com/cat.jpg?sig=abc"


def asking(model: str, *images: str) -> dict[str, object]:
    parts = [{"type": "text", "text": "What is in these pictures?"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in images]
    return {"model": model, "messages": [{"role": "user", "content": parts}], "max_tokens": 8}


@pytest_asyncio.fixture
async def recorded(
    services: Services, tmp_path: Path
) -> AsyncIterator[tuple[ApiServer, ScriptedModelServer]]:
    """A recording stand-in served as a vision model (vLLM) and as a text-only one it falls back to."""
    async with ScriptedModelServer("recorder") as scripted:
        models = {
            "sees": model_entry(scripted.url, provider="vllm", vision=True, fidelity=2, context=8192),
            "sees-then-text": model_entry(scripted.url, provider="vllm", vision=True, fallback=["text"]),
            "text": model_entry(scripted.url, provider="llamacpp"),
        }
        settings = isolated_settings(services, tmp_path, models=models, model_path=default_gguf())
        async with ApiServer(settings) as api:
            yield api, scripted


async def test_images_reach_a_vision_model_after_the_text_and_are_kept_by_reference(
    recorded: tuple[ApiServer, ScriptedModelServer],
) -> None:
    api, scripted = recorded
    resp = await api.client.post("/v1/chat/completions", json=asking("sees", INLINE, LINK))
    assert resp.status_code == 200, resp.text
    (sent,) = [m for m in scripted.bodies[-1]["messages"] if m["role"] == "user"]  # type: ignore[union-attr]
    assert sent["content"] == [
        {"type": "text", "text": "What is in these pictures?"},
        {"type": "image_url", "image_url": {"url": INLINE}},
        {"type": "image_url", "image_url": {"url": LINK}},
    ]
    turn = (await api.client.get(f"/v1/turns/{resp.headers['X-Turn-ID']}")).json()["result"]
    # Two images cost 2 x 1,105 tokens of the prompt's count (the stated estimate per image).
    assert turn["input_tokens"] > 2 * 1_105
    messages = (await api.client.get(f"/v1/conversations/{turn['conversation_id']}/messages")).json()
    question = messages[0]
    assert question["role"] == "user" and question["content"] == "What is in these pictures?"
    assert question["attachments"] == [
        {
            "type": "image",
            "media_type": "image/png",
            "bytes": len(PIXEL),
            "sha256": hashlib.sha256(PIXEL).hexdigest(),
        },
        {"type": "image", "url": LINK},
    ]
    # Compliance replay shows the images by reference too, never an inline image's bytes.
    admin = await api.headers_for(DEFAULT_TENANT, ("chat", "admin"))
    audited = (await api.client.get(f"/v1/turns/{resp.headers['X-Turn-ID']}/audit", headers=admin)).json()
    assert audited["input"]["images"] == question["attachments"]


@pytest.mark.parametrize("model", ["text", "sees-then-text", None])
async def test_images_for_a_model_that_may_not_see_them_are_a_400_naming_it(
    recorded: tuple[ApiServer, ScriptedModelServer], model: str | None
) -> None:
    api, scripted = recorded
    before = scripted.requests
    body = asking(model or "", LINK)
    if model is None:
        body.pop("model")  # routing may choose any model, and one of them is text-only
    resp = await api.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", "messages[0].content")
    assert "text" in error["message"] and "vision" in error["message"]
    assert scripted.requests == before


async def test_images_beyond_the_bounds_are_refused(recorded: tuple[ApiServer, ScriptedModelServer]) -> None:
    api, _ = recorded
    resp = await api.client.post("/v1/chat/completions", json=asking("sees", *[LINK] * 9))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "too_many_images"
    huge = "data:image/png;base64," + "A" * 1_000_000
    resp = await api.client.post("/v1/chat/completions", json=asking("sees", huge))
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "images_too_large"
    resp = await api.client.post("/v1/chat/completions", json=asking("sees", "file:///etc/passwd"))
    assert resp.status_code == 422
