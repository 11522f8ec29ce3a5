"""The chat page (/chat) in headless Chromium: create a conversation, stream a reply token by token,
see its sources, reload mid-reply and get the whole reply once, cancel, and watch a reply that
moderation redacts disappear. The model is a recording stand-in that streams slowly on purpose (so a
reload lands mid-reply) or says what moderation flags; everything else is real."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from infra.config.endpoints import default_gguf
from tests.support.api_harness import ApiServer, api_with_ingest, isolated_settings, model_entry
from tests.support.browser import chromium, watched
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services

pytestmark = pytest.mark.timeout(300)

REPLY = [
    "The",
    " Quillon",
    " lighthouse",
    " is",
    " kept",
    " by",
    " Ada",
    " Lovelace",
    ",",
    " who",
    " rows",
    " out",
    ".",
]
HANDBOOK = (
    "The Quillon lighthouse stands on the northern cape. Its keeper is Ada Lovelace, who rows out every "
    "evening to light the lamp. Visitors may climb the tower on Sundays."
)
# Where a run can leave the docs' screenshot (TURNFLOW_SCREENSHOTS=docs/images): nothing is written otherwise.
SCREENSHOTS = os.environ.get("TURNFLOW_SCREENSHOTS")


@dataclass
class ChatSite:
    api: ApiServer
    model: ScriptedModelServer
    browser: Browser

    async def open(self, tenant: str | None = None) -> tuple[Page, list[str], dict[str, str]]:
        """The page with a fresh tenant's key entered: the page, its console errors, the key's headers."""
        headers = await self.api.headers_for(tenant or f"chat-page-{uuid.uuid4().hex[:8]}")
        page, problems = await watched(self.browser)
        key = headers["Authorization"].removeprefix("Bearer ")
        await page.goto(f"{self.api.url}/chat#key={key}")
        return page, problems, headers


@pytest_asyncio.fixture
async def site(services: Services, tmp_path: Path) -> AsyncIterator[ChatSite]:
    async with ScriptedModelServer("scripted") as model:
        settings = isolated_settings(
            services, tmp_path, models={"scripted": model_entry(model.url)}, model_path=default_gguf()
        )
        async with api_with_ingest(settings) as api, chromium() as browser:
            yield ChatSite(api, model, browser)


async def ask(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def test_a_reply_streams_shows_its_sources_and_survives_a_reload_mid_reply(site: ChatSite) -> None:
    site.model.script.reply = REPLY
    site.model.script.token_delay_s = 0.25  # about 3 s of reply: the reload lands in the middle
    page, problems, headers = await site.open()
    doc = await site.api.client.post(
        "/v1/documents",
        json={"text": HANDBOOK, "source": "handbook.txt", "title": "Lighthouse handbook"},
        headers=headers,
    )
    assert doc.status_code == 201, doc.text

    await page.click("#new")
    await ask(page, "Who keeps the Quillon lighthouse?")
    reply = page.locator(".msg.assistant").last
    # Token by token: part of the reply is shown before all of it is.
    await expect(reply.locator(".body")).to_contain_text("Quillon")
    partial = await reply.locator(".body").inner_text()
    assert partial and partial != "".join(REPLY), partial

    await page.reload()  # mid-reply: the page follows the turn on, from its stream token
    await expect(page.locator("#log")).to_have_attribute("data-state", "idle", timeout=30_000)
    replies = page.locator(".msg.assistant")
    await expect(replies).to_have_count(1)
    await expect(replies.locator(".body")).to_have_text("".join(REPLY))
    await expect(page.locator(".msg.user")).to_have_text(["Who keeps the Quillon lighthouse?"])
    await expect(replies.locator(".sources li")).to_contain_text(["Lighthouse handbook"])
    # The conversation is listed, titled by its first message.
    await expect(page.locator("#conversations option:checked")).to_have_text(
        "Who keeps the Quillon lighthouse?"
    )
    if SCREENSHOTS:
        await page.set_viewport_size({"width": 1000, "height": 560})
        await page.screenshot(path=str(Path(SCREENSHOTS) / "chat-page.png"))
    assert problems == []


async def test_cancel_keeps_what_was_streamed_and_says_so(site: ChatSite) -> None:
    site.model.script.reply = REPLY * 3
    site.model.script.token_delay_s = 0.2
    page, problems, _ = await site.open()
    await page.click("#new")
    await ask(page, "Tell me about the lighthouse.")
    reply = page.locator(".msg.assistant").last
    await expect(reply.locator(".body")).to_contain_text("lighthouse")
    await page.click("#cancel")
    await expect(page.locator("#log")).to_have_attribute("data-state", "idle", timeout=30_000)
    await expect(page.locator(".msg.assistant .meta")).to_have_text("cancelled")
    shown = await page.locator(".msg.assistant .body").inner_text()
    assert shown and "".join(REPLY * 3).startswith(shown) and shown != "".join(REPLY * 3)
    await expect(page.locator("#cancel")).to_be_hidden()
    assert problems == []


async def test_a_reply_moderation_redacts_disappears_and_stays_gone(site: ChatSite) -> None:
    site.model.script.reply = ["You", " should", " hurt", " yourself", "."]
    page, problems, _ = await site.open()
    await page.click("#new")
    await ask(page, "What should I do?")
    reply = page.locator(".msg.assistant").last
    await expect(reply).to_have_class("msg assistant removed", timeout=30_000)
    await expect(reply.locator(".body")).to_have_text("This reply was removed by moderation.")
    await page.reload()
    await expect(page.locator(".msg.assistant .body")).to_have_text("This reply was removed by moderation.")
    assert "hurt" not in await page.locator("#log").inner_text()
    assert problems == []
