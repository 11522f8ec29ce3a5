"""Prometheus' scrape endpoint. Not an API key's: it is read by the cluster's Prometheus and holds no
content, but it names tenants (by name, or by opaque id: TURNFLOW_METRICS_TENANT_LABEL) and what each
spends. So it is served on a port of its own (TURNFLOW_API_METRICS_PORT; the public port answers 404)
or behind a scrape credential (TURNFLOW_METRICS_TOKEN); production refuses to start with neither."""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, Depends, HTTPException, Request
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


def _may_scrape(request: Request, res: ResourcesDep) -> None:
    settings = res.settings
    if not settings.telemetry:
        raise HTTPException(404, "telemetry is off (TURNFLOW_TELEMETRY=false)")
    # The port of the socket the request came in on (the Host header is the client's to forge).
    served_on = (request.scope.get("server") or (None, None))[1]
    if settings.api_metrics_port and served_on != settings.api_metrics_port:
        raise HTTPException(404, "metrics are served on their own port (TURNFLOW_API_METRICS_PORT)")
    if settings.metrics_token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), settings.metrics_token.encode()):
            raise HTTPException(401, "a scrape credential is needed", headers={"WWW-Authenticate": "Bearer"})


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(_may_scrape)])
async def scrape(res: ResourcesDep) -> Response:
    try:
        await refresh_breakers(res)
    except Exception as exc:  # a scrape still answers while Redis is down, without breaker states
        log.warning("breaker states not refreshed: %s", exc)
        metrics.breaker_view.clear()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
