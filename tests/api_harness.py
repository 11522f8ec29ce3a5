"""Run the real API (uvicorn, in this event loop) against the test services, each on its own task queue."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from api.main import create_app
from infra.settings import REPO_ROOT, Settings
from tests.conftest import Services, free_port


def isolated_settings(services: Services, tmp_path: Path, **updates: Any) -> Settings:
    """The test services' settings with a task queue of its own, so apps never take each other's work."""
    data = yaml.safe_load((REPO_ROOT / "temporal.yaml").read_text())
    data["task_queues"]["chat"] = f"chat-{uuid.uuid4()}"
    data["task_queues"]["ingest"] = f"ingest-{uuid.uuid4()}"
    policy = tmp_path / f"temporal-{uuid.uuid4().hex[:8]}.yaml"
    policy.write_text(yaml.safe_dump(data))
    return services.settings.model_copy(update={"policy_file": policy, **updates})


class ApiServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        self.client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(120, connect=5))

    async def __aenter__(self) -> ApiServer:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.aclose()
        self._server.should_exit = True
        if self._task:
            await self._task

    async def conversation(self, headers: dict[str, str] | None = None) -> str:
        resp = await self.client.post("/v1/conversations", json={"title": "test"}, headers=headers)
        resp.raise_for_status()
        return str(resp.json()["id"])
