"""ScriptedModelServer: an OpenAI-compatible server that misbehaves on purpose.

Only for tests about turnflow's handling of the model server (failures, fallbacks, what the model
says); everything else talks to the real llama.cpp server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.in_loop_server import InLoopServer


@dataclass
class Script:
    reply: list[str] = field(default_factory=lambda: ["Hello", " there", "."])
    status: int = 200  # anything else: every request fails with this status
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    # Fails with 500 the requests whose body this says yes to (a model that fails some questions).
    fails: Callable[[dict[str, Any]], bool] | None = None
    # Tool calls instead of text: (name, arguments in the pieces they stream in), all in parallel.
    tool_calls: list[tuple[str, list[str]]] = field(default_factory=list)


class ScriptedModelServer(InLoopServer):
    def __init__(self, name: str = "scripted") -> None:
        self.name = name
        self.script = Script()
        self.requests = 0
        self.bodies: list[dict[str, object]] = []
        self.headers: list[dict[str, str]] = []
        super().__init__(
            Starlette(
                routes=[
                    Route("/v1/chat/completions", self._chat, methods=["POST"]),
                    Route("/v1/models", self._models),
                ]
            )
        )

    async def _models(self, _: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": self.name, "object": "model"}]})

    async def _chat(self, request: Request) -> Response:
        self.requests += 1
        body = await request.json()
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        script = self.script
        if script.status != 200 or (script.fails is not None and script.fails(body)):
            status = script.status if script.status != 200 else 500
            return JSONResponse({"error": {"message": "failing on purpose"}}, status_code=status)

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            body = {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(body)}\n\n".encode()

        async def tool_chunks() -> AsyncIterator[bytes]:
            # OpenAI's delta form: a call's first piece names it, the next ones add to its arguments.
            for index, (name, _) in enumerate(script.tool_calls):
                first = {"index": index, "id": f"call_{index}", "type": "function"}
                yield chunk({"tool_calls": [{**first, "function": {"name": name, "arguments": ""}}]}, None)
            for index, (_, pieces) in enumerate(script.tool_calls):
                for piece in pieces:
                    await asyncio.sleep(script.token_delay_s)
                    yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None)
            yield chunk({}, "tool_calls")
            yield b"data: [DONE]\n\n"

        if script.tool_calls:
            return StreamingResponse(tool_chunks(), media_type="text/event-stream")

        async def chunks() -> AsyncIterator[bytes]:
            await asyncio.sleep(script.first_token_delay_s)
            for i, token in enumerate(script.reply):
                await asyncio.sleep(script.token_delay_s)
                finish = "stop" if i == len(script.reply) - 1 else None
                body = {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": self.name,
                    "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": finish}],
                }
                yield f"data: {json.dumps(body)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")
