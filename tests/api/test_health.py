"""GET /healthz probes every component for real and answers 503 when one is down."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import yaml

from api.main import create_app
from infra.config.settings import REPO_ROOT, Settings
from infra.runtime.resources import Resources
from tests.support.services import Services, free_port
from workers.chat import build_batch_worker, build_chat_worker
from workers.ingest import build_ingest_worker


async def eventually(
    call: Callable[[], Awaitable[httpx.Response]],
    ok: Callable[[httpx.Response], bool],
    timeout_s: float = 15,
) -> httpx.Response:
    """The last response: the first that satisfies `ok`, or the one at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not ok(resp := await call()) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return resp


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


def policy_with_chat_queue(tmp_path: Path, queue: str) -> Path:
    """The policy with the chat queue (and an ingest queue beside it) of this test's own."""
    data = yaml.safe_load((REPO_ROOT / "temporal.yaml").read_text())
    data["task_queues"]["chat"] = queue
    data["task_queues"]["ingest"] = f"{queue}-ingest"
    data["task_queues"]["batch"] = f"{queue}-batch"
    path = tmp_path / "temporal.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_all_components_healthy(services: Services, tmp_path: Path) -> None:
    queue = f"health-{uuid.uuid4()}"
    settings = services.settings.model_copy(update={"policy_file": policy_with_chat_queue(tmp_path, queue)})
    res = await Resources.open(settings)
    try:
        workers = build_chat_worker(res), build_ingest_worker(res), build_batch_worker(res)
        async with workers[0], workers[1], workers[2], api_client(settings) as api:
            # A new worker's first poll reaches the server a moment after it starts.
            resp = await eventually(lambda: api.get("/healthz"), lambda r: r.status_code == 200)
    finally:
        await res.close()
    body = resp.json()
    assert resp.status_code == 200, body
    assert body["status"] == "ok"
    comps = body["components"]
    assert set(comps) == {
        "temporal",
        "postgres",
        "redis",
        "model",
        "models",
        "worker",
        "ingest_worker",
        "batch_worker",
    }
    assert all(c["status"] == "ok" for c in comps.values())
    assert comps["postgres"]["pgvector"].startswith("0.8")
    assert comps["redis"]["redis_version"]
    assert services.settings.model_name in comps["model"]["models"]
    assert comps["worker"]["task_queue"] == queue and comps["worker"]["pollers"]
    assert comps["ingest_worker"]["task_queue"] == f"{queue}-ingest" and comps["ingest_worker"]["pollers"]
    assert comps["batch_worker"]["task_queue"] == f"{queue}-batch" and comps["batch_worker"]["pollers"]
    served = comps["models"]["models"][services.settings.model_name]
    assert served["endpoints"] == {services.endpoints.model_url: {"answers": True, "breaker": "closed"}}
    assert comps["temporal"]["server_version"]


async def test_down_components_give_503_and_say_why(services: Services, tmp_path: Path) -> None:
    # Redis on a port nobody listens on, and a task queue no worker polls (none in the API either).
    settings = services.settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "policy_file": policy_with_chat_queue(tmp_path, f"nobody-{uuid.uuid4()}"),
            "api_worker": False,
        }
    )
    async with api_client(settings) as api:
        resp = await api.get("/healthz")
        ready = await api.get("/readyz")
        live = await api.get("/livez")
    body = resp.json()
    assert resp.status_code == 503
    assert body["status"] == "unavailable"
    comps = body["components"]
    assert comps["redis"]["status"] == "down" and "Connect" in comps["redis"]["error"]
    assert comps["worker"]["status"] == "down" and "no worker has polled" in comps["worker"]["error"]
    assert comps["ingest_worker"]["status"] == "down"
    assert {n for n, c in comps.items() if c["status"] == "ok"} == {"temporal", "postgres", "model"}
    assert ready.status_code == 503 and set(ready.json()["components"]) == {"temporal", "postgres", "redis"}
    assert live.status_code == 200


async def test_errors_have_the_openai_shape(services: Services) -> None:
    async with api_client(services.settings) as api:
        resp = await api.get("/no/such/route")
    assert resp.status_code == 404
    assert resp.json() == {"error": {"message": "Not Found", "type": "invalid_request_error", "code": "404"}}
