"""Liveness, readiness and the full health report, each dependency probed for real."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.core.deps import DrainDep, ResourcesDep
from infra.runtime import probes

router = APIRouter(tags=["health"])


class HealthReport(BaseModel):
    status: str  # ok or unavailable
    components: dict[str, dict[str, Any]]


_REPORTS: dict[int | str, dict[str, Any]] = {
    200: {"model": HealthReport, "description": "Every component answered"},
    503: {"model": HealthReport, "description": "Some component is down: `components` says which"},
}

PROBE_TIMEOUT_S = 3.0


async def _bounded(coro: Any) -> dict[str, Any]:
    return await probes.timed(asyncio.wait_for(coro, PROBE_TIMEOUT_S))


async def _report(res: ResourcesDep, names: tuple[str, ...]) -> JSONResponse:
    checks = {
        "temporal": lambda: probes.probe_temporal(res.temporal),
        "postgres": lambda: probes.probe_postgres(res.engine),
        "redis": lambda: probes.probe_redis(res.redis),
        "model": lambda: probes.probe_model(res.http, res.endpoints.model_url),
        "models": lambda: probes.probe_models(res.registry, res.breakers),
        "worker": lambda: probes.probe_worker(res.temporal, res.policy.queue("chat")),
        # Document ingestion, re-embedding and purges run only on workers of this queue.
        "ingest_worker": lambda: probes.probe_worker(res.temporal, res.policy.queue("ingest")),
        # Non-interactive turns run only on workers of this queue (worker processes, not the API).
        "batch_worker": lambda: probes.probe_worker(res.temporal, res.policy.queue("batch")),
    }
    results = await asyncio.gather(*(_bounded(checks[n]()) for n in names))
    components = dict(zip(names, results, strict=True))
    healthy = all(c["status"] == "ok" for c in components.values())
    return JSONResponse(
        {"status": "ok" if healthy else "unavailable", "components": components},
        status_code=200 if healthy else 503,
    )


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process is up; says nothing about dependencies."""
    return {"status": "ok"}


@router.get("/readyz", responses=_REPORTS)
async def readyz(res: ResourcesDep, drain: DrainDep) -> JSONResponse:
    """The API's own dependencies answer: it can accept requests. 503 `draining` once it is leaving
    (SIGTERM), so a load balancer stops sending it new ones."""
    if drain.draining:
        return JSONResponse({"status": "draining", "components": {}}, status_code=503)
    return await _report(res, ("temporal", "postgres", "redis"))


@router.get("/healthz", responses=_REPORTS)
async def healthz(res: ResourcesDep) -> JSONResponse:
    """Every component of the stack, probed for real; 503 when any is down."""
    return await _report(
        res, ("temporal", "postgres", "redis", "model", "models", "worker", "ingest_worker", "batch_worker")
    )
