"""The API process is killed (SIGKILL) mid-stream: the client reconnects to a new API process and
resumes with Last-Event-ID; it sees no gap and no duplicate, the turn completes (its inference moves
to the worker process), and the transcript holds exactly the reply the client assembled."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from infra.runtime.resources import Resources
from tests.support.api_harness import isolated_settings, key_headers
from tests.support.processes import start_api, start_worker, stop_processes, wait_for_log, wait_live
from tests.support.services import Services, free_port, messages_of
from tests.support.sse import Event, events, reply_of

pytestmark = pytest.mark.timeout(300)


async def test_killed_api_mid_stream_then_resume(services: Services, tmp_path: Path) -> None:
    settings = isolated_settings(services, tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker_log, api_log = tmp_path / "worker.log", tmp_path / "api.log"
    res = await Resources.open(settings)
    headers = await key_headers(res.sessions, "default")
    await res.close()
    worker = start_worker(settings, worker_log)
    api = start_api(settings, port, api_log)
    second = None
    seen: list[Event] = []
    try:
        await wait_for_log(worker_log, "worker polling")
        await wait_live(base)
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
            conv = (await http.post("/v1/conversations", json={})).json()["id"]
            body = {
                "content": "Write a long story about a lighthouse keeper.",
                "max_tokens": 200,
                "temperature": 0,
            }
            try:
                async with http.stream("POST", f"/v1/conversations/{conv}/messages", json=body) as resp:
                    turn_id = resp.headers["x-turn-id"]
                    async for event in events(resp):
                        seen.append(event)
                        if sum(e.event == "token" for e in seen) == 5:
                            api.send_signal(signal.SIGKILL)  # the API, and the worker inside it
                            api.wait()
            except httpx.HTTPError:
                pass  # the connection died with the process
            assert sum(e.event == "token" for e in seen) >= 5
            second = start_api(settings, port, api_log)
            await wait_live(base)
            last = seen[-1].id
            assert last is not None
            async with http.stream(
                "GET", f"/v1/turns/{turn_id}/events", headers={"Last-Event-ID": last}
            ) as resumed:
                assert resumed.status_code == 200
                async for event in events(resumed):
                    seen.append(event)
                    if event.event == "moderated":
                        break
    finally:
        await stop_processes(api, second, worker)

    ids = [e.id for e in seen if e.id]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert [e.event for e in seen if e.event in ("done", "error")] == ["done"]
    rows = messages_of(services, turn_id)
    assert [r[0] for r in rows] == ["user", "assistant"]
    assert rows[1][1] == reply_of(seen) and rows[1][1]
