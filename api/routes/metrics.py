"""Prometheus' scrape endpoint. No key, like the health probes: it is read by the cluster's
Prometheus, holds no content and no ids, and tenants appear only by name in cost and turn counts."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from api.core.deps import ResourcesDep
from infra.telemetry import metrics

router = APIRouter(tags=["operations"])
log = logging.getLogger("turnflow.api")


async def refresh_breakers(res: ResourcesDep) -> None:
    """Breakers live in Redis, shared by every process: the API reports them, read at scrape time."""
    views = await res.breakers.views(res.registry.endpoints())
    metrics.breaker_view.clear()
    for name, spec in res.registry.models.items():
        for url in spec.endpoints:
            metrics.breaker_view[(name, url)] = views[url].state


@router.get("/metrics", include_in_schema=False)
async def scrape(res: ResourcesDep) -> Response:
    if not res.settings.telemetry:
        raise HTTPException(404, "telemetry is off (TURNFLOW_TELEMETRY=false)")
    try:
        await refresh_breakers(res)
    except Exception as exc:  # a scrape still answers while Redis is down, without breaker states
        log.warning("breaker states not refreshed: %s", exc)
        metrics.breaker_view.clear()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
