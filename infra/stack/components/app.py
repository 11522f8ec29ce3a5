"""turnflow's own processes: the Temporal worker and the API server."""

from __future__ import annotations

import os
import sys

import httpx

from db.migrate import upgrade
from infra.config.endpoints import Endpoints, default_gguf
from infra.config.policy import Policy
from infra.config.settings import REPO_ROOT, Settings
from infra.runtime import probes
from infra.runtime.temporal_client import connect_temporal
from infra.stack.components.base import Component


def _child_env(settings: Settings, endpoints: Endpoints) -> dict[str, str]:
    env = {
        **endpoints.as_env(),
        "TURNFLOW_DATA_DIR": str(settings.data_dir.resolve()),
        "TURNFLOW_POLICY_FILE": str(settings.policy_file.resolve()),
        "PYTHONUNBUFFERED": "1",
        # glibc gives every thread that allocates an arena of its own (up to 8 per core); with the
        # Temporal core's and the thread pools' threads that grew an API process by tens of MB under
        # load. Two are enough for processes whose Python runs on one thread.
        "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
    }
    if "model" in endpoints.embedded:
        # The children see the model server as a plain URL; the file tells them to count tokens
        # locally with its tokenizer instead of asking the (busy) server for every count.
        env["TURNFLOW_MODEL_PATH"] = str(settings.model_path or default_gguf())
    return env


def worker_component(settings: Settings, endpoints: Endpoints, policy: Policy) -> Component:
    async def ready() -> None:
        client = await connect_temporal(endpoints.temporal_address, policy.namespace)
        await probes.probe_worker(client, policy.queue("chat"))

    worker_urls = {}
    if settings.telemetry and settings.worker_metrics_port:
        worker_urls["Worker metrics"] = f"http://{settings.api_host}:{settings.worker_metrics_port}/metrics"
    return Component(
        name="worker",
        argv=[sys.executable, "-m", "workers.main"],
        # The embedded stack ships a new build by restarting: its worker makes its own build current.
        env={**_child_env(settings, endpoints), "TURNFLOW_PROMOTE_ON_START": "true"},
        cwd=REPO_ROOT,
        ready=ready,
        # The schema must be current before any activity runs, embedded database or not.
        prepare=lambda: upgrade(endpoints.database_url),
        startup_timeout_s=60,
        urls=worker_urls,
        ports=[settings.worker_metrics_port] if settings.worker_metrics_port else [],
        # Longer than the worker's graceful shutdown, so in-flight activities can finish.
        stop_timeout_s=policy.shutdown.worker_grace.total_seconds() + 10,
    )


def api_component(settings: Settings, endpoints: Endpoints, policy: Policy) -> Component:
    base = f"http://{settings.api_host}:{settings.api_port}"

    async def ready() -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            (await http.get(f"{base}/livez")).raise_for_status()

    return Component(
        name="api",
        argv=[
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:create_app",
            "--factory",
            "--host",
            settings.api_host,
            "--port",
            str(settings.api_port),
            "--no-access-log",
        ],
        env=_child_env(settings, endpoints),
        cwd=REPO_ROOT,
        ready=ready,
        urls={
            "API": base,
            "API docs": f"{base}/docs",
            "Health": f"{base}/healthz",
            "Dashboard": f"{base}/dashboard",
            "Metrics": f"{base}/metrics",
        },
        ports=[settings.api_port],
        startup_timeout_s=60,
        # Longer than its drain: SSE clients are told to reconnect before it exits.
        stop_timeout_s=policy.shutdown.api_grace.total_seconds() + 10,
    )
