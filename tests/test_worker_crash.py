"""The worker process is killed mid-stream and another starts: the turn completes, the client sees a
`reset` and then the whole reply once, and the transcript holds exactly one assistant message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config.settings import REPO_ROOT, Settings
from tests.api_harness import ApiServer, isolated_settings
from tests.conftest import Services, free_port
from tests.sse import events
from tests.test_chat_turn import messages_of

pytestmark = pytest.mark.timeout(300)


def start_service(
    argv: list[str], settings: Settings, log: Path, **extra_env: str
) -> subprocess.Popen[bytes]:
    """One of turnflow's processes (``python -m ...``) against the test services, logging to ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNFLOW_")}
    env.update(
        TURNFLOW_TEMPORAL_ADDRESS=settings.temporal_address or "",
        TURNFLOW_DATABASE_URL=settings.database_url or "",
        TURNFLOW_REDIS_URL=settings.redis_url or "",
        TURNFLOW_TGI_URL=settings.tgi_url or "",
        TURNFLOW_POLICY_FILE=str(settings.policy_file),
        TURNFLOW_DATA_DIR=str(settings.data_dir),
        TURNFLOW_WORKER_METRICS_PORT=str(free_port()),  # never a port another process holds
        **extra_env,
    )
    return subprocess.Popen(
        [sys.executable, "-m", *argv], cwd=REPO_ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def start_worker(settings: Settings, log: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    return start_service(["workers.main"], settings, log, **extra_env)


async def wait_for_log(log: Path, needle: str, timeout: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while needle not in log.read_text(errors="ignore"):
        assert asyncio.get_running_loop().time() < deadline, log.read_text()
        await asyncio.sleep(0.2)


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
        for proc in (first, second):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)

    kinds = [e.event for e in seen]
    assert "reset" in kinds, kinds
    after_reset = kinds[len(kinds) - kinds[::-1].index("reset") :]
    assert after_reset[-2:] == ["done", "moderated"] and set(after_reset[:-2]) == {"token"}
    reply = "".join(e.data["text"] for e in seen[len(kinds) - len(after_reset) :] if e.event == "token")
    rows = messages_of(services, turn_id)
    assert [r[0] for r in rows] == ["user", "assistant"]
    assert rows[1][1] == reply and reply
