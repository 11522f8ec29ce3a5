"""The worker process is killed mid-stream and another starts: the turn completes, the client sees a
`reset` and then the whole reply once, and the transcript holds exactly one assistant message."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.api_harness import ApiServer, isolated_settings
from tests.support.processes import start_worker, stop_processes, wait_for_log
from tests.support.replay import scheduled_activities
from tests.support.services import Services, messages_of
from tests.support.sse import events

pytestmark = pytest.mark.timeout(300)


async def test_killed_worker_mid_stream(services: Services, tmp_path: Path) -> None:
    # No worker in the API process: every task goes to the worker processes.
    settings = isolated_settings(services, tmp_path, api_worker=False)
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    second = None
    try:
        await wait_for_log(log, "worker polling")
        async with ApiServer(settings) as api:
            conv = await api.conversation()
            seen = []
            async with api.client.stream(
                "POST",
                f"/v1/conversations/{conv}/messages",
                json={
                    "content": "Write a long story about a lighthouse keeper.",
                    "max_tokens": 200,
                    "temperature": 0.0,
                },
            ) as resp:
                turn_id = resp.headers["x-turn-id"]
                async for event in events(resp):
                    seen.append(event)
                    if len([e for e in seen if e.event == "token"]) == 5 and first.poll() is None:
                        first.send_signal(signal.SIGKILL)
                        first.wait()
                        second = start_worker(settings, log)
    finally:
        await stop_processes(first, second)

    kinds = [e.event for e in seen]
    assert "reset" in kinds, kinds
    after_reset = kinds[len(kinds) - kinds[::-1].index("reset") :]
    assert after_reset[-2:] == ["done", "moderated"] and set(after_reset[:-2]) == {"token"}
    reply = "".join(e.data["text"] for e in seen[len(kinds) - len(after_reset) :] if e.event == "token")
    rows = messages_of(services, turn_id)
    assert [r[0] for r in rows] == ["user", "assistant"]
    assert rows[1][1] == reply and reply
    # Inference was a local activity (temporal.yaml): the dead worker was noticed by its workflow
    # task's timeout, and the turn ran again elsewhere.
    async with ApiServer(settings) as api:
        handle = api.app.state.resources.temporal.get_workflow_handle(turn_id)
        assert "infer" not in await scheduled_activities(handle)
