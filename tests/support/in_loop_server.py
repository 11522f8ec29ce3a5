"""An ASGI app served by uvicorn inside the test's event loop, on a free port, as an async context."""

from __future__ import annotations

import asyncio
from typing import Any, Self

import uvicorn

from tests.support.services import free_port


class InLoopServer:
    def __init__(self, app: Any, *, lifespan: str = "auto") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan=lifespan)
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # it failed to start: say why
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.should_exit = True
        if self._task:
            await self._task
