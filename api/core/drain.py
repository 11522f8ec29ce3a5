"""An API process leaving gracefully (SIGTERM: a rolling deploy, a scale-down).

At once, readiness answers 503 and new turns are refused with 503 + Retry-After (a load balancer sends
them to another process); every live SSE stream gets `retry:` and a clean close, so its client
reconnects, with Last-Event-ID, to another process and misses nothing. The process exits once the
streams have gone, or after temporal.yaml's `shutdown.api_grace`. The turns themselves never depended
on this process: they run in workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

log = logging.getLogger("turnflow.api")

# What a client told to reconnect waits first (SSE `retry:`, milliseconds).
RECONNECT_MS = 500


class Drain:
    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.started = asyncio.Event()
        self.streams = 0
        self._none_left = asyncio.Event()
        self._none_left.set()

    @property
    def draining(self) -> bool:
        return self.started.is_set()

    def install(self) -> None:
        """Take SIGTERM before the server does (uvicorn's handler, which stops the server, runs once
        the streams have gone). Without a handler to hand over to, SIGTERM only drains."""
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(sig: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.begin, lambda: _hand_over(previous, sig, frame))

        with contextlib.suppress(ValueError):  # not the main thread (an in-loop test server)
            signal.signal(signal.SIGTERM, on_term)

    def begin(self, then: Callable[[], None] | None = None) -> None:
        if self.draining:
            return
        self.started.set()
        log.info("draining: %d stream(s) asked to reconnect elsewhere", self.streams)
        asyncio.get_running_loop().create_task(self._leave(then))

    async def _leave(self, then: Callable[[], None] | None) -> None:
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_left.wait(), self.grace_s)
        log.info("drained in %.1f s (%d stream(s) left)", time.monotonic() - started, self.streams)
        if then is not None:
            then()

    @contextlib.asynccontextmanager
    async def stream(self) -> AsyncIterator[None]:
        self.streams += 1
        self._none_left.clear()
        try:
            yield
        finally:
            self.streams -= 1
            if self.streams == 0:
                self._none_left.set()

    async def counted(self, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """A stream that cannot resume elsewhere (an OpenAI-style client): it runs to its end, and the
        process waits for it (up to the grace)."""
        async with self.stream():
            async for event in events:
                yield event

    async def until_drained(self, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """The SSE events of a stream until it ends, or until the process drains: then `retry:` and a
        comment, and the stream closes (its client resumes from the last id it saw)."""
        async with self.stream():
            drained = asyncio.ensure_future(self.started.wait())
            iterator = aiter(events)
            following: asyncio.Future[dict[str, Any]] | None = None
            try:
                while True:
                    following = asyncio.ensure_future(anext(iterator))
                    await asyncio.wait({following, drained}, return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():
                        following.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await following
                        yield {"retry": RECONNECT_MS, "comment": "this server is leaving: reconnect"}
                        return
                    try:
                        yield following.result()
                    except StopAsyncIteration:
                        return
            finally:
                drained.cancel()
                if following is not None:  # the client left mid-wait, or as it ended
                    following.cancel()
                    # Its outcome is ours to take, or asyncio logs it as never retrieved.
                    following.add_done_callback(lambda f: f.cancelled() or f.exception())
                with contextlib.suppress(Exception):
                    await events.aclose()  # type: ignore[attr-defined]


def _hand_over(previous: Any, sig: int, frame: FrameType | None) -> None:
    if callable(previous):
        previous(sig, frame)
