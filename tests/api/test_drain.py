"""An API process that is leaving (api/core/drain.py): readiness and new turns answer 503 at once, a live
stream is told to reconnect (`retry:`, then a clean close), and its client resumes on another process
with Last-Event-ID, every token once."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.core.drain import RECONNECT_MS, Drain
from infra.config.endpoints import default_gguf
from tests.support.api_harness import ApiServer, isolated_settings, model_entry
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services
from tests.support.sse import collect, events

pytestmark = pytest.mark.timeout(120)


async def test_a_leaving_server_sends_its_streams_elsewhere_and_refuses_new_turns(
    services: Services, tmp_path: Path
) -> None:
    async with ScriptedModelServer("scripted-gpu") as scripted:
        scripted.script.reply = [f" w{i}" for i in range(30)]
        scripted.script.token_delay_s = 0.05
        settings = isolated_settings(
            services,
            tmp_path,
            models={"scripted-gpu": model_entry(scripted.url, fidelity=10)},
            model_path=default_gguf(),
        )
        async with ApiServer(settings) as leaving, ApiServer(settings) as staying:
            conv = await leaving.conversation()
            seen = []
            async with leaving.client.stream(
                "POST", f"/v1/conversations/{conv}/messages", json={"content": "Count."}
            ) as resp:
                turn_id = resp.headers["x-turn-id"]
                async for event in events(resp):
                    seen.append(event)
                    if sum(e.event == "token" for e in seen) == 5:
                        drain: Drain = leaving.app.state.drain
                        drain.begin()
            # The stream ended cleanly, asked to reconnect, before the turn did.
            assert seen[-1].event == "retry" and seen[-1].data == RECONNECT_MS
            assert "done" not in [e.event for e in seen]

            ready = await leaving.client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "draining"
            refused = await leaving.client.post(f"/v1/conversations/{conv}/messages", json={"content": "Hi"})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "draining"
            assert (await leaving.client.get(f"/v1/turns/{turn_id}/events")).status_code == 503

            last = [e.id for e in seen if e.id][-1]
            async with staying.client.stream(
                "GET", f"/v1/turns/{turn_id}/events", headers={"Last-Event-ID": last}
            ) as resumed:
                seen += await collect(resumed)
            assert [e.event for e in seen][-2:] == ["done", "moderated"]
            tokens = [e.data for e in seen if e.event == "token"]
            assert [t["index"] for t in tokens] == list(range(30))  # every token once, in order
            assert "".join(t["text"] for t in tokens) == "".join(scripted.script.reply)
