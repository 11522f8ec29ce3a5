"""VllmStandIn: vLLM's OpenAI-compatible server as it answers (`/tokenize` with `prompt`, streamed chat
completions with a final usage chunk, `/health`), refusing a `model` it does not serve as vLLM does.
Only for testing turnflow's handling of that wire format; vLLM needs a GPU and cannot run here."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.in_loop_server import InLoopServer


class VllmStandIn(InLoopServer):
    def __init__(self, served_name: str, reply: list[str]) -> None:
        self.served_name = served_name
        self.reply = reply
        self.chat_bodies: list[dict[str, object]] = []
        self.tokenize_bodies: list[dict[str, object]] = []
        super().__init__(
            Starlette(
                routes=[
                    Route("/tokenize", self._tokenize, methods=["POST"]),
                    Route("/v1/chat/completions", self._chat, methods=["POST"]),
                    Route("/health", self._health),
                ]
            )
        )

    async def _health(self, _: Request) -> Response:
        return Response(status_code=200)

    async def _tokenize(self, request: Request) -> Response:
        body = await request.json()
        self.tokenize_bodies.append(body)
        if "prompt" not in body:  # vLLM's TokenizeCompletionRequest: `prompt` is required
            return JSONResponse({"object": "error", "message": "prompt: Field required"}, status_code=400)
        tokens = list(range(len(str(body["prompt"]).split())))
        return JSONResponse({"count": len(tokens), "max_model_len": 8192, "tokens": tokens})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.chat_bodies.append(body)
        if body.get("model") != self.served_name:
            message = f"The model `{body.get('model')}` does not exist."
            return JSONResponse({"object": "error", "message": message, "code": 404}, status_code=404)

        def chunk(choices: list[object], usage: object = None) -> bytes:
            event = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.served_name,
                "choices": choices,
                "usage": usage,
            }
            return f"data: {json.dumps(event)}\n\n".encode()

        async def events() -> AsyncIterator[bytes]:
            for i, text in enumerate(self.reply):
                finish = "stop" if i == len(self.reply) - 1 else None
                yield chunk([{"index": 0, "delta": {"content": text}, "finish_reason": finish}])
            usage = {
                "prompt_tokens": 7,
                "completion_tokens": len(self.reply),
                "total_tokens": 7 + len(self.reply),
            }
            yield chunk([], usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
