"""ScriptedModelServer: an OpenAI-compatible server that misbehaves on purpose.

Only for tests about turnflow's handling of the model server (failures, fallbacks, what the model
says); everything else talks to the real llama.cpp server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port


@dataclass
class Script:
    reply: list[str] = field(default_factory=lambda: ["Hello", " there", "."])
    status: int = 200  # anything else: every request fails with this status
    token_delay_s: float = 0.0


class ScriptedModelServer:
    def __init__(self, name: str = "scripted") -> None:
        self.name = name
        self.script = Script()
        self.requests = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models),
            ]
        )
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ScriptedModelServer:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.should_exit = True
        if self._task:
            await self._task

    async def _models(self, _: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": self.name, "object": "model"}]})

    async def _chat(self, request: Request) -> Response:
        self.requests += 1
        await request.json()
        script = self.script
        if script.status != 200:
            return JSONResponse({"error": {"message": "failing on purpose"}}, status_code=script.status)

        async def chunks() -> AsyncIterator[bytes]:
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
