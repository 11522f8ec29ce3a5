"""Run the real API (uvicorn, in this event loop) against the test services, each on its own task queue."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from api.main import create_app
from infra.settings import REPO_ROOT, Settings
from tests.conftest import Services
from tests.in_loop_server import InLoopServer


def isolated_settings(services: Services, tmp_path: Path, **updates: Any) -> Settings:
    """The test services' settings with a task queue of its own, so apps never take each other's work."""
    data = yaml.safe_load((REPO_ROOT / "temporal.yaml").read_text())
    data["task_queues"]["chat"] = f"chat-{uuid.uuid4()}"
    data["task_queues"]["ingest"] = f"ingest-{uuid.uuid4()}"
    policy = tmp_path / f"temporal-{uuid.uuid4().hex[:8]}.yaml"
    policy.write_text(yaml.safe_dump(data))
    return services.settings.model_copy(update={"policy_file": policy, **updates})


class ApiServer(InLoopServer):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__(create_app(settings), lifespan="on")
        self.client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(120, connect=5))

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await super().__aexit__(*exc)

    async def conversation(self, headers: dict[str, str] | None = None) -> str:
        resp = await self.client.post("/v1/conversations", json={"title": "test"}, headers=headers)
        resp.raise_for_status()
        return str(resp.json()["id"])
