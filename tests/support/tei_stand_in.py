"""A stand-in for text-embeddings-inference (TEI cannot be installed offline): the real
all-MiniLM-L6-v2 behind TEI's HTTP route, so the remote embedder adapter talks HTTP to real vectors.

``ScrambledTei`` is a deliberately broken server (random vectors), named so: it exists to test how
the re-embed canary refuses a bad embedding version."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI, Request

from activities.adapters.embedder import LocalEmbedder
from tests.support.in_loop_server import InLoopServer


class TeiStandIn(InLoopServer):
    scrambled = False

    def __init__(self, embedder: LocalEmbedder) -> None:
        self.embedder = embedder
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

        super().__init__(app)


class ScrambledTei(TeiStandIn):
    scrambled = True
