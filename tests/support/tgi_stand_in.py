"""TgiStandIn: text-generation-inference's native routes as TGI answers them (`/chat_tokenize`, the
streaming generate route with per-token details, `/health`). Only for testing the TGI adapter's handling
of that wire format; no TGI server can run on this machine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.in_loop_server import InLoopServer

TEMPLATE = "<|im_start|>{role}\n{content}<|im_end|>\n"


class TgiStandIn(InLoopServer):
    def __init__(self, tokens: list[tuple[str, bool]]) -> None:
        """``tokens``: (text, special) pairs to stream, the last one ending the generation."""
        self.tokens = tokens
        self.generate_bodies: list[dict[str, object]] = []
        self.paths: list[str] = []
        super().__init__(
            Starlette(
                routes=[
                    Route("/chat_tokenize", self._chat_tokenize, methods=["POST"]),
                    Route("/", self._generate, methods=["POST"]),
                    Route("/generate_stream", self._generate, methods=["POST"]),
                    Route("/health", self._health),
                ]
            )
        )

    async def _health(self, _: Request) -> Response:
        return Response(status_code=200)

    async def _chat_tokenize(self, request: Request) -> Response:
        body = await request.json()
        text = "".join(TEMPLATE.format(**m) for m in body["messages"]) + "<|im_start|>assistant\n"
        words = text.split()
        return JSONResponse(
            {
                "tokenize_response": [
                    {"id": i, "text": w, "start": 0, "stop": 0} for i, w in enumerate(words)
                ],
                "templated_text": text,
            }
        )

    async def _generate(self, request: Request) -> Response:
        self.paths.append(request.url.path)
        self.generate_bodies.append(await request.json())

        async def events() -> AsyncIterator[bytes]:
            for i, (text, special) in enumerate(self.tokens):
                last = i == len(self.tokens) - 1
                event = {
                    "index": i + 1,
                    "token": {"id": 100 + i, "text": text, "logprob": -0.1, "special": special},
                    "generated_text": "".join(t for t, s in self.tokens if not s) if last else None,
                    "details": {
                        "finish_reason": "eos_token",
                        "generated_tokens": len(self.tokens),
                        "seed": None,
                    }
                    if last
                    else None,
                }
                yield f"data:{json.dumps(event)}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")
