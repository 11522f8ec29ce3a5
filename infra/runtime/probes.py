"""Real health probes, one per dependency: each does a cheap real operation and raises if it fails.

Used by the supervisor's readiness checks, by ``GET /healthz`` and by ``turnflow doctor``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from infra.runtime.pollers import recent_pollers

if TYPE_CHECKING:
    from activities.adapters.breaker import CircuitBreakers
    from activities.adapters.model_registry import ModelRegistry


class ProbeFailed(RuntimeError):
    pass


async def probe_temporal(client: Client) -> dict[str, Any]:
    ok = await client.service_client.check_health()
    if not ok:
        raise ProbeFailed("health check answered NOT_SERVING")
    info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    return {"server_version": info.server_version, "namespace": client.namespace}


async def probe_postgres(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        version = (await conn.execute(text("SHOW server_version"))).scalar_one()
        vector = (
            await conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
        ).scalar_one_or_none()
    return {"server_version": version, "pgvector": vector}


async def probe_redis(redis: Redis) -> dict[str, Any]:
    if not await redis.ping():
        raise ProbeFailed("PING did not answer PONG")
    info = await redis.info("server")
    return {"redis_version": info.get("redis_version")}


async def probe_model(http: httpx.AsyncClient, model_url: str) -> dict[str, Any]:
    """TGI answers /health; OpenAI-compatible servers (llama.cpp, vLLM) answer /v1/models."""
    resp = await http.get(f"{model_url}/health")
    if resp.status_code == 200:
        detail: dict[str, Any] = {"health": "ok"}
        models = await http.get(f"{model_url}/v1/models")
        if models.status_code == 200:
            detail["models"] = [m.get("id") for m in models.json().get("data", [])]
        return detail
    resp = await http.get(f"{model_url}/v1/models")
    if resp.status_code != 200:
        raise ProbeFailed(f"GET /v1/models answered {resp.status_code}")
    return {"models": [m.get("id") for m in resp.json().get("data", [])]}


async def probe_models(registry: ModelRegistry, breakers: CircuitBreakers) -> dict[str, Any]:
    """Every registry model's endpoints: does it answer, and its circuit's state. Down only when no
    model (canaries aside) has an endpoint that answers with its circuit closed."""
    urls = registry.endpoints()
    views = await breakers.views(urls)
    models: dict[str, Any] = {}
    servable = False
    for name, spec in registry.models.items():
        adapter = registry.adapter(name)
        answers = await asyncio.gather(*(adapter.health(url) for url in spec.endpoints))
        models[name] = {
            "version": spec.version,
            "endpoints": {
                url: {"answers": ok, "breaker": views[url].state}
                for url, ok in zip(spec.endpoints, answers, strict=True)
            },
        }
        servable |= not spec.is_canary and any(
            ok and views[url].admits for url, ok in zip(spec.endpoints, answers, strict=True)
        )
    if not servable:
        raise ProbeFailed(f"no model can serve: {models}")
    return {"models": models}


async def probe_worker(client: Client, task_queue: str) -> dict[str, Any]:
    """A worker counts as up when it has polled the task queue recently."""
    recent = await recent_pollers(client, task_queue)
    if not recent:
        raise ProbeFailed(f"no worker has polled task queue {task_queue!r} recently")
    return {"task_queue": task_queue, "pollers": recent}


async def timed(probe: Any) -> dict[str, Any]:
    """Run one probe coroutine and shape its result for /healthz."""
    start = time.perf_counter()
    try:
        detail = await probe
    except Exception as exc:  # a probe's failure is data here, not an error
        return {
            "status": "down",
            "error": f"{type(exc).__name__}: {exc}"[:500],
            "latency_ms": round((time.perf_counter() - start) * 1000, 1),
        }
    return {"status": "ok", "latency_ms": round((time.perf_counter() - start) * 1000, 1), **detail}
