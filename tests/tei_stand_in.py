"""A stand-in for text-embeddings-inference (TEI cannot be installed offline): the real
all-MiniLM-L6-v2 behind TEI's HTTP route, so the remote embedder adapter talks HTTP to real vectors.

``ScrambledTei`` is a deliberately broken server (random vectors), named so: it exists to test how
the re-embed canary refuses a bad embedding version."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request

from activities.embedder import LocalEmbedder
from tests.conftest import free_port


class TeiStandIn:
    scrambled = False

    def __init__(self, embedder: LocalEmbedder) -> None:
        self.embedder = embedder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        app = FastAPI()

        @app.post("/")
        async def embed(request: Request) -> list[list[float]]:
            body: dict[str, Any] = await request.json()
            inputs = body["inputs"] if isinstance(body["inputs"], list) else [body["inputs"]]
            self.requests += 1
            if self.scrambled:
                rng = np.random.default_rng(self.requests)
                return [rng.standard_normal(384).tolist() for _ in inputs]
            return await self.embedder.embed(inputs)

        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TeiStandIn:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.should_exit = True
        if self._task:
            await self._task


class ScrambledTei(TeiStandIn):
    scrambled = True
