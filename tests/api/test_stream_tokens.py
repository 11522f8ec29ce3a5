"""Browser-native resume: the POST that starts a turn hands its client a short-lived stream token
(a header and the `turn` event); `GET /v1/turns/{id}/events?stream_token=` reads that turn with it,
so a page's EventSource reconnects by itself with Last-Event-ID. The token reads only its turn,
expires, and is in neither the turn's history, its event log nor the recorded spans."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser

from infra.config.endpoints import default_gguf
from tests.support.api_harness import ApiServer, isolated_settings, model_entry
from tests.support.browser import chromium, watched
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services, db_rows
from tests.support.sse import collect, reply_of
from tests.support.tcp_proxy import TcpProxy
from workers.replay import fetch_history

pytestmark = pytest.mark.timeout(300)
WORDS = [f" w{i}" for i in range(40)]


@asynccontextmanager
async def slow_stack(
    services: Services, tmp_path: Path, token_ttl_s: int
) -> AsyncIterator[tuple[ApiServer, ScriptedModelServer]]:
    """A model that takes about 4 s over its reply (on purpose: a stream to cut in the middle)."""
    async with ScriptedModelServer("slow") as scripted:
        scripted.script.reply = WORDS
        scripted.script.token_delay_s = 0.1
        settings = isolated_settings(
            services,
            tmp_path,
            models={"slow": model_entry(scripted.url)},
            model_path=default_gguf(),
            stream_token_ttl_s=token_ttl_s,
        )
        async with ApiServer(settings) as api:
            yield api, scripted


@pytest_asyncio.fixture
async def slow_api(
    services: Services, tmp_path: Path
) -> AsyncIterator[tuple[ApiServer, ScriptedModelServer]]:
    """Stream tokens that live 3 s."""
    async with slow_stack(services, tmp_path, token_ttl_s=3) as stack:
        yield stack


async def start_turn(api: ApiServer) -> tuple[str, str, str]:
    """A streamed turn's id, its stream token from the header and from the `turn` event (the first
    events only: this client goes away, the turn goes on)."""
    conv = await api.conversation()
    async with api.client.stream(
        "POST", f"/v1/conversations/{conv}/messages", json={"content": "Count slowly."}
    ) as resp:
        assert resp.status_code == 200, await resp.aread()
        header = resp.headers["X-Stream-Token"]
        (turn,) = await collect(resp, stop_after=1)
    assert turn.event == "turn"
    return str(turn.data["turn_id"]), header, str(turn.data["stream_token"])


async def test_a_stream_token_reads_its_turn_only_and_expires(
    slow_api: tuple[ApiServer, ScriptedModelServer], services: Services
) -> None:
    api, _ = slow_api
    turn_id, header, in_event = await start_turn(api)
    minted = time.monotonic()
    assert header == in_event and header.startswith("st_")
    _, other_token, _ = await start_turn(api)
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as browserlike:  # no Authorization
        url = f"/v1/turns/{turn_id}/events"
        # Another turn's token, a made-up one, none at all: refused, saying why.
        foreign = await browserlike.get(url, params={"stream_token": other_token})
        assert foreign.status_code == 401 and "another turn" in foreign.json()["error"]["message"]
        made_up = await browserlike.get(url, params={"stream_token": "st_" + "x" * 32})
        assert made_up.status_code == 401 and "not valid" in made_up.json()["error"]["message"]
        assert (await browserlike.get(url)).status_code == 401
        # Its own turn, whole (the token is checked when the stream opens: it outlives the 3 s).
        async with browserlike.stream("GET", url, params={"stream_token": header}) as resp:
            assert resp.status_code == 200
            seen = await collect(resp)
        assert reply_of(seen) == "".join(WORDS) and "done" in [e.event for e in seen]
        # A key still reads it (the token is an alternative, not a replacement).
        keyed = await browserlike.get(url, headers=dict(api.client.headers), params={"after": seen[0].id})
        assert keyed.status_code == 200
        # Expired (3 s here): refused like an unknown one.
        await asyncio.sleep(max(0.0, minted + 3.5 - time.monotonic()))
        late = await browserlike.get(url, params={"stream_token": header})
        assert late.status_code == 401
    # Never in the turn's history or its event log; recorded spans show it redacted.
    history = await fetch_history(api.app.state.resources, turn_id)
    assert header not in history.to_json()
    logged = await api.app.state.resources.events.read_all(turn_id)
    assert all("stream_token" not in e.data for e in logged)
    await assert_no_span_holds(services, header)


async def assert_no_span_holds(services: Services, token: str) -> None:
    """Spans are exported in batches: wait for the events request's, then look for the token."""
    deadline = time.monotonic() + 30
    sql = "SELECT attributes::text FROM trace_spans WHERE name = 'GET /v1/turns/{turn_id}/events'"
    while not any("stream_token=REDACTED" in a for (a,) in db_rows(services, sql)):
        assert time.monotonic() < deadline, "the events request's span was never recorded"
        await asyncio.sleep(1)
    # This test's own httpx client is instrumented in this process and records its URLs as it sent
    # them: its spans are the caller's, not the API's.
    holding = (
        "SELECT count(*) FROM trace_spans WHERE kind <> 'client' "
        "AND (attributes::text LIKE %s OR events::text LIKE %s)"
    )
    assert db_rows(services, holding, f"%{token}%", f"%{token}%") == [(0,)]


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


# The page's side: an EventSource that keeps every token's event id, counts its (re)connections,
# and stops at `done` (an EventSource would otherwise reconnect after the stream ends).
FOLLOW = """([url]) => {
  window.seen = []; window.opens = 0; window.finished = false;
  const source = new EventSource(url);
  source.onopen = () => { window.opens += 1; };
  source.addEventListener("token", e => window.seen.push([e.lastEventId, JSON.parse(e.data).text]));
  source.addEventListener("done", () => { window.finished = true; source.close(); });
}"""


async def test_an_eventsource_reconnects_by_itself_after_its_connection_drops(
    services: Services, tmp_path: Path, browser: Browser
) -> None:
    async with slow_stack(services, tmp_path, token_ttl_s=900) as (api, _), TcpProxy(api.port) as proxy:
        page, problems = await watched(browser)
        await page.goto(f"{proxy.url}/dashboard")  # any page of the API's origin
        turn_id, token, _ = await start_turn(api)
        await page.evaluate(FOLLOW, [f"/v1/turns/{turn_id}/events?stream_token={token}"])
        await page.wait_for_function("window.seen.length >= 5", timeout=30_000)
        assert proxy.cut() >= 1  # the network path drops mid-reply
        await page.wait_for_function("window.finished", timeout=60_000)
        seen: list[list[Any]] = await page.evaluate("window.seen")
        opens = await page.evaluate("window.opens")
    # The browser reconnected on its own (Last-Event-ID), and the page has the whole reply once.
    assert opens >= 2
    assert "".join(text for _, text in seen) == "".join(WORDS)
    ids = [event_id for event_id, _ in seen]
    assert len(ids) == len(set(ids)) == len(WORDS)
    # The only error the page saw is the dropped connection's own (Chromium logs the cut stream).
    assert [p for p in problems if "ERR_INCOMPLETE_CHUNKED_ENCODING" not in p] == [] and len(problems) <= 1
