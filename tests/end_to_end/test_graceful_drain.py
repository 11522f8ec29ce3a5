"""SIGTERM, as a rolling deploy sends it: a worker stops polling and finishes the inference it holds
(no `reset`, one reply), another worker carries the turn on; an API process asks its stream to
reconnect, and the client resumes on another API process with every token once."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from infra.config.policy import load_policy
from infra.config.settings import Settings
from infra.runtime.resources import Resources
from tests.support.api_harness import ApiServer, isolated_settings, key_headers
from tests.support.processes import start_api, start_worker, stop_processes, wait_for_log, wait_live
from tests.support.services import Services, free_port, messages_of
from tests.support.sse import Event, events, reply_of

pytestmark = pytest.mark.timeout(300)
STORY = {"content": "Write a long story about a lighthouse keeper.", "max_tokens": 120, "temperature": 0}


async def test_sigterm_on_a_worker_mid_turn_loses_nothing(services: Services, tmp_path: Path) -> None:
    settings = isolated_settings(services, tmp_path, api_worker=False)  # every task on worker processes
    log, log_2 = tmp_path / "worker.log", tmp_path / "worker-2.log"
    first = start_worker(settings, log)
    second = None
    try:
        await wait_for_log(log, "worker polling")
        async with ApiServer(settings) as api:
            conv = await api.conversation()
            seen: list[Event] = []
            async with api.client.stream("POST", f"/v1/conversations/{conv}/messages", json=STORY) as resp:
                turn_id = resp.headers["x-turn-id"]
                async for event in events(resp):
                    seen.append(event)
                    if sum(e.event == "token" for e in seen) == 5 and second is None:
                        first.send_signal(signal.SIGTERM)
                        stopped = time.monotonic()
                        second = start_worker(settings, log_2)  # the rest of the turn goes here
            # The first worker finished what it held and left within its grace.
            code = await asyncio.to_thread(first.wait, 60)
            took = time.monotonic() - stopped
    finally:
        await stop_processes(first, second)
    assert code == 0 and took < settings_grace(settings) + 10, (code, took)
    kinds = [e.event for e in seen]
    assert "reset" not in kinds, kinds  # the inference it held was not cut off
    assert kinds[-2:] == ["done", "moderated"]
    rows = messages_of(services, turn_id)
    assert [r[0] for r in rows] == ["user", "assistant"]
    assert rows[1][1] == reply_of(seen) and rows[1][1]


def settings_grace(settings: Settings) -> float:
    return load_policy(settings.policy_file).shutdown.worker_grace.total_seconds()


async def test_sigterm_on_an_api_mid_stream_sends_the_client_to_another(
    services: Services, tmp_path: Path
) -> None:
    settings = isolated_settings(services, tmp_path)
    ports = free_port(), free_port()
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    res = await Resources.open(settings)
    headers = await key_headers(res.sessions, "default")
    await res.close()
    worker = start_worker(settings, tmp_path / "worker.log")
    leaving = start_api(settings, ports[0], tmp_path / "api-1.log")
    staying = start_api(settings, ports[1], tmp_path / "api-2.log")
    seen: list[Event] = []
    try:
        await wait_for_log(tmp_path / "worker.log", "worker polling")
        await asyncio.gather(*(wait_live(b) for b in bases))
        async with httpx.AsyncClient(headers=headers, timeout=120) as http:
            conv = (await http.post(f"{bases[0]}/v1/conversations", json={})).json()["id"]
            async with http.stream(
                "POST", f"{bases[0]}/v1/conversations/{conv}/messages", json=STORY
            ) as resp:
                turn_id = resp.headers["x-turn-id"]
                async for event in events(resp):
                    seen.append(event)
                    if sum(e.event == "token" for e in seen) == 5:
                        leaving.send_signal(signal.SIGTERM)
            # A clean end with an ask to reconnect, not a broken connection.
            assert seen[-1].event == "retry", [e.event for e in seen[-3:]]
            last = [e.id for e in seen if e.id][-1]
            async with http.stream(
                "GET", f"{bases[1]}/v1/turns/{turn_id}/events", headers={"Last-Event-ID": last}
            ) as resumed:
                assert resumed.status_code == 200
                async for event in events(resumed):
                    seen.append(event)
                    if event.event == "moderated":
                        break
        code = await asyncio.to_thread(leaving.wait, 60)
    finally:
        await stop_processes(leaving, staying, worker)
    assert code in (0, -signal.SIGTERM), code  # uvicorn re-raises the signal it stopped for
    ids = [e.id for e in seen if e.id]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    tokens = [e.data for e in seen if e.event == "token"]
    assert [t["index"] for t in tokens] == list(range(len(tokens)))
    assert [e.event for e in seen if e.event in ("done", "error")] == ["done"]
    rows = messages_of(services, turn_id)
    assert [r[0] for r in rows] == ["user", "assistant"]
    assert rows[1][1] == reply_of(seen) and rows[1][1]
