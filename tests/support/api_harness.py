"""Run the real API (uvicorn, in this event loop) against the test services, each on its own task queue."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import httpx
import yaml
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.core.tenancy import DEFAULT_TENANT
from api.main import create_app
from db.access import create_key, ensure_tenant
from infra.config.settings import REPO_ROOT, Settings
from infra.runtime.resources import Resources
from tests.support.in_loop_server import InLoopServer
from tests.support.services import Services

REAL_MODEL = "smollm2-135m-instruct-q4_1"  # temporal.yaml's model: the real llama.cpp server


def isolated_settings(
    services: Services,
    tmp_path: Path,
    *,
    models: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
    webhooks: dict[str, Any] | None = None,
    prompts: dict[str, Any] | None = None,
    moderation: dict[str, Any] | None = None,
    **updates: Any,
) -> Settings:
    """The test services' settings with task queues of its own, so apps never take each other's work;
    ``models``, ``breaker``, ``webhooks``, ``prompts`` and ``moderation`` replace those sections of
    temporal.yaml."""
    data = yaml.safe_load((REPO_ROOT / "temporal.yaml").read_text())
    for queue in ("chat", "ingest", "batch"):
        data["task_queues"][queue] = f"{queue}-{uuid.uuid4()}"
    if models is not None:
        data["models"] = models
    if webhooks is not None:
        data["webhooks"] = webhooks
    if prompts is not None:
        data["prompts"] = prompts
    if moderation is not None:
        data["moderation"] = moderation
    # The real model server is shared by every test, and on two busy cores its first token can take
    # seconds: only the tests about breakers count slow calls (their own endpoints, their own limits).
    data["breaker"] = {**data["breaker"], "slow_call": "10m", **(breaker or {})}
    policy = tmp_path / f"temporal-{uuid.uuid4().hex[:8]}.yaml"
    policy.write_text(yaml.safe_dump(data))
    # Every test's default tenant is the same one: only the tests about rate limits set their own.
    limits = {"rate_limit_requests_per_min": 1_000_000, "rate_limit_tokens_per_min": 1_000_000_000}
    return services.settings.model_copy(update={"policy_file": policy, **limits, **updates})


async def key_headers(
    sessions: async_sessionmaker[AsyncSession], tenant: str, scopes: tuple[str, ...] = ("chat", "ingest")
) -> dict[str, str]:
    """Authorization headers with a new key of ``tenant`` (created if need be)."""
    key, _ = await create_key(sessions, await ensure_tenant(sessions, tenant), "test", list(scopes))
    return {"Authorization": f"Bearer {key}"}


class ApiServer(InLoopServer):
    """The API; its client carries a key of the default tenant (chat and ingest scopes)."""

    def __init__(self, settings: Settings, send_buffer: int | None = None) -> None:
        self.settings = settings
        self.app = create_app(settings)
        super().__init__(self.app, lifespan="on", send_buffer=send_buffer)
        self.client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(120, connect=5))

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.client.headers.update(await self.headers_for(DEFAULT_TENANT))
        return self

    async def headers_for(self, tenant: str, scopes: tuple[str, ...] = ("chat", "ingest")) -> dict[str, str]:
        return await key_headers(self.app.state.resources.sessions, tenant, scopes)

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await super().__aexit__(*exc)

    async def conversation(self, headers: dict[str, str] | None = None) -> str:
        resp = await self.client.post("/v1/conversations", json={"title": "test"}, headers=headers)
        resp.raise_for_status()
        return str(resp.json()["id"])


@asynccontextmanager
async def api_with_ingest(settings: Settings) -> AsyncIterator[ApiServer]:
    """The API with an ingest worker beside it (as the worker process runs it in a deployment), so
    documents posted in a test are searchable when their POST answers."""
    from workers.ingest import build_ingest_worker

    res = await Resources.open(settings)
    try:
        async with build_ingest_worker(res), ApiServer(settings) as api:
            yield api
    finally:
        await res.close()


def model_entry(url: str, **fields: Any) -> dict[str, Any]:
    """A temporal.yaml model entry; the defaults describe a model served by ``url``."""
    return {
        "version": "1",
        "provider": "llamacpp",
        "endpoints": [url],
        "tier": "gpu",
        "context": 2048,
        # Counted with the embedded model's GGUF (stand-in servers have no tokenize route).
        "tokenizer": "embedded",
        **fields,
    }


def real_model_entry(**fields: Any) -> dict[str, Any]:
    """temporal.yaml's own entry for the real llama.cpp server, with ``fields`` changed."""
    data = yaml.safe_load((REPO_ROOT / "temporal.yaml").read_text())
    return {**data["models"][REAL_MODEL], **fields}


def api_key_of(api: ApiServer) -> str:
    """The key the server's client carries (for clients of its own, like the OpenAI SDK)."""
    return str(api.client.headers["Authorization"]).removeprefix("Bearer ")


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment a `turnflow` subprocess needs to reach the same services (and payload keys)."""
    return {
        **os.environ,
        "TURNFLOW_DATA_DIR": str(settings.data_dir),
        "TURNFLOW_DATABASE_URL": str(settings.database_url),
        "TURNFLOW_REDIS_URL": str(settings.redis_url),
        "TURNFLOW_TEMPORAL_ADDRESS": str(settings.temporal_address),
        "TURNFLOW_TGI_URL": str(settings.tgi_url),
        "TURNFLOW_POLICY_FILE": str(settings.policy_file),
        "TURNFLOW_WORKER_VERSIONING": str(settings.worker_versioning).lower(),
        "TURNFLOW_RESPONSE_CACHE": str(settings.response_cache).lower(),
        "TURNFLOW_DEPLOYMENT_NAME": settings.deployment_name,
        **({"TURNFLOW_BUILD_ID": settings.build_id} if settings.build_id else {}),
        "COLUMNS": "200",
    }


async def run_cli(api: ApiServer | Settings, *args: str) -> tuple[int, str]:
    """`turnflow ARGS...` as a subprocess against the same services as the API (or these settings):
    (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infra.cli.main",
        *args,
        env=cli_env(api if isinstance(api, Settings) else api.settings),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()
