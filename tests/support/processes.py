"""turnflow's own processes (API, workers) started against the test services, and waiting on their logs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from infra.config.settings import REPO_ROOT, Settings
from tests.support.services import free_port


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
        TURNFLOW_WORKER_VERSIONING=str(settings.worker_versioning).lower(),
        TURNFLOW_RESPONSE_CACHE=str(settings.response_cache).lower(),
        TURNFLOW_DEPLOYMENT_NAME=settings.deployment_name,
        TURNFLOW_PROMOTE_ON_START=str(settings.promote_on_start).lower(),
        **({"TURNFLOW_BUILD_ID": settings.build_id} if settings.build_id else {}),
        **extra_env,
    )
    return subprocess.Popen(
        [sys.executable, "-m", *argv], cwd=REPO_ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def start_api(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    return start_service(["uvicorn", "api.main:create_app", "--factory", "--port", str(port)], settings, log)


async def wait_live(base: str) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(300):
            try:
                if (await http.get(f"{base}/livez")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{base} never came up")


async def stop_processes(*procs: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM each one still running and wait for it (off the event loop, which serves the test's
    in-loop servers meanwhile)."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)


def start_worker(settings: Settings, log: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    return start_service(["workers.main"], settings, log, **extra_env)


async def wait_for_log(log: Path, needle: str, timeout: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while needle not in log.read_text(errors="ignore"):
        assert asyncio.get_running_loop().time() < deadline, log.read_text()
        await asyncio.sleep(0.2)
