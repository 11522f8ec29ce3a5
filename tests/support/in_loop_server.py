"""An ASGI app served by uvicorn inside the test's event loop, on a free port, as an async context."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any, Self

import uvicorn

from tests.support.services import free_port


class InLoopServer:
    """``tls``: (certificate, key) files; then it serves https, named by the certificate's host."""

    def __init__(
        self,
        app: Any,
        *,
        lifespan: str = "auto",
        tls: tuple[Path, Path] | None = None,
        host: str = "localhost",
        send_buffer: int | None = None,
    ) -> None:
        """``send_buffer``: each connection's kernel send buffer in bytes (fixed, not autotuned), for
        tests of what the server holds for a client that stops reading."""
        self.port = free_port()
        self.url = f"https://{host}:{self.port}" if tls else f"http://127.0.0.1:{self.port}"
        certfile, keyfile = tls if tls else (None, None)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan=lifespan,
            ssl_certfile=str(certfile) if certfile else None,
            ssl_keyfile=str(keyfile) if keyfile else None,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        self._send_buffer = send_buffer

    async def __aenter__(self) -> Self:
        sockets = None
        if self._send_buffer is not None:
            # Accepted connections inherit the listening socket's buffer size.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
            sock.bind(("127.0.0.1", self.port))
            sockets = [sock]
        self._task = asyncio.create_task(self._server.serve(sockets=sockets))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # it failed to start: say why
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.should_exit = True
        if self._task:
            await self._task
