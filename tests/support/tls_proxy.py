"""A TLS terminator in front of a plain server the tests run: the Temporal dev server (CLI 1.9.1) takes
no TLS options, so TLS to Temporal is tested through this, as a cluster's ingress would terminate it.
It demands a client certificate signed by ``client_ca`` (mTLS) when one is given."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Self

from tests.support.services import free_port
from tests.support.tls import Certificates


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


class TlsProxy:
    def __init__(self, upstream: str, certs: Certificates, *, client_ca: Path | None = None) -> None:
        self.upstream_host, port = upstream.rsplit(":", 1)
        self.upstream_port = int(port)
        self.port = free_port()
        self.address = f"localhost:{self.port}"
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certs.cert, certs.key)
        self.context.set_alpn_protocols(["h2"])  # gRPC
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(cafile=str(client_ca))
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.context)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
