"""A whole turnflow stack for one benchmark: `turnflow up` in a scratch data dir on free ports, with the
embedded llama.cpp model, a FAKE fast model server (bench/fast_fake_model.py), or model servers the
benchmark runs itself (``model=None``: point TURNFLOW_TGI_URL / TURNFLOW_POLICY_FILE at them)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal, Self

import httpx

from infra.config.endpoints import default_gguf

TURNFLOW = str(Path(sys.executable).parent / "turnflow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_http(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s} s")


async def wait_for_file(path: Path, timeout_s: float = 30) -> str:
    """`turnflow up` writes the demo key once the stack is up."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(path.exists):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        await asyncio.sleep(0.2)
    return (await asyncio.to_thread(path.read_text)).strip()


class BenchStack:
    """``with BenchStack("load", model="fake") as stack: key = asyncio.run(stack.ready())``."""

    def __init__(
        self,
        name: str,
        *,
        model: Literal["real", "fake"] | None = "real",
        fake_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix=f"turnflow-{name}-"))
        self.data_dir = self.scratch / "data"
        self.ports = {
            k: free_port() for k in ("api", "temporal", "ui", "postgres", "redis", "metrics", "model")
        }
        self.api = f"http://127.0.0.1:{self.ports['api']}"
        self.model_url = f"http://127.0.0.1:{self.ports['model']}"
        self.model, self.fake_args = model, fake_args
        self.env = {
            **os.environ,
            "TURNFLOW_DATA_DIR": str(self.data_dir),
            "TURNFLOW_API_PORT": str(self.ports["api"]),
            "TURNFLOW_TEMPORAL_PORT": str(self.ports["temporal"]),
            "TURNFLOW_TEMPORAL_UI_PORT": str(self.ports["ui"]),
            "TURNFLOW_POSTGRES_PORT": str(self.ports["postgres"]),
            "TURNFLOW_REDIS_PORT": str(self.ports["redis"]),
            "TURNFLOW_WORKER_METRICS_PORT": str(self.ports["metrics"]),
            "TURNFLOW_MODEL_PORT": str(self.ports["model"]),
            # One tenant plays every user: its rate limits are not what a benchmark measures.
            "TURNFLOW_RATE_LIMIT_REQUESTS_PER_MIN": "100000000",
            "TURNFLOW_RATE_LIMIT_TOKENS_PER_MIN": "100000000000",
            **(env or {}),
        }
        if model == "fake":
            # The stack talks to it as to any server; prompts are counted with the embedded GGUF.
            self.env |= {"TURNFLOW_TGI_URL": self.model_url, "TURNFLOW_MODEL_PATH": str(default_gguf())}
        self._fake: subprocess.Popen[bytes] | None = None
        self._up: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        # A benchmark stopped with SIGTERM still takes its stack down (through __exit__).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        if self.model == "fake":
            self._fake = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.fast_fake_model",
                    "--port",
                    str(self.ports["model"]),
                    *self.fake_args,
                ],
                stdout=(self.scratch / "fake-model.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        self._up = subprocess.Popen(
            [TURNFLOW, "up"],
            env=self.env,
            stdout=(self.scratch / "up.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        print(f"starting a stack ({self.model or 'own'} model; logs in {self.scratch})", file=sys.stderr)
        return self

    @property
    def model_pid(self) -> int | None:
        """The FAKE model server's process (the embedded one is among `turnflow up`'s own)."""
        return self._fake.pid if self._fake else None

    async def ready(self, timeout_s: float = 300) -> str:
        """Wait until the API answers; the demo API key."""
        await wait_http(f"{self.api}/healthz", timeout_s=timeout_s)
        return await wait_for_file(self.data_dir / "demo-api-key")

    def __exit__(self, *exc: object) -> None:
        subprocess.run([TURNFLOW, "down"], env=self.env, capture_output=True, timeout=120, check=False)
        if self._up is not None:
            self._up.wait(timeout=60)
        if self._fake is not None:
            self._fake.terminate()
            self._fake.wait(timeout=10)
        self._drop_data()

    def _drop_data(self) -> None:
        """The stack's databases go (hundreds of MB a run, and `make bench` runs several); its logs stay
        in the scratch dir for a look after a run that went wrong."""
        if (self.data_dir / "logs").is_dir():
            shutil.move(self.data_dir / "logs", self.scratch / "logs")
        shutil.rmtree(self.data_dir, ignore_errors=True)
