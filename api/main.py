"""The FastAPI application: ``uvicorn api.main:create_app --factory``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from api.core.audit import AuditMiddleware
from api.core.drain import Drain
from api.core.errors import KEYED, error_responses, install_error_handlers
from api.core.principals import PrincipalCache
from api.core.request_ids import RequestIdMiddleware
from api.core.telemetry_redaction import without_stream_tokens
from api.core.tenancy import DEFAULT_TENANT, require
from api.routes import (
    chat_page,
    chat_socket,
    codec,
    conversations,
    dashboard,
    documents,
    experiments,
    feedback,
    health,
    metrics,
    observability,
    openai_compat,
    turns,
    usage,
)
from db.access import ensure_tenant
from infra.config.build import build_id
from infra.config.settings import Settings, get_settings
from infra.runtime.deployments import EagerGate, deployment_of
from infra.runtime.resources import Resources
from infra.telemetry import metrics as telemetry_metrics
from infra.telemetry.setup import SERVICE_API
from workers.chat import build_chat_worker

log = logging.getLogger("turnflow.api")


@asynccontextmanager
async def _embedded_worker(res: Resources) -> AsyncIterator[None]:
    """A worker in the API process lets turns start eagerly: the first workflow task runs here."""
    # Load the embedding model before taking work: loading it starves the event loop for seconds.
    await res.embedder.warm_up()
    # Capped, so that under load the rest of the work goes to the worker processes.
    worker = build_chat_worker(res, slots=res.settings.api_worker_slots)
    task = asyncio.create_task(worker.run())
    gate = None
    if res.settings.worker_versioning:
        build = build_id(res.settings.build_id)
        res.eager_gate = EagerGate(res.temporal, deployment_of(res.settings, "chat"), build)
        gate = asyncio.create_task(res.eager_gate.run())
    try:
        yield
    finally:
        if gate is not None:
            gate.cancel()
        await worker.shutdown()
        with contextlib.suppress(Exception):
            await task


@asynccontextmanager
async def _metrics_port(res: Resources) -> AsyncIterator[None]:
    """/metrics on a port of its own (TURNFLOW_API_METRICS_PORT), beside the public one."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.resources = res
    app.include_router(metrics.router)
    config = uvicorn.Config(
        app, host=res.settings.api_host, port=res.settings.api_metrics_port or 0, log_level="warning"
    )
    config.lifespan = "off"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        yield
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        res = await Resources.open(settings, lazy_temporal=not settings.api_worker, service=SERVICE_API)
        app.state.resources = res
        # SIGTERM: refuse new turns, send streams elsewhere, then stop (api/core/drain.py).
        app.state.drain = drain = Drain(res.policy.shutdown.api_grace.total_seconds())
        drain.install()
        telemetry_metrics.open_streams = lambda: drain.streams
        try:
            await ensure_tenant(res.sessions, DEFAULT_TENANT)
        except Exception as exc:  # the API still starts, and /healthz says what is down
            log.warning("could not ensure the default tenant: %s", exc)
        app.state.principals = PrincipalCache(res.sessions)
        revocations = asyncio.create_task(app.state.principals.follow_revocations(res.redis))
        try:
            async with contextlib.AsyncExitStack() as stack:
                if settings.telemetry and settings.api_metrics_port:
                    await stack.enter_async_context(_metrics_port(res))
                if settings.api_worker:
                    await stack.enter_async_context(_embedded_worker(res))
                yield
        finally:
            revocations.cancel()
            await res.close()

    app = FastAPI(
        title="turnflow",
        summary="Durable chat turns over SSE, backed by Temporal, Postgres + pgvector and TGI.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    # Added last, so outermost of the two: the audit row has the request's id.
    app.add_middleware(AuditMiddleware, sessions=lambda: app.state.resources.sessions)
    app.add_middleware(RequestIdMiddleware)
    if settings.telemetry:
        # One span per request (the root of a turn's trace); not one per SSE event sent, and none
        # for probes and scrapes.
        FastAPIInstrumentor.instrument_app(
            app,
            excluded_urls="/metrics,/livez,/readyz,/healthz",
            exclude_spans=["send", "receive"],
            server_request_hook=without_stream_tokens,
        )

    app.include_router(health.router)  # no key: probes and load balancers call these
    app.include_router(metrics.router)  # Prometheus' (its own port, or a scrape credential)
    chat, ingest = [Depends(require("chat"))], [Depends(require("ingest"))]
    either, admin = [Depends(require("chat", "ingest"))], [Depends(require("admin"))]
    keyed = error_responses(*KEYED)
    app.include_router(conversations.router, dependencies=chat, responses=keyed)
    app.include_router(turns.router, dependencies=chat, responses=keyed)
    app.include_router(turns.stream_router, responses=keyed)  # a key, or the turn's stream token
    app.include_router(chat_socket.router, dependencies=chat, responses=keyed)
    app.include_router(chat_socket.socket_router)  # the socket checks its own key or ticket
    app.include_router(openai_compat.router, dependencies=chat, responses=keyed)
    app.include_router(feedback.router, dependencies=chat, responses=keyed)
    app.include_router(documents.router, dependencies=ingest, responses=keyed)
    app.include_router(documents.search_router, dependencies=either, responses=keyed)
    app.include_router(usage.router, dependencies=either, responses=keyed)
    app.include_router(codec.router, dependencies=admin, responses=keyed)
    app.include_router(observability.router, responses=keyed)  # any key: its tenant; operators: all
    app.include_router(observability.operators, responses=keyed)
    app.include_router(experiments.router, responses=keyed)
    app.include_router(dashboard.router)  # the page itself holds nothing: it asks for a key
    app.include_router(chat_page.router)  # so does this one
    # The Temporal web UI calls /codec from the browser: its origin may, with an admin key.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in settings.codec_cors_origins.split(",") if o.strip()],
        allow_methods=["POST"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
        allow_credentials=True,
    )
    return app
