"""The operators' dashboard in headless Chromium (Debian's, driven by Playwright): after synthetic
traffic from `turnflow synth` it shows numbers and a running canary rollout, and the browser reports
no console errors."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from playwright.async_api import Browser
from temporalio.client import WorkflowHandle

from infra.runtime.rollouts import rollout_input, start_rollout
from tests.support.api_harness import ApiServer, run_cli
from tests.support.browser import chromium, watched


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def at_first_step(handle: WorkflowHandle[Any, Any]) -> None:
    for _ in range(100):
        if (await handle.query("state"))["share"] > 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the rollout never set its first share")


async def test_dashboard_shows_numbers_after_synthetic_traffic(api: ApiServer, browser: Browser) -> None:
    tenant = f"synth-{uuid.uuid4().hex[:8]}"
    headers = await api.headers_for(tenant, scopes=("chat", "ingest", "operator"))
    key = headers["Authorization"].removeprefix("Bearer ")
    traffic = ("--rate", "1", "--duration", "3", "--max-tokens", "6")
    code, out = await run_cli(api, "synth", "--api", api.url, "--api-key", key, *traffic)
    assert code == 0, out
    assert "synthetic traffic" in out and "SLOs" in out and "time to first token" in out

    # A running rollout of temporal.yaml's prompt canary, held at its first step while the page looks.
    res = api.app.state.resources
    inp = rollout_input(res.policy, "chat-v2", "test", {"hold": "1h", "check_every": "1h"})
    rollout = await start_rollout(res.temporal, res.policy, inp)
    try:
        await at_first_step(rollout)
        page, problems = await watched(browser)
        await page.goto(f"{api.url}/dashboard#key={key}")
        await page.wait_for_selector("#slo td.num")
        rollouts = await page.locator("#rollouts tbody tr").all_inner_texts()
    finally:
        await rollout.signal("abort", "test over")
        assert (await rollout.result()).status == "aborted"
    shown = next(row for row in rollouts if row.startswith("chat-v2"))
    assert re.match(r"chat-v2\trunning\t1/5\t1%\t", shown), shown
    assert "#key" not in page.url  # the key leaves the address bar for local storage
    slo = await page.locator("#slo tbody tr").all_inner_texts()
    assert len(slo) == 4, slo
    ttft = next(row for row in slo if row.startswith("time to first token"))
    assert re.search(r"p95 ttft <= 2000 ms\s+\d+ ms\s+[✓✗]\s+-?\d+\.\d%", ttft), ttft
    answered = next(row for row in slo if row.startswith("turns answered"))
    assert re.search(r"\d+\.\d\d%", answered), answered
    models = await page.locator("#models tbody tr").all_inner_texts()
    real = next(row for row in models if row.startswith("smollm2"))
    # turns, errors, TTFT p50/p95, turn p50/p95, tokens/s, cost per 1k: numbers, not placeholders
    assert re.search(r"\t\d+\t\d+\t\d+ / \d+\t\d+ / \d+\t\d+\.\d\t\$\d\.\d{4}", real), real
    breakers = await page.inner_text("#breakers")
    assert "smollm2-135m-instruct-q4_1" in breakers
    assert (await page.inner_text("#updated")).startswith("updated")
    assert problems == []

    # Without a key the page says what it needs, and still raises nothing.
    bare, bare_problems = await watched(browser)
    await bare.goto(f"{api.url}/dashboard")
    assert "operator API key" in await bare.inner_text("#banner")
    assert bare_problems == []
